"""Tests of the user-facing CLIs: ``python -m semipkd.predict`` and ``python -m semipkd.export``."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from semipkd import predict as pr
from semipkd.inference import ImageReadError, TorchRunner
from student_files import save_spread_student, write_image

OUT = (32, 32)  # model output size; also its input size (the checkpoint records no input size)


pytestmark = pytest.mark.usefixtures("cache_home")


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "student.pt"
    return save_spread_student(path, OUT), path


@pytest.fixture
def image_folder(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "photos"
    files = {
        "a.jpg": (rng.random((40, 60, 3)) * 255).astype(np.uint8),
        "b.png": (rng.random((33, 21, 3)) * 255).astype(np.uint8),
        "sub/c.png": (rng.random((50, 50)) * 255).astype(np.uint8),  # grayscale
        "sub/d.jpeg": (rng.random((17, 80, 3)) * 255).astype(np.uint8),
    }
    for rel, img in files.items():
        write_image(root / rel, img)
    (root / "notes.txt").write_text("not an image, and not picked up")
    return root, {rel: img.shape[:2] for rel, img in files.items()}


def _read_png(path):
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert img is not None, path
    return img


def test_predict_cli_writes_one_8bit_png_per_image_at_original_size(student, image_folder, tmp_path):
    _, ckpt = student
    root, sizes = image_folder
    out = tmp_path / "maps"
    rc = pr.main(["--model", str(ckpt), "--input", str(root), "--output", str(out), "--batch-size", "3", "--device", "cpu",
                  "--backend", "torch"])
    assert rc == 0
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert written == ["a.png", "b.png", "sub/c.png", "sub/d.png"]
    for rel, size in sizes.items():
        m = _read_png(out / Path(rel).with_suffix(".png"))
        assert m.dtype == np.uint8 and m.ndim == 2  # 8-bit single channel
        assert m.shape == size
        assert m.max() == 255  # max-normalised
    assert not [p for p in out.rglob(".*")]  # no temp files left behind


def test_predicted_png_is_the_model_map_resized_to_the_original(student, tmp_path):
    """Known answer: compute the map with the model directly and compare with the PNG."""
    from semipkd.data import resize_image
    from semipkd.metrics import resize_to

    model, ckpt = student
    rng = np.random.default_rng(3)
    img = (rng.random((45, 70, 3)) * 255).astype(np.uint8)
    write_image(tmp_path / "x.png", img[:, :, ::-1])  # cv2 writes BGR
    argv = ["--model", str(ckpt), "--input", str(tmp_path / "x.png"), "--output", str(tmp_path / "o"), "--device", "cpu",
            "--backend", "torch"]
    assert pr.main(argv) == 0
    x = torch.from_numpy(resize_image(img, OUT)).permute(2, 0, 1)[None].float() / 255
    with torch.inference_mode():
        ref = resize_to(model(x).double(), (45, 70))[0].clamp(min=0)
    ref = np.round((ref / ref.max() * 255).numpy())
    got = _read_png(tmp_path / "o" / "x.png").astype(np.float64)
    assert np.abs(got - ref).max() <= 1.0  # float32 inference vs float64 reference: at most one grey level
    assert np.mean(got == ref) > 0.95


def test_predict_skips_a_bad_image_by_name(student, image_folder, tmp_path, caplog):
    _, ckpt = student
    root, sizes = image_folder
    (root / "broken.jpg").write_bytes(b"this is not a jpeg")
    (root / "empty.png").write_bytes(b"")
    out = tmp_path / "maps"
    with caplog.at_level(logging.WARNING):
        rc = pr.main(["--model", str(ckpt), "--input", str(root), "--output", str(out), "--on-error", "skip", "--device", "cpu",
                      "--backend", "torch"])
    assert rc == 0
    assert sorted(p.name for p in out.rglob("*.png")) == ["a.png", "b.png", "c.png", "d.png"]
    assert "broken.jpg" in caplog.text and "empty.png" in caplog.text


def test_predict_fails_on_a_bad_image_by_default(student, image_folder, tmp_path, caplog):
    _, ckpt = student
    root, _ = image_folder
    (root / "aa_broken.jpg").write_bytes(b"\xff\xd8 truncated")
    out = tmp_path / "maps"
    rc = pr.main(["--model", str(ckpt), "--input", str(root), "--output", str(out), "--device", "cpu", "--backend", "torch"])
    assert rc == 2
    assert "aa_broken.jpg" in caplog.text and "not a decodable image" in caplog.text
    assert not (out / "aa_broken.png").exists()


def test_predict_paths_summary_and_raise(student, image_folder, tmp_path):
    model, _ = student
    root, _ = image_folder
    (root / "bad.png").write_bytes(b"nope")
    paths = pr.list_images(root)
    outs = pr.output_paths(paths, root, tmp_path / "o")
    runner = TorchRunner(model, "cpu")
    s = pr.predict_paths(runner, paths, outs, input_size=OUT, batch_size=2, on_error="skip", progress=False)
    assert [p.name for p, _ in s.failed] == ["bad.png"] and len(s.written) == 4
    with pytest.raises(ImageReadError, match="bad.png"):
        pr.predict_paths(runner, paths, outs, input_size=OUT, batch_size=2, on_error="raise", progress=False)
    with pytest.raises(ValueError, match="on_error"):
        pr.predict_paths(runner, paths, outs, input_size=OUT, on_error="ignore")


def test_predict_input_errors(student, tmp_path, caplog):
    _, ckpt = student
    assert pr.main(["--model", str(ckpt), "--input", str(tmp_path / "nope"), "--output", str(tmp_path / "o")]) == 2
    assert "no such file or folder" in caplog.text
    (tmp_path / "empty").mkdir()
    assert pr.main(["--model", str(ckpt), "--input", str(tmp_path / "empty"), "--output", str(tmp_path / "o")]) == 2
    assert "no images" in caplog.text
    assert pr.main(["--model", str(tmp_path / "missing.pt"), "--input", str(tmp_path), "--output", str(tmp_path / "o")]) == 2
    with pytest.raises(SystemExit):
        pr.main(["--model", str(ckpt), "--input", str(tmp_path), "--output", str(tmp_path / "o"), "--on-error", "ignore"])
    # two inputs that would write the same PNG
    write_image(tmp_path / "dup" / "x.jpg", np.zeros((8, 8, 3), np.uint8))
    write_image(tmp_path / "dup" / "x.png", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="both be written"):
        pr.output_paths(pr.list_images(tmp_path / "dup"), tmp_path / "dup", tmp_path / "o")


def test_map_to_uint8_known_values():
    m = torch.tensor([[0.0, 0.25], [0.5, 0.5]])
    assert pr.map_to_uint8(m, (2, 2)).tolist() == [[0, 128], [255, 255]]
    assert pr.map_to_uint8(torch.zeros(3, 3), (5, 4)).tolist() == np.zeros((5, 4), np.uint8).tolist()
    up = pr.map_to_uint8(torch.rand(4, 6), (40, 60))
    assert up.shape == (40, 60) and up.dtype == np.uint8 and up.max() == 255



# --------------------------------------------------------------------------------------------
# onnxruntime backend and auto


def _predict(ckpt, src, out, *extra):
    return pr.main(["--model", str(ckpt), "--input", str(src), "--output", str(out), "--device", "cpu", *extra])


def test_onnxruntime_backend_writes_the_torch_maps(student, image_folder, tmp_path, cache_home):
    _, ckpt = student
    root, sizes = image_folder
    # batch 3 over 4 images: the last batch (1 image) runs through the dynamic batch axis
    assert _predict(ckpt, root, tmp_path / "t", "--backend", "torch", "--batch-size", "3") == 0
    assert _predict(ckpt, root, tmp_path / "o", "--backend", "onnxruntime", "--batch-size", "3") == 0
    assert len(list((cache_home / "onnx").glob("*.onnx"))) == 1  # exported once, into the cache
    for rel, size in sizes.items():
        png = Path(rel).with_suffix(".png")
        a, b = _read_png(tmp_path / "t" / png).astype(int), _read_png(tmp_path / "o" / png).astype(int)
        assert a.shape == b.shape == size
        assert np.abs(a - b).max() <= 1  # maps equal to 1e-4; uint8 rounding may flip one level
        assert a.std() > 0


def test_onnxruntime_backend_skips_or_stops_on_a_bad_image(student, image_folder, tmp_path, caplog):
    _, ckpt = student
    root, _ = image_folder
    (root / "broken.jpg").write_bytes(b"this is not a jpeg")
    onnx = tmp_path / "given.onnx"
    args = ("--backend", "onnxruntime", "--onnx", str(onnx), "--batch-size", "2")
    with caplog.at_level(logging.WARNING):
        assert _predict(ckpt, root, tmp_path / "s", "--on-error", "skip", *args) == 0
    assert onnx.is_file()  # --onnx PATH: exported there when missing
    assert sorted(p.name for p in (tmp_path / "s").rglob("*.png")) == ["a.png", "b.png", "c.png", "d.png"]
    assert "broken.jpg" in caplog.text
    caplog.clear()
    assert _predict(ckpt, root, tmp_path / "r", *args) == 2
    assert "broken.jpg: not a decodable image" in caplog.text
    caplog.clear()  # the graph was exported for 32x32 inputs: another input size is refused by name
    assert _predict(ckpt, root, tmp_path / "z", *args, "--input-size", "64", "64") == 2
    assert "given.onnx: graph input is 32x32" in caplog.text and not (tmp_path / "z").exists()


def test_auto_uses_the_stored_measurement(student, image_folder, tmp_path, cache_home, caplog, capsys):
    import json

    _, ckpt = student
    root, _ = image_folder
    assert pr.main(["--model", str(ckpt), "--calibrate", "--device", "cpu", "--threads", "1"]) == 0
    assert "-> auto uses" in capsys.readouterr().out
    stored = json.loads((cache_home / "backends.json").read_text())
    ((key, entry),) = stored.items()
    assert key.endswith("|32x32|batch1|cpu|threads1") and key.startswith(pr.sha256_file(ckpt))
    assert set(entry["ms"]) == {"torch", "onnxruntime"} and entry["choice"] == min(entry["ms"], key=entry["ms"].get)
    with caplog.at_level(logging.INFO):
        assert _predict(ckpt, root, tmp_path / "o", "--threads", "1") == 0
    assert f"backend {entry['choice']} (measured" in caplog.text  # read back, not measured again
    assert len(list((tmp_path / "o").rglob("*.png"))) == 4
    with pytest.raises(SystemExit):  # predicting needs both --input and --output
        pr.main(["--model", str(ckpt), "--input", str(root)])

# --------------------------------------------------------------------------------------------
# export


def test_export_cli_matches_pytorch_in_onnxruntime(student, tmp_path):
    import onnxruntime as ort

    from semipkd import export

    model, ckpt = student
    out = tmp_path / "student.onnx"
    assert export.main(["--model", str(ckpt), "--output", str(out), "--input-size", "32", "32"]) == 0
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["image"] and [o.name for o in sess.get_outputs()] == ["saliency"]
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))  # batch 3: dynamic axis
    (got,) = sess.run(None, {"image": x.numpy()})
    with torch.inference_mode():
        ref = model(x).numpy()
    assert got.shape == ref.shape == (3, *OUT)
    assert np.abs(got - ref).max() <= 1e-4


def test_export_refuses_a_graph_outside_tolerance(tmp_path, caplog):
    from semipkd import export

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 1, 3, padding=1)

        def forward(self, x):
            return torch.sigmoid(self.conv(x))[:, 0]

    out = tmp_path / "tiny.onnx"
    assert export.export_onnx(Tiny(), out, (8, 12)) <= 1e-6
    before = out.read_bytes()
    # a negative tolerance cannot be met: the check must fail and leave the old file as it was
    with pytest.raises(RuntimeError, match="differs from PyTorch"):
        export.export_onnx(Tiny(), out, (8, 12), tolerance=-1.0)
    assert out.read_bytes() == before and not list(tmp_path.glob(".*"))
    assert export.main(["--model", str(tmp_path / "missing.pt"), "--output", str(tmp_path / "x.onnx")]) == 2
    assert "missing.pt" in caplog.text and not (tmp_path / "x.onnx").exists()


def test_export_keeps_only_warnings_about_the_users_model(student, tmp_path):
    """Our own shape checks' TracerWarnings and the exporter's constant-folding note are known
    and harmless (the graph is checked against PyTorch): a user's console does not see them.
    A warning raised by a model's own layer still gets through."""
    import warnings

    from semipkd import export

    model, _ = student

    class Noisy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 1, 3, padding=1)

        def forward(self, x):
            warnings.warn("about this model", UserWarning, stacklevel=1)
            return torch.sigmoid(self.conv(x))[:, 0]

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        export.export_onnx(model, tmp_path / "s.onnx", (32, 32))
        ours = [str(w.message)[:80] for w in seen]
        export.export_onnx(Noisy(), tmp_path / "n.onnx", (8, 8))
    assert ours == [], ours
    assert "about this model" in [str(w.message) for w in seen]
