"""Faults on the real stages, through `dvc repro`, on a tiny config (docs/reliability.md).

Two copies of the repo run the same tiny pipeline. ``ref`` runs it uninterrupted once (the
session's ``tiny_pipeline``, also checked by tests/test_pipeline_e2e.py). ``gauntlet``
runs it stage by stage with a fault injected into every stage on the way: SIGKILL of each training
stage mid-epoch, SIGKILL of pseudolabel between shards, a bit-flipped and a truncated resume
checkpoint. After each fault a plain ``dvc repro`` has to finish the job, and every model and
the evaluation it ends with must be bit-identical to the uninterrupted run's (which also proves
that two CPU runs with the same seed give identical results). The tests share the copies and run
in file order.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipeline_copy import Copy, dvc, kill_when, merge, ran_stages, stage_names, write_params
from test_engine import assert_same_state

# Several whole-pipeline runs (about 7 minutes here): outside the default `pytest -q`, run by
# `python benchmarks/reliability.py` (or `pytest -m slow`). The engine-level resume tests in
# tests/test_engine.py keep the crash-resume equality in the default run.
pytestmark = [pytest.mark.timeout(600), pytest.mark.slow]

BENCH = "mit1003"

# stage -> (outputs it writes at the end, the checkpoint whose appearance means epoch 0 is done)
TRAINING = {
    "train_teacher": (["models/teacher.pt"], "models/ckpt/train_teacher/last.pt"),
    "distill": (["models/student.pt"], "models/ckpt/distill/last.pt"),
    "distill_no_pseudo": (["models/student_no_pseudo.pt"], "models/ckpt/distill_no_pseudo/last.pt"),
    f"finetune@{BENCH}": (
        [f"models/finetune/{BENCH}/student.pt", f"models/finetune/{BENCH}/student_no_pseudo.pt"],
        f"models/ckpt/finetune/{BENCH}/student/last.pt",
    ),
}


@pytest.fixture(scope="module")
def ref(tiny_pipeline) -> Copy:
    return tiny_pipeline


@pytest.fixture(scope="module")
def params(tiny_pipeline) -> dict:
    return tiny_pipeline.params


@pytest.fixture(scope="module")
def gauntlet(tmp_path_factory, params) -> Copy:
    c = Copy(tmp_path_factory.mktemp("gauntlet") / "repo", params)
    c.repro("prepare")
    return c


def weights(path: Path) -> dict[str, torch.Tensor]:
    obj = torch.load(path, map_location="cpu", weights_only=True)
    return obj["model"] if isinstance(obj, dict) and "model" in obj else obj


def assert_same_weights(a: Path, b: Path) -> None:
    assert_same_state(weights(a), weights(b))


def assert_nothing_half_written(root: Path) -> None:
    """Every checkpoint, model, cache file and metrics file present loads whole."""
    for p in list((root / "models").rglob("*.pt")):
        torch.load(p, map_location="cpu", weights_only=True)
    for p in list((root / "reports").rglob("*.json")) + list((root / "data").rglob("*.json")):
        json.loads(p.read_text())
    import numpy as np

    for p in (root / "data" / "pseudo").glob("*.npy") if (root / "data" / "pseudo").is_dir() else []:
        np.load(p)


def kill_mid_epoch(c: Copy, stage: str) -> None:
    """Start `dvc repro STAGE` from scratch and SIGKILL it early in epoch 1."""
    outs, ckpt = TRAINING[stage]
    shutil.rmtree(c.root / Path(ckpt).parent, ignore_errors=True)
    proc = kill_when(c.cmd(stage), c.root, c.env, lambda: (c.root / ckpt).is_file(), delay=0.3)
    assert proc.returncode == -9
    for out in outs:
        assert not (c.root / out).exists(), f"{stage} finished before the kill: {out} exists"
    assert (c.root / ckpt).is_file()
    assert_nothing_half_written(c.root)


def resume_and_compare(c: Copy, ref: Copy, stage: str) -> None:
    proc = c.repro(stage)
    assert ran_stages(proc.stdout) == [stage], proc.stdout
    log = proc.stdout + proc.stderr
    assert "resum" in log.lower(), log[-3000:]
    for out in TRAINING[stage][0]:
        assert_same_weights(c.root / out, ref.root / out)


@pytest.mark.fault("SIGKILL of train_teacher mid-epoch, then dvc repro")
def test_teacher_killed_mid_epoch_resumes_to_the_uninterrupted_weights(gauntlet, ref):
    kill_mid_epoch(gauntlet, "train_teacher")
    resume_and_compare(gauntlet, ref, "train_teacher")


@pytest.mark.fault("pseudolabel killed between shards, then dvc repro")
def test_pseudolabel_killed_between_shards_reuses_finished_shards(gauntlet, ref):
    g = gauntlet.root
    progress = g / "data" / "pseudo" / "progress.json"

    def some_shards_done() -> bool:
        try:
            return len(json.loads(progress.read_text())["shards"]) >= 3
        except (OSError, ValueError, KeyError):
            return False

    proc = kill_when(gauntlet.cmd("pseudolabel"), g, gauntlet.env, some_shards_done)
    assert proc.returncode == -9
    assert not (g / "data/pseudo/manifest.json").exists(), "pseudolabel finished before the kill"
    assert_nothing_half_written(g)
    # Every shard the progress file calls done is whole and hashes to what it recorded.
    from semipkd.io import sha256_file

    done = json.loads(progress.read_text())["shards"]
    for entry in done:
        assert sha256_file(g / "data/pseudo" / entry["name"]) == entry["sha256"]
    # A shard that was being written when the kill came must not be taken as done: plant a
    # truncated file under the name of the next shard, as a non-atomic writer would leave it.
    nxt = g / "data/pseudo" / f"shard_{len(done):05d}.npy"
    nxt.write_bytes(b"\x93NUMPY truncated")

    proc = gauntlet.repro("pseudolabel")
    summary = json.loads((g / "reports/pseudolabel/metrics.json").read_text())
    run_log = json.loads((g / "reports/pseudolabel/last_run.json").read_text())
    assert run_log["shards_reused"] == len(done) >= 3, run_log
    assert run_log["shards_written"] == summary["shards"] - len(done)
    ours = json.loads((g / "data/pseudo/manifest.json").read_text())
    theirs = json.loads((ref.root / "data/pseudo/manifest.json").read_text())
    assert [s["sha256"] for s in ours["shards"]] == [s["sha256"] for s in theirs["shards"]]


@pytest.mark.fault("SIGKILL of distill mid-epoch, then dvc repro")
def test_distill_killed_mid_epoch_resumes_to_the_uninterrupted_weights(gauntlet, ref):
    kill_mid_epoch(gauntlet, "distill")
    resume_and_compare(gauntlet, ref, "distill")


@pytest.mark.fault("resume checkpoint with flipped bytes (wrong hash), then dvc repro")
@pytest.mark.fault("truncated resume checkpoint, then dvc repro")
@pytest.mark.fault("SIGKILL of distill_no_pseudo mid-epoch, then dvc repro")
def test_corrupt_checkpoints_are_refused_by_name_then_resume_works(gauntlet, ref):
    stage = "distill_no_pseudo"
    kill_mid_epoch(gauntlet, stage)
    ckpt = gauntlet.root / TRAINING[stage][1]
    good = ckpt.read_bytes()

    # Bytes flipped inside a tensor record: torch still unzips it, the stored sha256 does not match.
    ckpt_obj = torch.load(ckpt, map_location="cpu", weights_only=True)
    needle = next(v for v in ckpt_obj["model"].values() if v.numel() > 64).numpy().tobytes()[:64]
    at = good.index(needle)
    flipped = bytearray(good)
    flipped[at + 8 : at + 16] = bytes(b ^ 0xFF for b in flipped[at + 8 : at + 16])
    ckpt.write_bytes(bytes(flipped))
    proc = gauntlet.repro(stage, check=False)
    assert proc.returncode != 0
    err = proc.stderr + proc.stdout
    assert str(TRAINING[stage][1]) in err and "integrity" in err, err[-3000:]
    assert "Traceback" not in err

    ckpt.write_bytes(good[: len(good) // 2])  # truncated
    proc = gauntlet.repro(stage, check=False)
    assert proc.returncode != 0
    err = proc.stderr + proc.stdout
    assert str(TRAINING[stage][1]) in err and "cannot be read" in err, err[-3000:]
    assert not (gauntlet.root / "models/student_no_pseudo.pt").exists()

    ckpt.write_bytes(good)
    resume_and_compare(gauntlet, ref, stage)


@pytest.mark.fault(f"SIGKILL of finetune@{BENCH} mid-epoch, then dvc repro")
def test_finetune_killed_mid_epoch_resumes_to_the_uninterrupted_weights(gauntlet, ref):
    kill_mid_epoch(gauntlet, f"finetune@{BENCH}")
    resume_and_compare(gauntlet, ref, f"finetune@{BENCH}")


@pytest.mark.fault("two CPU runs with the same seed, one of them through every fault above")
def test_after_every_fault_the_pipeline_ends_bit_identical_to_the_uninterrupted_run(gauntlet, ref):
    # What is left to run is read from dvc.yaml: every stage the gauntlet has not run to the end.
    left = set(stage_names(gauntlet.root)) - gauntlet.ran
    assert {"report", f"evaluate@{BENCH}"} <= left and f"finetune@{BENCH}" not in left, left
    proc = gauntlet.repro()
    assert set(ran_stages(proc.stdout)) == left, proc.stdout
    for bench in ("mit1003", "osie"):
        ours = json.loads((gauntlet.root / f"reports/evaluate/{bench}.json").read_text())
        theirs = json.loads((ref.root / f"reports/evaluate/{bench}.json").read_text())
        assert ours == theirs  # every model, protocol and metric, exactly
    # Every tracked output has the same hash in both lock files: the same pipeline result.
    import yaml

    def outs(root: Path) -> dict[str, str]:
        lock = yaml.safe_load((root / "dvc.lock").read_text())
        return {
            o["path"]: o.get("md5")
            for st in lock["stages"].values()
            for o in st.get("outs", [])
            if o["path"].startswith(("models/teacher", "models/student", "models/finetune", "data/pseudo"))
        }

    assert outs(gauntlet.root) == outs(ref.root)
    assert gauntlet.repro().stdout.count("Running stage") == 0


@pytest.mark.fault("NaN/inf in the training loss (nonfinite: raise)")
def test_nonfinite_loss_stops_the_stage_naming_epoch_and_step(gauntlet, params):
    # A learning rate of 1e30 sends the weights to infinity within a few steps.
    write_params(gauntlet.root, merge(params, {"train_teacher": {"lr": 1.0e30}}))
    try:
        proc = gauntlet.repro("train_teacher", check=False)
    finally:
        write_params(gauntlet.root, params)
    assert proc.returncode != 0
    err = proc.stderr + proc.stdout
    line = next((ln for ln in err.splitlines() if ln.startswith("error: train_teacher:")), None)
    assert line is not None, err[-3000:]
    assert "epoch 1" in line and "step" in line and "nonfinite: skip" in line, line
    assert "Traceback" not in err
    # No model was written (DVC removed the old one before the run), and the resume checkpoint
    # left on disk holds finite weights only: nothing NaN is ever saved.
    assert not (gauntlet.root / "models/teacher.pt").exists()
    ckpt = gauntlet.root / TRAINING["train_teacher"][1]
    if ckpt.exists():  # the earlier run's (in file order); the failed run wrote none
        w = weights(ckpt)
        assert all(torch.isfinite(v).all() for v in w.values() if v.is_floating_point())
    # Back to the good params: DVC restores the earlier teacher from its run cache.
    gauntlet.repro()
    assert (gauntlet.root / "models/teacher.pt").is_file()


@pytest.mark.fault("2 data-loader workers instead of 0, and two dvc exp run --temp at once")
def test_two_concurrent_experiments_finish_separately_and_workers_do_not_change_results(ref):
    """Two `dvc exp run --temp` at once in one repo: one with 2 loader workers (its teacher must
    be bit-identical to the 0-worker reference), one with another learning rate (must differ)."""
    import time

    root, env = ref.root, ref.env
    runs = {
        "workers2": ["-S", "train_teacher.num_workers=2"],
        "lr2x": ["-S", "train_teacher.lr=0.002"],
    }
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-m", "dvc", "exp", "run", "--temp", "-n", name, *args, "train_teacher"],
            cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for name, args in runs.items()
    }
    t0 = time.monotonic()
    outs = {name: p.communicate(timeout=600)[0] for name, p in procs.items()}
    for name, p in procs.items():
        assert p.returncode == 0, f"{name}:\n{outs[name][-3000:]}"
    assert time.monotonic() - t0 < 600

    refs = subprocess.run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], cwd=root,
                          capture_output=True, text=True, check=True).stdout.split()
    by_name = {r.rsplit("/", 1)[-1]: r for r in refs}
    assert set(runs) <= set(by_name), refs

    def teacher_md5(rev: str | None) -> str:
        import yaml

        text = (root / "dvc.lock").read_text() if rev is None else subprocess.run(
            ["git", "show", f"{rev}:dvc.lock"], cwd=root, capture_output=True, text=True, check=True).stdout
        lock = yaml.safe_load(text)
        return next(o["md5"] for o in lock["stages"]["train_teacher"]["outs"] if o["path"] == "models/teacher.pt")

    def teacher_val(rev: str) -> dict:
        return json.loads(subprocess.run(["git", "show", f"{rev}:reports/train_teacher/metrics.json"], cwd=root,
                                         capture_output=True, text=True, check=True).stdout)["val"]

    def cached(md5: str) -> Path:  # the teacher file an experiment wrote, from the shared cache
        return root / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]

    # Same weights, bit for bit (the files differ: they record the training config, workers too).
    assert_same_weights(cached(teacher_md5(by_name["workers2"])), root / "models/teacher.pt")
    assert teacher_val(by_name["workers2"]) == json.loads((root / "reports/train_teacher/metrics.json").read_text())["val"]
    assert teacher_md5(by_name["lr2x"]) != teacher_md5(None)
    assert teacher_val(by_name["lr2x"]) != teacher_val(by_name["workers2"])
    # The workspace is untouched by the temp runs.
    assert dvc(root, "status", env=env).stdout.strip().endswith("Data and pipelines are up to date.")
