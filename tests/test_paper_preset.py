"""params/paper.yaml (the paper's configuration, for a GPU user with the real datasets) cannot rot:
it passes config validation as it is, names weights the lookup knows how to find or download,
and each of its training configs takes real optimiser steps with its models on tiny generated
data (sizes, batch and epochs overridden; everything else as the preset says).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch
import yaml

from semipkd.config import load_params, parse_params
from semipkd.engine import fit
from semipkd.models import build_model, get_backbone
from test_engine import ToyPseudo, datasets, make_data, one_thread  # noqa: F401 (fixture)

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "params/paper.yaml"


def test_paper_preset_validates_and_says_what_the_paper_says():
    params = load_params(PAPER)
    assert (params.teacher.backbone, params.student.backbone) == ("efficientnet_b4", "eeea_c2")
    assert params.teacher.pretrained and params.student.pretrained
    assert params.prepare.input_size == (288, 384) and params.prepare.output_size == (480, 640)
    assert params.prepare.benchmark_size == (384, 384)
    for cfg in (params.train_teacher, params.distill):
        assert (cfg.epochs, cfg.batch_size, cfg.lr, cfg.ema_decay) == (20, 128, 0.001, 0.999)
    assert params.distill.pseudo_loss is not None
    # the params file keys equal the embedded default's (a key added to one is added to both)
    default = yaml.safe_load((REPO / "params.yaml").read_text())
    paper = yaml.safe_load(PAPER.read_text())
    assert set(paper) == set(default)
    for section in default:
        if isinstance(default[section], dict) and section not in ("teacher", "student"):
            assert set(paper[section]) == set(default[section]), section


def test_paper_preset_weights_have_a_source():
    params = load_params(PAPER)
    for role in ("teacher", "student"):
        src = get_backbone(getattr(params, role).backbone).weights
        assert src.hub_files or src.hf_repos or src.urls or src.packages, role


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return make_data(tmp_path_factory.mktemp("paper_toy"))


@pytest.mark.parametrize("stage,role", [("train_teacher", "teacher"), ("distill", "student"), ("finetune", "student")])
def test_each_paper_training_config_steps_its_model(toy, tmp_path, stage, role):
    raw = yaml.safe_load(PAPER.read_text())
    raw[role]["pretrained"] = False  # no ImageNet files in the test environment
    params = parse_params(raw)
    cfg = dataclasses.replace(getattr(params, stage), epochs=1, batch_size=4, num_workers=0)
    torch.manual_seed(0)
    model = build_model(getattr(params, role).backbone, output_size=(32, 32), pretrained=False)
    before = {k: v.clone() for k, v in model.state_dict().items() if v.dtype.is_floating_point}
    train, val = datasets(toy)
    summary = fit(
        model, labelled=train, val=val, cfg=cfg, out_path=tmp_path / "m.pt", ckpt_dir=tmp_path / "ckpt",
        live_dir=tmp_path / "live", device="cpu", seed=0,
        pseudo=ToyPseudo(toy / "pool", seed=8) if stage == "distill" else None,
    )
    assert summary["epochs_run"] == 1 and math.isfinite(summary["val"]["loss"])
    after = torch.load(tmp_path / "m.pt", map_location="cpu", weights_only=True)["model"]
    moved = [k for k in before if not torch.equal(before[k], after[k])]
    assert len(moved) > len(before) // 2, f"{stage}: only {len(moved)} of {len(before)} tensors changed"
