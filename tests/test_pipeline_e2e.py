"""End to end: `dvc repro` of the real pipeline in a temporary copy of the repo, tiny config.

This runs every stage's real code (generator, readers, prepare cache, teacher, pseudo-label
cache, distillation, fine-tuning, evaluation, report) on a few dozen small images, then checks
that each stage wrote its outputs, that a no-op repro changes nothing, that a report param
reruns only `report`, and that the student beats the center-bias baseline.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pipeline_copy import default_params, dvc, make_copy, merge, ran_stages

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


@pytest.mark.timeout(900)
def test_dvc_repro_tiny_pipeline(tmp_path: Path) -> None:
    work = tmp_path / "repo"
    params = merge(default_params(), TINY)
    env = make_copy(work, params, keep=("reports/real/",))
    dvc(work, "repro", env=env)

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
    out = dvc(work, "repro", env=env).stdout
    assert "Running stage" not in out, out
    # A report param reruns only the report.
    _merge_write = merge(params, {"report": {"latency_repeats": 2}})
    (work / "params.yaml").write_text(yaml.safe_dump(_merge_write, sort_keys=False))
    out = dvc(work, "repro", env=env).stdout
    assert ran_stages(out) == ["report"], out
