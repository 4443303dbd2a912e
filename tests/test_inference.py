"""Tests of semipkd.inference: one image reader, batching, and the two backends agreeing."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from semipkd import inference as inf
from semipkd.data.validate import read_image as read_dataset_image
from semipkd.export import export_onnx
from semipkd.models import build_model, list_backbones

# Any registered backbone can be configured as ``student.backbone``; the paper's two teachers
# (EfficientNet-B4 and -B7, 20M and 69M parameters) are left out here because exporting them
# takes 40 s of test time. benchmarks/models.py checks efficientnet_b4's graph at 288x384.
TEACHER_ONLY = ("efficientnet_b4", "efficientnet_b7")
STUDENT_BACKBONES = [n for n in list_backbones() if n not in TEACHER_ONLY]
ORIENTATION = 0x0112  # the EXIF tag


def _smooth_image(h, w, seed=0):
    rng = np.random.default_rng(seed)
    # smooth content: JPEG keeps it nearly intact, so the decoders' outputs are comparable
    return cv2.GaussianBlur((rng.random((h, w, 3)) * 255).astype(np.uint8), (5, 5), 2)


def test_exif_orientation_6_reads_rotated_the_same_in_evaluate_and_predict(tmp_path):
    img = _smooth_image(24, 40)
    exif = Image.Exif()
    exif[ORIENTATION] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(img).save(tmp_path / "rotated.jpg", quality=95, exif=exif)
    Image.fromarray(img).save(tmp_path / "plain.jpg", quality=95)  # same pixels, no EXIF
    plain = inf.read_image(tmp_path / "plain.jpg")
    via_predict = inf.read_image(tmp_path / "rotated.jpg")
    via_evaluate, notes = read_dataset_image(tmp_path / "rotated.jpg")  # what the benchmark readers call
    assert via_predict.shape == (40, 24, 3) and notes == ("EXIF orientation 6 applied",)
    np.testing.assert_array_equal(via_predict, via_evaluate)
    # Known answer: the stored pixels turned 90 degrees clockwise ...
    np.testing.assert_array_equal(via_predict, np.rot90(plain, k=-1))
    # ... as an independent decoder that applies EXIF orientation (OpenCV) shows the file.
    np.testing.assert_array_equal(via_predict, cv2.imread(str(tmp_path / "rotated.jpg"))[:, :, ::-1])


def test_read_image_names_the_file_on_bad_input(tmp_path):
    (tmp_path / "junk.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(inf.ImageReadError, match=r"junk\.jpg: not a decodable image"):
        inf.read_image(tmp_path / "junk.jpg")
    with pytest.raises(inf.ImageReadError, match=r"missing\.png: file does not exist"):
        inf.read_image(tmp_path / "missing.png")


def test_batches_cover_the_range_with_a_short_last_batch():
    assert [list(r) for r in inf.batches(7, 3)] == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(inf.batches(0, 4)) == []
    with pytest.raises(ValueError, match="batch_size"):
        list(inf.batches(3, 0))


def test_images_to_tensor_layout_and_range():
    a = np.zeros((5, 7, 3), np.uint8)
    a[..., 0] = 255  # pure red
    x = inf.images_to_tensor([a, a], (5, 7))
    assert x.shape == (2, 3, 5, 7) and x.dtype == torch.float32
    assert torch.equal(x[:, 0], torch.ones(2, 5, 7)) and float(x[:, 1:].abs().max()) == 0.0


@pytest.mark.parametrize("backbone", STUDENT_BACKBONES)
def test_onnxruntime_equals_pytorch_for_every_student_backbone(backbone, tmp_path):
    torch.manual_seed(0)
    model = build_model(backbone, output_size=(32, 40), pretrained=False).eval()
    for size in ((64, 80), (96, 96)):
        path = tmp_path / f"{size[0]}x{size[1]}.onnx"
        export_onnx(model, path, size, tolerance=None)  # unchecked: the comparison is this test's
        ort_runner = inf.OnnxRunner(path, threads=1)
        assert ort_runner.input_size == size and ort_runner.providers == ["CPUExecutionProvider"]
        x = torch.rand(3, 3, *size, generator=torch.Generator().manual_seed(1))  # batch 3: exported at 1
        got = ort_runner(x)
        ref = inf.TorchRunner(model, "cpu")(x)
        assert got.shape == ref.shape == (3, 32, 40)
        assert float((got - ref).abs().max()) <= 1e-4
        assert float(ref.std()) > 0  # not a constant map that would agree trivially


def test_optimized_torch_runner_equals_eager_and_refuses_another_size():
    model = build_model("mobilenet_v2", output_size=(24, 24), pretrained=False).eval()
    x = torch.rand(2, 3, 48, 64, generator=torch.Generator().manual_seed(2))
    fast = inf.TorchRunner(model, "cpu", optimize=True, input_size=(48, 64))
    assert float((fast(x) - inf.TorchRunner(model, "cpu")(x)).abs().max()) <= 1e-4
    with pytest.raises(ValueError, match="traced for"):
        fast(torch.rand(1, 3, 32, 32))


def test_onnx_runner_rejects_a_wrong_size_and_a_bad_file(tmp_path):
    model = build_model("mobilenet_v2", output_size=(16, 16), pretrained=False).eval()
    export_onnx(model, tmp_path / "m.onnx", (32, 32), tolerance=None)
    with pytest.raises(ValueError, match=r"m\.onnx: graph takes \(B, 3, 32, 32\)"):
        inf.OnnxRunner(tmp_path / "m.onnx")(torch.rand(1, 3, 32, 48))
    (tmp_path / "bad.onnx").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"bad\.onnx: onnxruntime cannot load"):
        inf.OnnxRunner(tmp_path / "bad.onnx")
    with pytest.raises(FileNotFoundError, match="none.onnx"):
        inf.OnnxRunner(tmp_path / "none.onnx")


def test_model_input_size():
    class M(torch.nn.Module):
        config = {"output_size": [24, 32]}

    assert inf.model_input_size(M()) == (24, 32)
    M.config = {"output_size": [24, 32], "input_size": [48, 64]}
    assert inf.model_input_size(M()) == (48, 64)
    assert inf.model_input_size(M(), (8, 8)) == (8, 8)
    with pytest.raises(ValueError):
        inf.model_input_size(M(), (0, 8))
