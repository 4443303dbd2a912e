"""A teacher at its own resolution, a labelled subset and its withheld images in the pool, run
through the real stage scripts (prepare, train_teacher, pseudolabel, distill) on a tiny
generated dataset: the teacher trains and labels at its size, the cache holds maps for the
students' output size, is bound to it, and the students train from it."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from pipeline_copy import default_params, make_copy, merge

TEACHER_IN, TEACHER_OUT, STUDENT = [32, 40], [24, 32], [16, 16]


@pytest.mark.timeout(600)
def test_teacher_at_its_own_resolution_labels_for_the_students_size(tmp_path):
    params = merge(default_params(), {
        "synthetic": {"salicon_train": 12, "salicon_val": 4, "benchmark_images": 4, "unlabeled": 6,
                      "image_size": [48, 64]},
        "data": {"benchmarks": ["osie"], "labelled_subset": 8, "subset_seed": 1, "withheld_to_pool": True},
        "prepare": {"input_size": STUDENT, "output_size": STUDENT, "benchmark_size": STUDENT,
                    "teacher_input_size": TEACHER_IN, "teacher_output_size": TEACHER_OUT},
        "teacher": {"backbone": "mobilenet_v2", "pretrained": False},
        "student": {"backbone": "mobilenet_v2", "pretrained": False, "width": 0.5},
        "train_teacher": {"epochs": 1, "batch_size": 4},
        "distill": {"epochs": 1, "batch_size": 4},
        "pseudolabel": {"batch_size": 4, "store_size": [12, 12], "shard_size": 8},
    })
    root = tmp_path / "repo"
    env = make_copy(root, params)

    def stage(*args: str) -> str:
        proc = subprocess.run([sys.executable, *args], cwd=root, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout + proc.stderr

    log = stage("stages/prepare.py")
    # the labelled train split is opened once, for both prepared copies and the pool
    assert log.count("salicon/train: a labelled subset of 8 of 12 images (seed 1); 4 withheld") == 1, log[-3000:]
    meta = lambda rel: json.loads((root / "data/prepared" / rel / "meta.json").read_text())  # noqa: E731  (a one-line local helper; clearer here than a nested def)
    student_train, teacher_train = meta("salicon/train"), meta("teacher/salicon/train")
    assert student_train["count"] == teacher_train["count"] == 8  # the subset, for teacher and students alike
    assert student_train["names"] == teacher_train["names"]
    assert (student_train["input_size"], student_train["output_size"]) == (STUDENT, STUDENT)
    assert (teacher_train["input_size"], teacher_train["output_size"]) == (TEACHER_IN, TEACHER_OUT)
    pool, teacher_pool = meta("unlabeled/all"), meta("teacher/unlabeled/all")
    assert pool["names"] == teacher_pool["names"] and pool["count"] == 6 + 4  # the pool + the 4 withheld
    withheld = [n for n in pool["names"] if n.startswith("salicon/train/")]
    assert len(withheld) == 4 and not {n.removeprefix("salicon/train/") for n in withheld} & set(student_train["names"])
    assert teacher_pool["input_size"] == TEACHER_IN and pool["input_size"] == STUDENT

    stage("stages/train_teacher.py")
    import torch

    teacher = torch.load(root / "models/teacher.pt", map_location="cpu", weights_only=True)
    assert list(teacher["model_config"]["output_size"]) == TEACHER_OUT

    stage("stages/pseudolabel.py")
    manifest = json.loads((root / "data/pseudo/manifest.json").read_text())
    assert manifest["target_size"] == STUDENT and manifest["output_size"] == TEACHER_OUT
    assert manifest["count"] == 10

    from semipkd.io import sha256_file
    from semipkd.pseudolabel import PseudoDataset, PseudoLabelCache, StaleCacheError

    sha = sha256_file(root / "models/teacher.pt")
    PseudoLabelCache(root / "data/pseudo", teacher_sha256=sha, target_size=STUDENT)
    with pytest.raises(StaleCacheError, match="made for a student with 16x16 output, this student's is 20x20"):
        PseudoLabelCache(root / "data/pseudo", teacher_sha256=sha, target_size=(20, 20))
    cache = PseudoLabelCache(root / "data/pseudo", teacher_sha256=sha)
    ds = PseudoDataset(root / "data/prepared/unlabeled/all", cache, STUDENT, hflip=False, photometric=False, seed=0)
    assert tuple(ds[0]["image"].shape) == (3, *STUDENT) and tuple(ds[0]["target"].shape) == tuple(STUDENT)
    # the maps are the teacher's at its own input: the student's 16x16 copy of the pool is not
    # what it saw, but the same images in the same order
    assert np.isfinite(ds[9]["target"].numpy()).all()

    stage("stages/distill.py")
    student = torch.load(root / "models/student.pt", map_location="cpu", weights_only=True)
    assert list(student["model_config"]["output_size"]) == STUDENT
    hist = json.loads((root / "reports/distill/metrics.json").read_text())
    assert np.isfinite(hist["train"]["pseudo_loss"])
