"""semipkd.training and the stages' training controls on tiny prepared data (the toy task of
test_engine.py): the head prior from the labelled targets, and fine-tuning keeping it."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from semipkd.config import ConfigError, parse_params
from semipkd.io import atomic_torch_save
from semipkd.models import checkpoint_payload, load_model
from semipkd.training import holdout_split, labelled_target_mean, train_labelled
from test_engine import OUTPUT, make_cfg, tiny_model, write_prepared

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _stage(name: str):
    """A stage script as a module (its ``run`` called in-process)."""
    if str(REPO / "stages") not in sys.path:
        sys.path.insert(0, str(REPO / "stages"))
    spec = importlib.util.spec_from_file_location(f"stage_{name}", REPO / "stages" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_labelled_target_mean_is_the_mean_of_the_max_normalised_maps(tmp_path):
    """Known answer: three 2x2 maps stored as uint8 (value / 255)."""
    split = tmp_path / "train"
    split.mkdir()
    density = np.array([[[255, 0], [0, 0]], [[255, 255], [0, 0]], [[51, 0], [0, 0]]], np.uint8)
    np.save(split / "density.npy", density)
    assert labelled_target_mean(split) == pytest.approx(816 / 3060, abs=1e-15)  # 4/15
    assert labelled_target_mean(split, np.array([2, 0])) == pytest.approx(0.15, abs=1e-15)
    assert labelled_target_mean(split, np.array([0, 2]), chunk=1) == pytest.approx(0.15, abs=1e-15)


def test_train_labelled_sets_the_head_prior_from_the_training_rows_and_records_it(tmp_path):
    """``head_prior``: the bias the run starts from is logit(mean of the training rows, holdout
    excluded); with 0 epochs the given weights are the result, so the file holds that bias."""
    prepared = tmp_path / "toy"
    write_prepared(prepared / "train", 12, seed=1)
    write_prepared(prepared / "val", 4, seed=2)
    cfg = make_cfg(epochs=0)
    train_idx, _ = holdout_split(12, cfg.holdout, 3)
    density = np.load(prepared / "train" / "density.npy").astype(np.float64) / 255.0
    mean = density[train_idx].mean()
    assert mean != pytest.approx(density.mean(), abs=1e-6)  # the holdout matters here
    torch.manual_seed(0)
    model = tiny_model()
    biased = load_model_with_bias(model, tmp_path)
    out = tmp_path / "out"
    summary = train_labelled(biased, prepared, cfg, seed=3, device=torch.device("cpu"), out_path=out / "m.pt",
                             ckpt_dir=out / "ckpt", live_dir=out / "live", head_prior=True)
    assert summary["head_prior"]["target_mean"] == pytest.approx(mean, abs=1e-12)
    saved = torch.load(out / "m.pt", map_location="cpu", weights_only=True)
    assert saved["model_config"]["head_bias"] is True
    assert saved["head_prior"]["bias"] == pytest.approx(math.log(mean / (1 - mean)), abs=1e-12)
    assert float(saved["model"]["decoder.head.bias"]) == pytest.approx(math.log(mean / (1 - mean)), abs=1e-6)
    # without head_prior (and the paper's head) nothing is recorded
    plain = train_labelled(tiny_model(), prepared, cfg, seed=3, device=torch.device("cpu"), out_path=out / "p.pt",
                           ckpt_dir=out / "ckpt_p", live_dir=out / "live_p")
    assert "head_prior" not in plain
    assert "head_prior" not in torch.load(out / "p.pt", map_location="cpu", weights_only=True)


def load_model_with_bias(model: torch.nn.Module, tmp_path: Path) -> torch.nn.Module:
    """``model`` with a head bias added (0), rebuilt through a checkpoint as load_model does."""
    payload = checkpoint_payload(model)
    payload["model_config"] = {**payload["model_config"], "head_bias": True}
    payload["model"] = {**payload["model"], "decoder.head.bias": torch.zeros(1)}
    path = tmp_path / "with_bias.pt"
    atomic_torch_save(path, payload)
    return load_model(path).train()


def test_finetune_keeps_a_students_head_bias(tmp_path, monkeypatch):
    """The finetune stage rebuilds each student from its file with its head bias and does not
    reset it to a prior of the benchmark's targets: at lr 0 an epoch leaves it as it was."""
    monkeypatch.chdir(tmp_path)
    write_prepared(tmp_path / "data/prepared/osie/train", 12, seed=1)
    write_prepared(tmp_path / "data/prepared/osie/val", 4, seed=2)
    (tmp_path / "models").mkdir()
    student = load_model_with_bias(tiny_model(), tmp_path)
    student.decoder.set_head_prior(0.8)  # far from the toy maps' mean (~0.07)
    atomic_torch_save(tmp_path / "models/student.pt", checkpoint_payload(student))
    atomic_torch_save(tmp_path / "models/student_no_pseudo.pt", checkpoint_payload(tiny_model()))
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["device"] = "cpu"
    raw["prepare"]["benchmark_size"] = list(OUTPUT)
    raw["finetune"].update(epochs=1, batch_size=4, lr=0.0, amp=False, pseudo_loss=None, augment=[])
    _stage("finetune").run(parse_params(raw), "osie")
    tuned = torch.load(tmp_path / "models/finetune/osie/student.pt", map_location="cpu", weights_only=True)
    assert tuned["model_config"]["head_bias"] is True and "head_prior" not in tuned
    assert float(tuned["model"]["decoder.head.bias"]) == pytest.approx(math.log(0.8 / 0.2), abs=1e-6)
    assert load_model(tmp_path / "models/finetune/osie/student.pt").decoder.head.bias is not None
    plain = torch.load(tmp_path / "models/finetune/osie/student_no_pseudo.pt", map_location="cpu", weights_only=True)
    assert "head_bias" not in plain["model_config"] and "decoder.head.bias" not in plain["model"]
    assert json.loads((tmp_path / "reports/finetune/osie/student/metrics.json").read_text())


