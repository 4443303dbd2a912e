"""Shared test set-up."""

import os

# Before torch is imported by any test module: see semipkd/__init__.py for why.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Tests never download weights (the download path is tested against a local server with this
# unset); the stages run in pipeline copies inherit it.
os.environ.setdefault("SEMIPKD_OFFLINE", "1")


import pytest


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory):
    """The whole pipeline run once, uninterrupted, by `dvc repro` on the tiny config in a copy of
    the repo: the end-to-end test checks it, the fault tests compare their runs with it."""
    from pipeline_copy import TINY, Copy, default_params, merge

    c = Copy(tmp_path_factory.mktemp("tiny") / "repo", merge(default_params(), TINY))
    c.first = c.repro()
    return c


@pytest.fixture
def cache_home(tmp_path, monkeypatch):
    """Exported graphs, int8 graphs and backend timings go to a per-test cache, never the user's."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "semipkd"


def save_spread_student(path, output_size):
    """A real mobilenet_v2 student with random weights, saved as a checkpoint at ``path``.

    Random weights give maps within 0.498..0.501, which all become 254-255 in a PNG; the head
    scaled by 50 spreads them over ~0.1..0.9, so comparisons of maps and PNGs mean something.
    Returns the model (eval mode)."""
    import torch

    from semipkd.models import build_model, checkpoint_payload

    torch.manual_seed(0)
    model = build_model("mobilenet_v2", output_size=output_size, pretrained=False).eval()
    with torch.no_grad():
        model.decoder.head.weight.mul_(50.0)
    torch.save(checkpoint_payload(model), path)
    return model
