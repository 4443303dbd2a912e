"""The real-data experiment of params/osie_real.yaml, shrunk: 20 real OSIE images, one epoch.

The real-data experiment (docs/real_osie.md) runs Semi-PKD on the real OSIE copy with the real scene photos as the unlabeled pool
(docs/real_osie.md); the full run takes an hour on 2 CPU cores and is not part of CI. This test
keeps the preset working: it builds a 20-image OSIE copy in the distribution layout (a subset of
``stimuli/`` plus an ``eye/fixations.mat`` holding only those images' entries) and an 8-photo
pool in a temporary folder, points the preset at them through ``data.roots`` only, shrinks sizes
and epochs, and runs ``dvc repro`` of the real stages in a copy of the repo. It checks that every
stage ran on the real files (split sizes, pool size, pseudo-label count), that each model was
scored with all eight metrics, that the report rendered the real-data section, and that the
preset still says what docs/real_osie.md says it does.

Skipped cleanly when ../shared/datasets is absent (a checkout without the shared data).
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline_copy import KEEP, dvc, make_copy, merge

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "datasets"
OSIE = SHARED / "osie"
POOL = SHARED / "scene-unlabeled"
PRESET = REPO / "params" / "osie_real.yaml"

pytestmark = pytest.mark.skipif(
    not (OSIE / "eye" / "fixations.mat").is_file() or not POOL.is_dir(),
    reason=f"real OSIE / unlabeled pool not under {SHARED}",
)

N_IMAGES = 20
N_POOL = 8
METRICS = {"cc", "kld", "nss", "sim", "auc_judd", "auc_borji", "sauc", "info_gain"}

# Only sizes and budget shrink; models, losses, EMA, selection and data roles stay the preset's.
TINY = {
    "prepare": {"input_size": [64, 64], "output_size": [64, 64], "benchmark_size": [64, 64]},
    "train_teacher": {"epochs": 1, "batch_size": 4},
    "distill": {"epochs": 1, "batch_size": 4},
    "pseudolabel": {"batch_size": 8, "store_size": [32, 32], "shard_size": 4},
    "evaluate": {"batch_size": 8, "num_figures": 2},
    "report": {"latency_input_size": [64, 64], "latency_repeats": 1},
}


def _osie_subset(dest: Path, stems: list[str]) -> None:
    """A copy of OSIE in its distribution layout holding only ``stems``."""
    import scipy.io

    (dest / "stimuli").mkdir(parents=True)
    (dest / "eye").mkdir()
    for s in stems:
        shutil.copy2(OSIE / "stimuli" / f"{s}.jpg", dest / "stimuli" / f"{s}.jpg")
    mat = scipy.io.loadmat(OSIE / "eye" / "fixations.mat")
    fix = mat["fixations"]  # (700, 1) struct array: img, subjects
    keep = [i for i in range(fix.shape[0]) if os.path.splitext(str(np.ravel(fix[i, 0]["img"].item())[0]))[0] in stems]
    assert len(keep) == len(stems)
    scipy.io.savemat(dest / "eye" / "fixations.mat", {"fixations": fix[keep]})


def test_preset_points_at_the_real_data_through_roots_only() -> None:
    p = yaml.safe_load(PRESET.read_text())
    data = p["data"]
    assert data["source"] == "real"
    assert data["labelled"] == "osie" and data["benchmarks"] == ["osie"]
    assert data["roots"] == {"osie": "../shared/datasets/osie", "unlabeled": "../shared/datasets/scene-unlabeled"}
    assert p["teacher"]["backbone"] == "tf_efficientnet_lite2" and p["teacher"]["pretrained"] is True
    assert p["student"]["backbone"] == "mobilenet_v2" and p["student"]["pretrained"] is True
    # The labelled set is also the benchmark: no second fine-tuning on the same images.
    assert p["finetune"]["epochs"] == 0
    # Both arms (distill, distill_no_pseudo) read the one `distill` section: same budget.
    assert p["distill"]["amp"] is False
    from semipkd.config import parse_params

    parse_params(p)  # every key known, every value valid


@pytest.mark.timeout(300)
def test_osie_real_preset_on_20_images_one_epoch(tmp_path: Path) -> None:
    stems = sorted(p.stem for p in (OSIE / "stimuli").glob("*.jpg"))[:N_IMAGES]
    _osie_subset(tmp_path / "osie", stems)
    pool = tmp_path / "pool" / "images"
    pool.mkdir(parents=True)
    for src in sorted((POOL / "images").glob("*.jpg"))[:N_POOL]:
        shutil.copy2(src, pool / src.name)

    work = tmp_path / "repo"
    params = merge(yaml.safe_load(PRESET.read_text()), TINY)
    params["data"]["roots"] = {"osie": str(tmp_path / "osie"), "unlabeled": str(tmp_path / "pool")}
    # The committed real-data results travel: the report stage renders them into tables.md.
    env = make_copy(work, params, keep=KEEP)
    dvc(work, "repro", env=env)

    # prepare read the 20 real images with the paper's split rule for other counts
    # (n_val = round(20 * 200 / 700) = 6) and the 8 real photos.
    counts = json.loads((work / "reports/prepare/summary.json").read_text())["counts"]
    assert counts == {"osie/train": {"ok": 14}, "osie/val": {"ok": 6}, "unlabeled/all": {"ok": N_POOL}}
    meta = json.loads((work / "data/prepared/osie/train/meta.json").read_text())
    assert set(meta["names"]) < set(stems) and meta["input_size"] == [64, 64]
    assert (work / "data/synthetic/README.md").is_file()  # nothing generated
    # The teacher labelled every pool photo once.
    manifest = json.loads((work / "data/pseudo/manifest.json").read_text())
    assert manifest["count"] == N_POOL
    # Both students trained one epoch on the same labelled set; only `student` saw the pool.
    hist = {
        name: json.loads((work / f"reports/{name}/metrics.json").read_text())
        for name in ("train_teacher", "distill", "distill_no_pseudo")
    }
    assert all(h.get("step") == 0 for h in hist.values()), hist  # one epoch (step 0)
    assert math.isfinite(hist["distill"]["train"]["pseudo_loss"])
    assert "pseudo_loss" not in hist["distill_no_pseudo"].get("train", {}) or not math.isfinite(
        hist["distill_no_pseudo"]["train"]["pseudo_loss"]
    )

    scores = json.loads((work / "reports/evaluate/osie.json").read_text())
    assert set(scores) == {"teacher", "student", "student_no_pseudo", "center_bias"}
    for model, per in scores.items():
        for protocol in ("benchmark", "model_resolution"):
            got = per[protocol]
            assert set(got) == METRICS, (model, protocol)
            assert all(math.isfinite(v) for v in got.values()), (model, protocol, got)
    # The center bias is analytic: its score does not depend on training, only on the 6 val
    # images; sanity bounds of a center bias on OSIE (0.740 AUC-Judd on all 200 at 384x384).
    cb = scores["center_bias"]["model_resolution"]
    assert 0.6 < cb["auc_judd"] < 0.85 and 0.1 < cb["cc"] < 0.6
    per_image = (work / "reports/evaluate/per_image/osie.csv").read_text().splitlines()
    assert len(per_image) == 1 + 6 * 4 * 2  # header + images x predictors x protocols
    tables = (work / "reports/tables.md").read_text()
    real = REPO / "reports" / "real" / "osie.json"
    if real.is_file():  # the report stage appended the committed real-data section
        heading = json.loads(real.read_text())["heading"]
        assert f"\n## {heading}\n" in tables


def test_real_section_renders_the_committed_results() -> None:
    """The committed reports/real/osie.json renders; every measured row has all eight metrics."""
    path = REPO / "reports" / "real" / "osie.json"
    if not path.is_file():
        pytest.skip(f"{path} not committed yet")
    from semipkd.report import load_real_results, render_real_section

    res = load_real_results(path)
    md = render_real_section(res)
    assert md.startswith("## ")
    for row in res["rows"]:
        assert row["label"] in md
        if row["source"] == "measured":
            for proto in row["metrics"].values():
                assert set(proto) == METRICS
    assert np.isfinite([r.get("wall_s") or 0.0 for r in res["rows"]]).all()


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def test_every_preset_parses_and_the_study_settings_differ_from_setting_a_only_as_documented():
    import yaml

    from semipkd.config import load_params

    presets = sorted((REPO / "params").glob("*.yaml"))
    assert len(presets) >= 7
    for path in presets:
        load_params(path)
    flat = {p.stem: _flat(yaml.safe_load(p.read_text())) for p in presets}
    a = flat["claim_a"]

    def diff(name):
        return {k for k in set(a) | set(flat[name]) if a.get(k) != flat[name].get(k)}

    assert diff("claim_b") == {"prepare.teacher_input_size", "prepare.teacher_output_size"}
    assert flat["claim_b"]["prepare.teacher_input_size"] == [384, 384]
    for n in (100, 250):
        assert diff(f"claim_c{n}") == {"data.labelled_subset", "data.withheld_to_pool"}
        assert flat[f"claim_c{n}"]["data.labelled_subset"] == n
    # setting (a) is the osie_real preset but for selection on a holdout instead of the reported val
    assert {k for k in diff("osie_real")} == {"train_teacher.select_on", "distill.select_on"}
