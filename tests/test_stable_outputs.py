"""Outputs that DVC tracks must not change between identical runs, or ``dvc.lock`` is dirty after
every ``dvc repro`` although every model is bit-identical. Wall-clock figures (seconds, images/s,
latency) are what changes; they live in untracked run logs and in ``benchmarks/`` outputs.
"""

from __future__ import annotations

import json

import pytest

from pipeline_copy import REPO, timing_keys, tracked_metrics


def test_timing_keys_finds_wall_clock_figures():
    # the detector itself, on known input: it must catch these and pass the rest
    payload = {"count": 3, "seconds": 1.0, "val": {"cc": 0.5, "latency_ms": 2}, "runs": [{"images_per_s": 9}]}
    assert timing_keys(payload) == ["/seconds", "/val/latency_ms", "/runs[0]/images_per_s"]
    assert timing_keys({"shards": 2, "bytes_per_image": 10, "loss": 0.1, "step": 4}) == []


def test_tracked_metrics_expands_every_stage():
    paths = {p.relative_to(REPO).as_posix() for p in tracked_metrics(REPO)}
    assert "reports/pseudolabel/metrics.json" in paths
    assert "reports/evaluate/osie.json" in paths  # a foreach stage, expanded
    assert "reports/finetune/mit1003/student_no_pseudo/metrics.json" in paths
    assert "reports/evaluate/labelled/salicon.json" in paths  # ${data.labelled} interpolated


@pytest.mark.parametrize("path", tracked_metrics(REPO), ids=lambda p: p.relative_to(REPO).as_posix())
def test_no_tracked_metrics_file_holds_wall_clock_figures(path):
    if not path.is_file():
        pytest.skip(f"{path} is not committed in this checkout")
    assert timing_keys(json.loads(path.read_text())) == [], path
