"""Tests of the opt-in int8 path: semipkd.precision, ``predict/export --precision int8``."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from semipkd import export as ex
from semipkd import precision as pc
from semipkd import predict as pr
from semipkd.export import export_onnx
from semipkd.inference import OnnxRunner, images_to_tensor, read_image
from semipkd.models import build_model
from student_files import save_spread_student, write_image

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
POOL = SHARED / "scene-unlabeled" / "images"
OSIE = SHARED / "osie" / "stimuli"
needs_real = pytest.mark.skipif(not (POOL.is_dir() and OSIE.is_dir()), reason=f"real images not at {SHARED}")

SIZE = (64, 64)


pytestmark = pytest.mark.usefixtures("cache_home")


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "student.pt"
    return save_spread_student(path, SIZE), path


@pytest.fixture
def calib(tmp_path):
    """Calibration folder: 6 real photos from the unlabeled pool when present, else smooth synthetic ones."""
    root = tmp_path / "calib"
    root.mkdir()
    if POOL.is_dir():
        for f in sorted(POOL.glob("*.jpg"))[:6]:
            shutil.copy(f, root / f.name)
    else:
        rng = np.random.default_rng(0)
        for i in range(6):
            img = cv2.GaussianBlur((rng.random((48, 64, 3)) * 255).astype(np.uint8), (9, 9), 3)
            write_image(root / f"{i}.png", img)
    return root


def test_calibration_sample_is_seeded_sorted_and_capped(tmp_path):
    root = tmp_path / "imgs"
    for i in range(10):
        write_image(root / f"{i:02d}.png", np.full((8, 8, 3), i, np.uint8))
    a = pc.calibration_files(root, 4, seed=0)
    assert a == pc.calibration_files(root, 4, seed=0) and a == sorted(a) and len(a) == 4
    assert a != pc.calibration_files(root, 4, seed=1)
    assert len(pc.calibration_files(root, 50)) == 10  # fewer than asked: all


def test_missing_or_bad_calibration_folder_is_a_clear_error(tmp_path):
    with pytest.raises(pc.CalibrationError, match="needs --calibration DIR"):
        pc.calibration_files(None)
    with pytest.raises(pc.CalibrationError, match="no such folder"):
        pc.calibration_files(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(pc.CalibrationError, match="no images"):
        pc.calibration_files(tmp_path / "empty")
    bad = tmp_path / "bad"
    write_image(bad / "ok.png", np.zeros((8, 8, 3), np.uint8))
    (bad / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(pc.CalibrationError, match="broken.jpg"):
        pc.calibration_inputs(pc.calibration_files(bad), SIZE)


def test_predict_cli_refuses_int8_without_a_usable_calibration_folder(student, tmp_path, caplog):
    _, ckpt = student
    img = tmp_path / "in" / "a.png"
    write_image(img, np.zeros((20, 20, 3), np.uint8))
    base = ["--model", str(ckpt), "--input", str(img), "--output", str(tmp_path / "out"), "--device", "cpu",
            "--precision", "int8"]
    with caplog.at_level(logging.ERROR):
        assert pr.main(base) == 2
    assert "needs --calibration DIR" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        assert pr.main(base + ["--calibration", str(tmp_path / "nope")]) == 2
    assert "no such folder" in caplog.text
    assert not (tmp_path / "out").exists()
    with pytest.raises(SystemExit):  # int8 is an onnxruntime graph
        pr.main(base + ["--calibration", str(tmp_path / "in"), "--backend", "torch"])
    with pytest.raises(SystemExit):  # --calibration without int8 is a mistake, not ignored
        pr.main(base[:-2] + ["--calibration", str(tmp_path / "in")])


def test_cached_int8_graph_is_reused_and_rebuilt_when_checkpoint_or_setting_changes(student, calib, tmp_path):
    model, _ = student
    fp32 = tmp_path / "fp32.onnx"
    export_onnx(model, fp32, SIZE)
    exports = []

    def graph():
        exports.append(1)
        return fp32

    cache = tmp_path / "cache"
    kw = dict(checkpoint_sha="a" * 64, cache_dir=cache, calibration=calib, count=4)
    first = pc.int8_graph(graph, SIZE, **kw)
    assert first.is_file() and len(exports) == 1
    mtime = first.stat().st_mtime_ns
    assert pc.int8_graph(graph, SIZE, **kw) == first and len(exports) == 1  # reused, not rebuilt
    assert first.stat().st_mtime_ns == mtime
    changed = {
        "checkpoint": dict(kw, checkpoint_sha="b" * 64),
        "count": dict(kw, count=5),
        "seed": dict(kw, seed=1),
    }
    paths = {first}
    for what, k in changed.items():
        p = pc.int8_graph(graph, SIZE, **k)
        assert p not in paths, what
        paths.add(p)
    fp32_small = tmp_path / "fp32_32.onnx"
    export_onnx(model, fp32_small, (32, 32))
    small = pc.int8_graph(lambda: fp32_small, (32, 32), **kw)  # input size
    assert small not in paths
    paths.add(small)
    # the calibration images' content: same names, one image changed
    victim = pc.calibration_files(calib, 4)[0]
    img = read_image(victim)
    write_image(victim.with_suffix(".png"), 255 - img)
    victim.unlink()
    assert pc.int8_graph(graph, SIZE, **kw) not in paths


def _cc(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


@needs_real
def test_int8_maps_close_to_fp32_on_real_images(student, calib, tmp_path):
    """Held-out real OSIE images: per image, max and mean |int8 - fp32| within the measured bounds.

    The bounds come from reports/benchmarks/precision_accuracy.json (two trained students, OSIE
    and EyeCrowd val): see INT8_TOLERANCE and INT8_MEAN_TOLERANCE.
    """
    model, _ = student
    fp32 = tmp_path / "fp32.onnx"
    export_onnx(model, fp32, SIZE)
    int8 = pc.quantize_int8(fp32, tmp_path / "int8.onnx", pc.calibration_inputs(pc.calibration_files(calib), SIZE))
    images = [read_image(f) for f in sorted(OSIE.glob("*.jpg"))[:8]]
    x = images_to_tensor(images, SIZE)
    a = OnnxRunner(fp32, threads=1)(x).numpy()
    b = OnnxRunner(int8, threads=1)(x).numpy()
    assert a.std() > 0.01  # the maps are not flat, so closeness means something
    for i in range(len(images)):
        assert np.abs(a[i] - b[i]).max() <= pc.INT8_TOLERANCE, i
        assert np.abs(a[i] - b[i]).mean() <= pc.INT8_MEAN_TOLERANCE, i
        assert _cc(a[i], b[i]) >= 0.99, i  # and the map's shape is kept, not only its values


def test_int8_keeps_the_first_conv_and_the_head_in_fp32(student, calib, tmp_path):
    import onnx

    model, _ = student
    fp32 = tmp_path / "fp32.onnx"
    export_onnx(model, fp32, SIZE)
    keep = pc.fp32_nodes(onnx.load(str(fp32)))
    convs = [n.name for n in onnx.load(str(fp32)).graph.node if n.op_type == "Conv"]
    assert keep[0] == convs[0] and keep[-1] == convs[-1] and len(keep) < len(convs) // 2
    int8 = pc.quantize_int8(fp32, tmp_path / "int8.onnx", pc.calibration_inputs(pc.calibration_files(calib), SIZE))
    ops = [n.op_type for n in onnx.load(str(int8)).graph.node]
    assert ops.count("QLinearConv") == len(convs) - len(keep) and ops.count("Conv") == len(keep)


def test_predict_and_export_int8_cli(student, calib, tmp_path, cache_home):
    _, ckpt = student
    photos = tmp_path / "photos"
    noise = (np.random.default_rng(1).random((40, 50, 3)) * 255).astype(np.uint8)
    write_image(photos / "a.png", cv2.GaussianBlur(noise, (9, 9), 3))
    out = tmp_path / "maps"
    args = ["--model", str(ckpt), "--input", str(photos), "--output", str(out), "--device", "cpu",
            "--precision", "int8", "--calibration", str(calib), "--calibration-images", "4"]
    assert pr.main(args) == 0
    m = cv2.imread(str(out / "a.png"), cv2.IMREAD_UNCHANGED)
    assert m.shape == (40, 50) and m.dtype == np.uint8 and m.max() == 255
    assert len(list((cache_home / "int8").glob("*.onnx"))) == 1
    assert pr.main(args) == 0  # second run: the cached graph
    assert len(list((cache_home / "int8").glob("*.onnx"))) == 1
    onnx_out = tmp_path / "student.int8.onnx"
    assert ex.main(["--model", str(ckpt), "--output", str(onnx_out), "--precision", "int8", "--calibration", str(calib)]) == 0
    runner = OnnxRunner(onnx_out, threads=1)
    assert runner.input_size == SIZE
    assert ex.main(["--model", str(ckpt), "--output", str(tmp_path / "x.onnx"), "--precision", "int8",
                    "--calibration", str(tmp_path / "nope")]) == 2
    assert not (tmp_path / "x.onnx").exists()
    # a check that cannot pass leaves no file behind
    assert ex.main(["--model", str(ckpt), "--output", str(tmp_path / "y.onnx"), "--precision", "int8",
                    "--calibration", str(calib), "--tolerance", "0"]) == 1
    assert not (tmp_path / "y.onnx").exists()


def test_cpu_flags_parsing(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512_vnni\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    assert pc.cpu_flags(info) == {"fpu", "sse", "avx2", "avx512_vnni"}
    assert pc.fast_int8_instructions(pc.cpu_flags(info)) == ["avx512_vnni"]
    assert pc.fast_int8_instructions(frozenset({"avx2", "fma"})) == []
    assert pc.cpu_flags(tmp_path / "missing") == frozenset()


@pytest.mark.skipif(not pc.fast_int8_instructions(),
                    reason="this CPU has no VNNI/AMX int8 instructions (flags avx512_vnni, avx_vnni, amx_int8): "
                           "int8 runs here but is not expected to be faster than fp32")
def test_int8_is_faster_than_fp32_on_a_cpu_with_int8_instructions(calib, tmp_path):
    torch.manual_seed(0)
    model = build_model("mobilenet_v2", output_size=(192, 256), pretrained=False).eval()
    fp32 = tmp_path / "fp32.onnx"
    export_onnx(model, fp32, (192, 256), tolerance=None)
    int8 = pc.quantize_int8(fp32, tmp_path / "int8.onnx", pc.calibration_inputs(pc.calibration_files(calib), (192, 256)))
    runners = {"fp32": OnnxRunner(fp32, threads=1), "int8": OnnxRunner(int8, threads=1)}
    x = torch.rand(1, 3, 192, 256)
    times = {k: [] for k in runners}
    for i in range(8):
        for k, r in runners.items():
            t0 = time.perf_counter()
            r(x)
            if i:
                times[k].append(time.perf_counter() - t0)
    assert np.median(times["int8"]) < np.median(times["fp32"])
