"""What storing pseudo-labels smaller than the student's output costs, on real saliency maps.

The OSIE study's students work at 192x192 and their pseudo-labels are stored at 96x96
(``pseudolabel.store_size``). This takes real OSIE ground-truth densities as stand-ins for teacher
maps (both are smooth blobs; the teacher's maps are blurred once more by its eval-mode 11-px blur,
so they are, if anything, smoother), resizes each to the output size the way the data are prepared
(:func:`semipkd.data.resize.resize_density`), stores it with :func:`semipkd.pseudolabel.quantize_maps`
and reads it back as ``PseudoDataset`` does (:func:`dequantize_maps`, bilinear up to the output
size). Per map it reports the CC of

* ``at_store``: the stored uint8 map against the float map shrunk to the store size (the
  quantisation alone);
* ``round_trip``: the map the student is trained on against the float map at the output size
  (shrink, quantisation and growth together).

    python benchmarks/store_size_cc.py --root ../shared/datasets/osie --split val \
        --output-size 192 192 --store-size 96 96
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from semipkd import metrics  # noqa: E402  (after the sys.path insert above: this checkout's semipkd when run as a script)
from semipkd.data.benchmarks import open_benchmark  # noqa: E402  (after the sys.path insert above: this checkout's semipkd when run as a script)
from semipkd.data.resize import resize_density  # noqa: E402  (after the sys.path insert above: this checkout's semipkd when run as a script)
from semipkd.pseudolabel import dequantize_maps, quantize_maps  # noqa: E402  (after the sys.path insert above: this checkout's semipkd when run as a script)


def store_cc(maps: torch.Tensor, store_size: tuple[int, int]) -> dict[str, np.ndarray]:
    """``maps``: float32 (B, H, W) at the output size. Per-map CC ``{"at_store", "round_trip"}``."""
    q, ranges = quantize_maps(maps, store_size)
    stored = torch.from_numpy(dequantize_maps(q, ranges))
    shrunk = F.interpolate(maps[:, None], size=store_size, mode="bilinear", align_corners=False)[:, 0]
    grown = F.interpolate(stored[:, None], size=tuple(maps.shape[-2:]), mode="bilinear", align_corners=False)[:, 0]
    return {"at_store": metrics.cc(stored, shrunk).numpy(), "round_trip": metrics.cc(grown.clamp(0, 1), maps).numpy()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", required=True, help="the OSIE folder as distributed")
    ap.add_argument("--split", default="val")
    ap.add_argument("--output-size", type=int, nargs=2, default=(192, 192))
    ap.add_argument("--store-size", type=int, nargs=2, default=(96, 96))
    args = ap.parse_args(argv)
    data = open_benchmark("osie", args.root, args.split)
    maps = torch.from_numpy(np.stack([resize_density(s.density, args.output_size) for s in data]))
    got = store_cc(maps, tuple(args.store_size))
    summary = {"images": len(data), "output_size": list(args.output_size), "store_size": list(args.store_size)}
    for key, cc in got.items():
        summary[key] = {"min": float(cc.min()), "median": float(np.median(cc)), "mean": float(cc.mean())}
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