def _toy_params(**sections) -> dict:
    """params.yaml with the toy sizes, on the CPU, a non-pretrained mobilenet_v2 student."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["device"] = "cpu"
    raw["prepare"].update(input_size=[64, 64], output_size=list(OUTPUT))
    raw["student"].update(backbone="mobilenet_v2", pretrained=False)
    raw["distill"].update(epochs=2, batch_size=4, amp=False)
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return raw


def test_distill_no_pseudo_matched_to_semi_pkd_takes_its_steps(tmp_path, monkeypatch):
    """The stage, step-matched: 12 labelled images (1 held out: 11 train), a prepared pool of 9,
    batch 4, 2 epochs. Semi-PKD arm by hand: 2 x (11 // 4 + 9 // 4) = 2 x (2 + 2) = 8 steps; the
    labelled-only arm takes those 8 as 4 epochs of 2, and its metrics file says so. The pool's
    size comes from the prepared meta; no pseudo-label cache or teacher is read."""
    from semipkd.config import NoPseudoConfig
    from semipkd.training import no_pseudo_budget

    monkeypatch.chdir(tmp_path)
    write_prepared(tmp_path / "data/prepared/salicon/train", 12, seed=1)
    write_prepared(tmp_path / "data/prepared/salicon/val", 4, seed=2)
    write_prepared(tmp_path / "data/prepared/unlabeled/all", 9, seed=3, labelled=False)
    params = parse_params(_toy_params(distill_no_pseudo={"steps": "match_semi_pkd"}))
    budget = no_pseudo_budget(params.distill_no_pseudo, params.distill)
    assert budget.pseudo_images == 9 and budget.total(2, 11, 4) == 8
    assert no_pseudo_budget(NoPseudoConfig(), params.distill) is None
    assert no_pseudo_budget(NoPseudoConfig(steps=5), params.distill).total(2, 11, 4) == 5
    # with distill.pool_draw the Semi-PKD arm's pseudo pass is the draw: 2 x (2 + 4 // 4) = 6
    drawn = parse_params(_toy_params(distill={"pool_draw": 4}, distill_no_pseudo={"steps": "match_semi_pkd"}))
    assert no_pseudo_budget(drawn.distill_no_pseudo, drawn.distill).total(2, 11, 4) == 6
    too_big = parse_params(_toy_params(distill={"pool_draw": 10}, distill_no_pseudo={"steps": "match_semi_pkd"}))
    with pytest.raises(ConfigError, match="pool_draw: 10 images per epoch, but the pool holds 9"):
        no_pseudo_budget(too_big.distill_no_pseudo, too_big.distill)
    torch.manual_seed(0)
    _stage("distill").run(params, "no_pseudo")
    metrics = json.loads((tmp_path / "reports/distill_no_pseudo/metrics.json").read_text())
    assert metrics["optimizer_steps"] == 8 and metrics["step"] == 3  # 4 epochs, dvclive counts from 0
    saved = torch.load(tmp_path / "models/student_no_pseudo.pt", map_location="cpu", weights_only=True)
    assert saved["train_config"]["epochs"] == 2  # the config as given; the budget set the run's epochs
    assert not (tmp_path / "models/student.pt").exists()


def test_the_size_a_model_learns_at_travels_in_its_file_to_predict(tmp_path, caplog):
    """train_labelled records the prepared images' size as the model's input_size; load_model
    restores it and predict/export feed that size, with no fallback to the output size."""
    import logging

    from semipkd.data import read_meta
    from semipkd.inference import model_input_size

    prepared = tmp_path / "toy"
    write_prepared(prepared / "train", 12, seed=1)
    write_prepared(prepared / "val", 4, seed=2)
    size = tuple(read_meta(prepared / "train")["input_size"])
    torch.manual_seed(0)
    model = tiny_model()
    assert "input_size" not in model.config
    out = tmp_path / "out"
    train_labelled(model, prepared, make_cfg(epochs=0), seed=3, device=torch.device("cpu"), out_path=out / "m.pt",
                   ckpt_dir=out / "ckpt", live_dir=out / "live")
    saved = torch.load(out / "m.pt", map_location="cpu", weights_only=True)
    assert saved["model_config"]["input_size"] == list(size)
    loaded = load_model(out / "m.pt")
    assert loaded.input_size == size and loaded.config == saved["model_config"]
    with caplog.at_level(logging.INFO, logger="semipkd.inference"):
        assert model_input_size(loaded) == size
    assert "records no input_size" not in caplog.text
