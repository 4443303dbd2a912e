"""The README's figure of a trained real-data student at work: ``python -m semipkd.predict`` run
on real val photos, shown beside the ground truth.

    python benchmarks/predict_figure.py --model models/finetune/eyecrowd/student.pt \
        --dataset eyecrowd --root ../shared/datasets/eyecrowd --images 2 --output docs/figures/predict_eyecrowd.png

The photos are the first ``--images`` of the dataset's val split (never seen in training); the
maps are the PNGs that the predict command writes (original size, 8-bit); the ground truth is the
density the readers build from the observers' fixations. Each panel's title gives the map's CC
with the ground truth.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from semipkd import metrics  # noqa: E402  (after the sys.path insert above: this checkout's semipkd when run as a script)
from semipkd.data import open_benchmark  # noqa: E402  (after the sys.path insert above: this checkout's semipkd when run as a script)
from semipkd.report import _save, plt  # noqa: E402  (after the sys.path insert above; _save: the report's atomic PNG writer)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--dataset", default="eyecrowd")
    ap.add_argument("--root", required=True)
    ap.add_argument("--images", type=int, default=2)
    ap.add_argument("--output", required=True)
    args = ap.parse_args(argv)
    val = open_benchmark(args.dataset, args.root, "val")
    samples = [val[i] for i in range(args.images)]
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "in", Path(tmp) / "out"
        src.mkdir()
        for s in samples:
            (src / f"{s.name}.jpg").symlink_to(Path(val.files(val.names.index(s.name))["stimulus"]).resolve())
        cmd = [sys.executable, "-m", "semipkd.predict", "--model", args.model, "--input", str(src), "--output", str(out),
               "--backend", "torch"]
        print("$", " ".join(cmd[1:]))
        subprocess.run(cmd, check=True)
        import cv2

        maps = [cv2.imread(str(out / f"{s.name}.png"), cv2.IMREAD_GRAYSCALE).astype(np.float64) / 255.0 for s in samples]
    fig, axes = plt.subplots(len(samples), 3, figsize=(10, 2.6 * len(samples)), squeeze=False)
    for row, s, m in zip(axes, samples, maps, strict=True):
        cc = float(metrics.cc(m[None], s.density[None].astype(np.float64))[0])
        titles = (f"{args.dataset} val {s.name}", f"predicted (CC {cc:.3f})", "ground truth")
        for ax, img, title in zip(row, (s.image, m, s.density), titles, strict=True):
            ax.imshow(img, cmap=None if img.ndim == 3 else "magma")
            ax.set_title(title, fontsize=9)
            ax.axis("off")
    fig.suptitle(f"python -m semipkd.predict --model {args.model}", fontsize=9)
    _save(fig, args.output)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
