"""How much of a pseudo-label target is the teacher's, under the raw and the normalized EMA mix.

The paper's code mixes raw maps, ``ema + 0.5 * (teacher - ema)``. When the teacher's maps on the
unlabeled pool are faint (a low peak) and the EMA prediction has a raised floor, the teacher
contributes far less than half of the mixed map's mass; ``ema_mix_mode: normalized`` gives it
exactly ``ema_mix``. This script measures both on a finished run's workspace:

* the teacher's cached maps of the pool (``data/pseudo``, the pseudo targets before mixing);
* a student's prediction on the same images (``models/student.pt``; with an EMA horizon of one
  epoch the EMA follows the model closely, and the EMA itself is not kept after a run);
* the teacher's own peak on the labelled set's val images, for comparison with the pool;
* where the students' floor of 0.5 comes from: the share of each val map's decoder pixels whose
  last features (``decoder.refine``, a ReLU) are all exactly 0. The head is a bias-free 3x3
  convolution before the sigmoid (as in the paper code's decoder), so such a pixel (and its
  3x3 neighbourhood) outputs sigmoid(0) = 0.5 exactly and passes no gradient back: a floor
  the loss cannot lower, whatever the EMA mix;
* the wider resting state of the same head: the share of each val map's pixels within ``--tol``
  (0.01) of 0.5. A Swish decoder never outputs exactly 0.5 but can rest near it as much as a
  ReLU one (docs/real_osie.md, "Setting c100 with a Swish decoder"); a map half at 0.5 spreads
  its mass almost uniformly, which is the students' high-KLD state; and each map's 10th
  percentile (its background level, wherever it rests).

Writes ``reports/benchmarks/ema_mix.json`` (medians and quartiles) and prints them.

Usage: python benchmarks/ema_mix.py [--workspace DIR] [--mix 0.5] [--tol 0.01] [--output FILE]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from semipkd.config import load_params  # noqa: E402  (after the sys.path insert above: this checkout's semipkd when run as a script)
from semipkd.data import PreparedDataset, PreparedImages  # noqa: E402  (after the sys.path insert above: this checkout's semipkd when run as a script)
from semipkd.engine import mix_with_ema  # noqa: E402  (after the sys.path insert above: this checkout's semipkd when run as a script)
from semipkd.io import atomic_write_json, sha256_file  # noqa: E402  (after the sys.path insert above: this checkout's semipkd when run as a script)
from semipkd.models import load_model  # noqa: E402  (after the sys.path insert above: this checkout's semipkd when run as a script)
from semipkd.pseudolabel import PseudoLabelCache  # noqa: E402  (after the sys.path insert above: this checkout's semipkd when run as a script)


def _quartiles(x: np.ndarray) -> dict:
    q1, med, q3 = np.percentile(x, [25, 50, 75])
    return {"median": float(med), "q1": float(q1), "q3": float(q3), "n": int(x.size)}


@torch.inference_mode()
def _predict(model, images: torch.Tensor, size=None, batch: int = 16) -> torch.Tensor:
    if size is not None:
        model.output_size = tuple(size)
    return torch.cat([model(images[i : i + batch]).float() for i in range(0, len(images), batch)])


def predict_with_dead_share(model, images: torch.Tensor, size=None,
                            batch: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's maps and, per image, the share of decoder pixels whose ``refine`` features are
    all exactly 0 (so the bias-free head's logit there is 0 once its 3x3 neighbours are dead too),
    from one forward pass."""
    shares = []
    handle = model.decoder.refine.register_forward_hook(
        lambda mod, inp, out: shares.append((out.abs().amax(dim=1) == 0).flatten(1).float().mean(dim=1)))
    try:
        maps = _predict(model, images, size, batch)
    finally:
        handle.remove()
    return maps, torch.cat(shares)


def dead_head_share(model, images: torch.Tensor, batch: int = 16) -> torch.Tensor:
    """Per image, the dead ``refine`` pixel share of :func:`predict_with_dead_share`."""
    return predict_with_dead_share(model, images, batch=batch)[1]


