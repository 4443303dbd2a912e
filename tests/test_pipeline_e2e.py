"""End to end: `dvc repro` of the real pipeline in a temporary copy of the repo, tiny config.

This runs every stage's real code (generator, readers, prepare cache, teacher, pseudo-label
cache, distillation, fine-tuning, evaluation, report) on a few dozen small images, then checks
that each stage wrote its outputs, that a no-op repro changes nothing, that a report param
reruns only `report`, and that the student beats the center-bias baseline.
"""

from __future__ import annotations

import json

import pytest
import torch

from pipeline_copy import dvc, merge, ran_stages, timing_keys, tracked_metrics, write_params
from semipkd.models import load_model


@pytest.mark.timeout(900)
def test_dvc_repro_tiny_pipeline(tiny_pipeline) -> None:
    work, env, params = tiny_pipeline.root, tiny_pipeline.env, tiny_pipeline.params
    # check_params first, then 5 + finetune and evaluate x 2 + evaluate_labelled + report
    assert ran_stages(tiny_pipeline.first.stdout)[0] == "check_params"
    assert len(ran_stages(tiny_pipeline.first.stdout)) == 12

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
    # Every model and resume file the pipeline wrote passes the weights-only unpickler (the only
    # one semipkd uses: tests/test_safe_load.py), and every model file rebuilds with load_model.
    pt_files = sorted((work / "models").rglob("*.pt"))
    assert len([p for p in pt_files if "ckpt" in p.parts]) >= 4 and len(pt_files) >= 11, pt_files
    for p in pt_files:
        torch.load(p, map_location="cpu", weights_only=True)
        if "ckpt" not in p.parts:
            load_model(p)

    for bench in ("mit1003", "osie"):
        res = json.loads((work / f"reports/evaluate/{bench}.json").read_text())
        assert set(res) == {"teacher", "student", "student_no_pseudo", "center_bias"}
        for protocol in ("benchmark", "model_resolution"):
            got = res["student"][protocol]
            base = res["center_bias"][protocol]
            assert set(got) == {"cc", "kld", "nss", "sim", "auc_judd", "auc_borji", "sauc", "info_gain"}
            assert got["cc"] > base["cc"], (bench, protocol, got["cc"], base["cc"])
            assert got["nss"] > base["nss"], (bench, protocol, got["nss"], base["nss"])

    # Fine-tuning gives the Semi-PKD student a pseudo pass from the teacher's cache, the
    # labelled-only student none.
    for bench in ("mit1003", "osie"):
        semi = json.loads((work / f"reports/finetune/{bench}/student/metrics.json").read_text())
        ablation = json.loads((work / f"reports/finetune/{bench}/student_no_pseudo/metrics.json").read_text())
        assert semi["train"]["pseudo_loss"] > 0 and "pseudo_loss" not in ablation["train"], (semi, ablation)

    # The labelled set's own val: the students before fine-tuning, in the tables with the
    # published PKD rows beside them.
    res = json.loads((work / "reports/evaluate/labelled/salicon.json").read_text())
    assert set(res) == {"teacher", "student", "student_no_pseudo", "center_bias"}
    assert res["student"]["model_resolution"]["cc"] > res["center_bias"]["model_resolution"]["cc"]
    tables = (work / "reports/tables.md").read_text()
    salicon = tables[tables.index("### SALICON (the labelled set; students before fine-tuning) (val)"):]
    salicon = salicon[: salicon.index("### MIT1003")]
    assert salicon.count("| *published* |") == 2 and "0.9055" in salicon

    # Nothing changed: nothing reruns.
    out = dvc(work, "repro", env=env).stdout
    assert "Running stage" not in out, out
    # No metrics file DVC tracks holds a wall-clock figure, and rerunning the stages whose
    # outputs are not trained weights rewrites them bit for bit: dvc.lock stays as it was.
    metrics = tracked_metrics(work)
    assert len(metrics) == 12 and all(p.is_file() for p in metrics), metrics
    for path in metrics:
        assert timing_keys(json.loads(path.read_text())) == [], path
    assert json.loads((work / "reports/pseudolabel/last_run.json").read_text())["seconds"] > 0
    lock = (work / "dvc.lock").read_bytes()
    out = dvc(work, "repro", "--force", "--single-item", "pseudolabel", "report", env=env).stdout
    assert ran_stages(out) == ["pseudolabel", "report"], out
    assert (work / "dvc.lock").read_bytes() == lock
    # A report param reruns only the report (and check_params, which reads every param and
    # writes the same file, so nothing else follows).
    write_params(work, merge(params, {"report": {"latency_repeats": 2}}))
    try:
        out = dvc(work, "repro", env=env).stdout
        assert ran_stages(out) == ["check_params", "report"], out
    finally:  # the fault tests compare their runs with this copy: leave it as it was
        write_params(work, params)
        dvc(work, "repro", env=env)


def _outputs(root) -> dict[str, str]:
    """sha256 of every file under data/, models/ and reports/, and of dvc.lock."""
    import hashlib

    files = [p for top in ("data", "models", "reports") for p in (root / top).rglob("*") if p.is_file()]
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in [*files, root / "dvc.lock"]}


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    ("override", "message"),
    [
        # the `+` is what DVC's own error suggests for a key params.yaml lacks
        ("+student.widht=0.5", "unknown key in section student: 'widht' (did you mean 'width'?)"),
        ("data.source=real", "data.source is 'real' but these dataset folders do not exist: salicon -> data/salicon"),
    ],
)
def test_a_bad_param_stops_dvc_exp_run_before_any_output_is_deleted(tiny_pipeline, override, message) -> None:
    """DVC deletes a stage's outputs before it runs it; check_params runs first and stops the
    run, so a mistake costs nothing: every output (models, caches, the git-tracked manifest) is
    byte-identical afterwards, and the one-line message says what to fix."""
    work, env, params = tiny_pipeline.root, tiny_pipeline.env, tiny_pipeline.params
    before = _outputs(work)
    assert "models/student.pt" in before and "reports/prepare/manifest.csv" in before
    try:
        proc = dvc(work, "exp", "run", "-S", override, env=env, check=False)
        assert proc.returncode != 0, proc.stdout
        log = proc.stdout + proc.stderr
        assert ran_stages(proc.stdout) == ["check_params"], log
        assert f"error: check_params: params.yaml: {message}" in log or f"error: check_params: {message}" in log, log
        assert _outputs(work) == before
    finally:  # the fault tests compare their runs with this copy: leave it as it was
        write_params(work, params)
    assert "Running stage" not in dvc(work, "repro", env=env).stdout
