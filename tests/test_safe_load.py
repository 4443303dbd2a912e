"""A model file is data, never code: a crafted pickle is refused everywhere a file is loaded.

The crafted file is a real ``torch.save`` archive whose ``model`` entry unpickles by calling
``open(marker, "w")``: with the full unpickler, loading it would create the marker file. Every
entry point that reads a model or resume file (``predict``, ``export``, the ``evaluate`` and
``pseudolabel`` stages through ``load_model``, the engine's resume) must refuse it with a clear
message naming the file, and the marker must never appear.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from semipkd.checkpoint import CheckpointError, load_checkpoint
from semipkd.models import ModelFileError, build_model, checkpoint_payload, load_model

REPO = Path(__file__).resolve().parents[1]


class _RunsCode:
    """Unpickles as ``open(marker, "w")``: a stand-in for any code a crafted file could run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.fixture
def crafted(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pt"
    torch.save({"model": _RunsCode(marker), "model_config": {"backbone": "mobilenet_v2", "width": 1.0,
                                                             "output_size": [32, 32]}}, path)
    # The file really would run code with the full unpickler (the control).
    control = tmp_path / "control"
    torch.save({"x": _RunsCode(control)}, tmp_path / "control.pt")
    torch.load(tmp_path / "control.pt", weights_only=False)
    assert control.exists()
    return path, marker


def _refused(text: str, path: Path) -> bool:
    return f"checkpoint {path} was refused" in text and "never unpickles" in text


def test_load_model_refuses_a_crafted_file_without_running_it(crafted) -> None:
    path, marker = crafted
    with pytest.raises(ModelFileError) as exc:
        load_model(path)
    assert _refused(str(exc.value), path)
    assert not marker.exists()


def _cli(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


def test_predict_and_export_refuse_a_crafted_model(crafted, tmp_path: Path) -> None:
    path, marker = crafted
    photos = tmp_path / "photos"
    photos.mkdir()
    import numpy as np
    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(photos / "a.png")
    runs = {
        "predict": _cli("semipkd.predict", "--model", str(path), "--input", str(photos), "--output",
                        str(tmp_path / "maps"), "--backend", "torch", cwd=tmp_path),
        "export": _cli("semipkd.export", "--model", str(path), "--output", str(tmp_path / "m.onnx"), cwd=tmp_path),
    }
    for name, proc in runs.items():
        assert proc.returncode == 2, (name, proc.stdout, proc.stderr)
        assert _refused(proc.stderr, path), (name, proc.stderr)
        assert "full unpickler" not in proc.stderr + proc.stdout
    assert not marker.exists()
    assert not (tmp_path / "maps").exists() and not (tmp_path / "m.onnx").exists()


def test_the_evaluate_stage_refuses_a_crafted_model_before_reading_data(crafted, tmp_path: Path) -> None:
    path, marker = crafted
    work = tmp_path / "work"
    (work / "models").mkdir(parents=True)
    (work / "params.yaml").write_bytes((REPO / "params.yaml").read_bytes())
    (work / "models" / "teacher.pt").write_bytes(path.read_bytes())
    proc = subprocess.run([sys.executable, str(REPO / "stages" / "evaluate.py"), "labelled"], cwd=work,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert _refused(proc.stderr, Path("models/teacher.pt")), proc.stderr
    assert "Traceback" not in proc.stderr
    assert not marker.exists()


def test_resume_refuses_a_crafted_checkpoint(crafted) -> None:
    path, marker = crafted
    with pytest.raises(CheckpointError, match="resume checkpoint cannot be read"):
        load_checkpoint(path, {}, main=True)
    assert not marker.exists()


def test_model_files_the_pipeline_writes_load_weights_only(tmp_path: Path) -> None:
    """What the engine writes (the payload plus its metadata) passes the weights-only loader, and
    load_model rebuilds the same weights from it."""
    torch.manual_seed(0)
    model = build_model("mobilenet_v2", output_size=(32, 32), width=0.25)
    dest = tmp_path / "m.pt"
    from semipkd.io import atomic_torch_save

    atomic_torch_save(dest, {**checkpoint_payload(model), "meta": {"epoch": 3, "metrics": {"cc": 0.5}}})
    raw = torch.load(dest, weights_only=True)
    assert raw["meta"]["epoch"] == 3
    back = load_model(dest)
    for k, v in model.state_dict().items():
        assert torch.equal(v, back.state_dict()[k]), k
