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

