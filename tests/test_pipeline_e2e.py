"""End to end: `dvc repro` of the real pipeline in a temporary copy of the repo, tiny config.

This runs every stage's real code (generator, readers, prepare cache, teacher, pseudo-label
cache, distillation, fine-tuning, evaluation, report) on a few dozen small images, then checks
that each stage wrote its outputs, that a no-op repro changes nothing, that a report param
reruns only `report`, and that the student beats the center-bias baseline.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

# Small enough to run in about two minutes on 2 cores, large enough to learn something.
TINY = {
    "synthetic": {"salicon_train": 80, "salicon_val": 20, "benchmark_images": 30, "unlabeled": 64,
                  "image_size": [72, 96]},
    "prepare": {"input_size": [64, 80], "output_size": [64, 80], "benchmark_size": [64, 64]},
    "data": {"benchmarks": ["mit1003", "osie"]},
    "train_teacher": {"epochs": 3, "batch_size": 16},
    "distill": {"epochs": 3, "batch_size": 16},
    "finetune": {"epochs": 2, "batch_size": 8},
    "pseudolabel": {"store_size": [32, 40], "shard_size": 24},
    "report": {"latency_input_size": [64, 80], "latency_repeats": 1},
}


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return out


def _copy_repo(dest: Path) -> None:
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, check=True, capture_output=True, text=True
    ).stdout.split("\n")
    for rel in filter(None, files):
        src = REPO / rel
        # Only code and config travel: committed outputs of the embedded default would make
        # the first repro a no-op.
        if not src.is_file() or rel.startswith(("reports/", "data/", "models/")) or rel == "dvc.lock":
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / rel)


def _dvc(cwd: Path, *args: str, env: dict) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise AssertionError(f"dvc {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


@pytest.mark.timeout(900)
def test_dvc_repro_tiny_pipeline(tmp_path: Path) -> None:
    work = tmp_path / "repo"
    work.mkdir()
    _copy_repo(work)
    params = _merge(yaml.safe_load((REPO / "params.yaml").read_text()), TINY)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.update(DVC_NO_ANALYTICS="1", DVC_NO_UPDATE_CHECK="1", OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "2"))
    env["PYTHONPATH"] = str(work)  # the copy's package, not the checkout's editable install
    git = ["git", "-c", "user.name=semipkd-test", "-c", "user.email=test@semipkd.invalid"]
    subprocess.run(["git", "init", "-q"], cwd=work, check=True)
    subprocess.run([*git, "add", "-A"], cwd=work, check=True)
    subprocess.run([*git, "commit", "-qm", "copy"], cwd=work, check=True)

    _dvc(work, "repro", env=env)

    for path in [
        "data/prepared/salicon/train/images.npy",
        "data/prepared/unlabeled/all/images.npy",
        "reports/prepare/manifest.csv",
        "models/teacher.pt",
        "data/pseudo/manifest.json",
        "models/student.pt",
        "models/student_no_pseudo.pt",
        "models/finetune/mit1003/student.pt",
        "models/finetune/osie/student_no_pseudo.pt",
        "reports/train_teacher/plots/metrics",
        "reports/evaluate/mit1003.json",
        "reports/evaluate/osie.json",
        "reports/tables.md",
        "reports/tables.csv",
        "reports/tables.tex",
        "dvc.lock",
    ]:
        assert (work / path).exists(), f"{path} was not written"
    assert list((work / "reports/figures").glob("*.png")), "report wrote no figures"

    for bench in ("mit1003", "osie"):
        res = json.loads((work / f"reports/evaluate/{bench}.json").read_text())
        assert set(res) == {"teacher", "student", "student_no_pseudo", "center_bias"}
        for protocol in ("benchmark", "model_resolution"):
            got = res["student"][protocol]
            base = res["center_bias"][protocol]
            assert set(got) == {"cc", "kld", "nss", "sim", "auc_judd", "auc_borji", "sauc", "info_gain"}
            assert got["cc"] > base["cc"], (bench, protocol, got["cc"], base["cc"])
            assert got["nss"] > base["nss"], (bench, protocol, got["nss"], base["nss"])

    # Nothing changed: nothing reruns.
    out = _dvc(work, "repro", env=env).stdout
    assert "Running stage" not in out, out
    # A report param reruns only the report.
    _merge_write = _merge(params, {"report": {"latency_repeats": 2}})
    (work / "params.yaml").write_text(yaml.safe_dump(_merge_write, sort_keys=False))
    out = _dvc(work, "repro", env=env).stdout
    ran = [line for line in out.splitlines() if line.startswith("Running stage")]
    assert ran == ["Running stage 'report':"], ran