def half_background_share(maps: torch.Tensor, tol: float = 0.01) -> torch.Tensor:
    """Per map (N, H, W), the share of pixels within ``tol`` of 0.5: the bias-free head's
    resting output sigmoid(~0), whatever the decoder's activation."""
    if maps.ndim != 3:
        raise ValueError(f"maps must be (N, H, W), got {tuple(maps.shape)}")
    return ((maps.float() - 0.5).abs() <= tol).flatten(1).float().mean(dim=1)


def background_level(maps: torch.Tensor, q: float = 0.1) -> torch.Tensor:
    """Per map (N, H, W), its ``q`` quantile: where the map's background rests (near 0.5 in the
    students' high-KLD state, near 0 out of it)."""
    if maps.ndim != 3:
        raise ValueError(f"maps must be (N, H, W), got {tuple(maps.shape)}")
    return torch.quantile(maps.flatten(1).float(), q, dim=1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workspace", default=".", help="a finished run's repo folder (params.yaml, models/, data/)")
    ap.add_argument("--mix", type=float, default=None, help="ema_mix (default: distill.ema_mix of its params)")
    ap.add_argument("--tol", type=float, default=0.01, help="half-background: |map - 0.5| <= tol")
    ap.add_argument("--output", default=str(ROOT / "reports/benchmarks/ema_mix.json"))
    args = ap.parse_args(argv)
    ws = Path(args.workspace)
    params = load_params(ws / "params.yaml")
    mix = params.distill.ema_mix if args.mix is None else args.mix
    torch.set_grad_enabled(False)
    cache = PseudoLabelCache(ws / "data/pseudo", teacher_sha256=sha256_file(ws / "models/teacher.pt"))
    pool = PreparedImages(ws / "data/prepared/unlabeled/all")
    size = params.prepare.output_size
    teacher_maps = torch.nn.functional.interpolate(
        torch.from_numpy(np.stack([cache[i] for i in range(len(cache))]))[:, None], size=tuple(size), mode="bilinear",
        align_corners=False)[:, 0].clamp(0, 1)
    images = torch.stack([pool[i]["image"] for i in range(len(pool))])
    student = load_model(ws / "models/student.pt").eval()
    ema_proxy = _predict(student, images, size)
    raw = mix_with_ema(teacher_maps, ema_proxy, mix, "raw")
    share_raw = (mix * teacher_maps.sum(dim=(1, 2)) / raw.sum(dim=(1, 2))).numpy()
    teacher = load_model(ws / "models/teacher.pt").eval()
    val = PreparedDataset(ws / "data/prepared" / params.data.labelled / "val")
    val_images = val_images_student = torch.stack([val[i]["image"] for i in range(len(val))])
    t_in, _ = params.prepare.teacher_sizes()
    if tuple(val_images.shape[-2:]) != tuple(t_in):
        val_images = torch.nn.functional.interpolate(val_images, size=tuple(t_in), mode="bilinear", align_corners=False)
    teacher_val = _predict(teacher, val_images, size)
    dead, half, floor = {}, {}, {}
    for name in ("student", "student_no_pseudo"):
        if (ws / "models" / f"{name}.pt").is_file():
            model = load_model(ws / "models" / f"{name}.pt").eval()
            maps, dead_share = predict_with_dead_share(model, val_images_student, size)
            dead[name] = _quartiles(dead_share.numpy())
            half[name] = _quartiles(half_background_share(maps, args.tol).numpy())
            floor[name] = _quartiles(background_level(maps).numpy())
    out = {
        "workspace_params": {"data.labelled": params.data.labelled, "prepare.output_size": list(size), "ema_mix": mix},
        "teacher_peak_pool": _quartiles(teacher_maps.amax(dim=(1, 2)).numpy()),
        "teacher_peak_labelled_val": _quartiles(teacher_val.amax(dim=(1, 2)).numpy()),
        "ema_proxy_floor_pool": _quartiles(ema_proxy.amin(dim=(1, 2)).numpy()),
        "teacher_mass_share_raw": _quartiles(share_raw),
        "teacher_mass_share_normalized": mix,
        "students_dead_decoder_pixel_share_val": dead,
        "students_half_background_share_val": {"tol": args.tol, **half},
        "students_map_p10_val": floor,
        "note": "EMA proxy = the final student (models/student.pt); the EMA itself is not kept after a run",
    }
    atomic_write_json(Path(args.output), out)
    for k, v in out.items():
        print(f"{k}: {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
