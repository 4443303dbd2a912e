"""Speed of the data layer on this machine's CPU.

1. ``loader``: samples per second delivered to the training loop, side by side on the same
   images, the same sizes and the same DataLoader settings:

   * ``decode``: the paper's way -- every epoch decodes the stimulus JPEG and the saliency and
     fixation PNGs and resizes them (``open_benchmark`` + the shared resize functions);
   * ``cache``: :class:`semipkd.data.PreparedDataset` over the prepared cache (memory-mapped
     uint8 arrays, no decoding).

   Both flip image and maps at random; measured with 0 and 2 DataLoader workers over one epoch
   after a warm-up epoch, from its first batch to its last (the steady rate of a long epoch; the
   wait for the first batch, worker start-up included, is reported beside it), batch size 16,
   one torch thread in the main process (see main()). Images: the real OSIE copy in ../shared/datasets/osie (800x600
   JPEGs, written once in the paper's repo layout with PNG maps so that the decode path reads
   what the paper's loader reads), or generated 800x600 JPEGs when it is absent.

2. ``prepare_memory``: peak resident memory of ``prepare_unlabeled`` at two pool sizes (the
   real scene-unlabeled pool, up to 2048x1536 images, and the same images four times over),
   each in a fresh process. Flat memory means the two peaks are about equal.

Writes ``reports/benchmarks/data.json`` (atomically) and prints the figures.

    .venv/bin/python benchmarks/data.py [--images 200] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from semipkd.data import (  # noqa: E402  (after the sys.path insert above: this checkout's semipkd when run as a script)
    PreparedDataset,
    augment_pair,
    augmentation_rng,
    open_benchmark,
    prepare_benchmark,
    rescale_fixations,
    resize_density,
    resize_image,
)
from semipkd.io import atomic_write_json  # noqa: E402  (after the sys.path insert above: this checkout's semipkd when run as a script)

SHARED = ROOT.parent / "shared" / "datasets"
SIZE = (384, 384)  # the paper's fine-tuning benchmarks: 384x384 in and out


def build_repo_copy(dest: Path, n: int) -> str:
    """Write ``n`` images in the paper's repo layout (stimuli JPEG, saliency/fixations PNG)."""
    src = SHARED / "osie"
    if (src / "eye" / "fixations.mat").is_file():
        ds = open_benchmark("osie", src, "all")
        for i in range(min(n, len(ds))):
            s = ds[i]
            (dest / "stimuli").mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ds.files(i)["stimulus"], dest / "stimuli" / f"{s.name}.jpg")  # the same JPEG bytes
            _save_maps(dest, s.name, s.density, s.fixations)
        return f"real OSIE ({min(n, len(ds))} of {len(ds)} images, 800x600)"
    rng = np.random.default_rng(0)
    for i in range(n):
        name = f"g{i:04d}"
        yy, xx = np.mgrid[0:600, 0:800]
        img = np.stack([(xx * (i + 1)) % 256, (yy * 3) % 256, (xx + yy + i) % 256], -1).astype(np.uint8)
        img = (img * 0.7 + rng.integers(0, 77, img.shape)).astype(np.uint8)
        (dest / "stimuli").mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(dest / "stimuli" / f"{name}.jpg", quality=90)
        fix = np.zeros((600, 800), bool)
        fix[rng.integers(0, 600, 140), rng.integers(0, 800, 140)] = True
        dens = np.exp(-((yy - 300) ** 2 + (xx - 400) ** 2) / (2 * 150.0 ** 2)).astype(np.float32)
        _save_maps(dest, name, dens, fix)
    return f"generated ({n} JPEGs, 800x600; real OSIE not found)"


def _save_maps(dest: Path, name: str, density: np.ndarray, fixations: np.ndarray) -> None:
    for sub in ("saliency", "fixations"):
        (dest / sub).mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.rint(density * 255).astype(np.uint8)).save(dest / "saliency" / f"{name}.png")
    Image.fromarray(fixations.astype(np.uint8) * 255).save(dest / "fixations" / f"{name}.png")


class DecodeEachEpoch(Dataset):
    """The paper's way: decode the files and resize them on every access."""

    def __init__(self, root: Path, size, seed: int = 0):
        self.ds = open_benchmark("osie", root, "all")
        self.size = size
        self.seed = seed
        self.epoch = 0

    def __len__(self):
        return len(self.ds)

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __getitem__(self, i):
        s = self.ds[i]
        image = torch.from_numpy(resize_image(s.image, self.size)).permute(2, 0, 1)
        density = torch.from_numpy(resize_density(s.density, self.size))
        fix = torch.from_numpy(rescale_fixations(s.fixations, self.size).astype(np.float32))
        image, (density, fix) = augment_pair(image, (density, fix), hflip=True, photometric=False,
                                             rng=augmentation_rng(self.seed, self.epoch, i))
        return {"image": image, "density": density, "fixations": fix, "index": i}


def epoch_rate(ds, workers: int, batch_size: int = 16) -> tuple[float, float]:
    """(samples per second, seconds to the first batch) of one epoch, after a warm-up epoch.

    The rate runs from the first batch to the last, so it is the steady state that a long
    epoch (SALICON: 10,000 images) sees; starting the workers is reported separately.
    """
    loader = DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers,
                        generator=torch.Generator().manual_seed(0))
    for epoch in range(2):
        ds.set_epoch(epoch)
        t0 = time.perf_counter()
        first, n_first, n = None, 0, 0
        for batch in loader:
            n += len(batch["index"])
            if first is None:
                first, n_first = time.perf_counter(), n
        end = time.perf_counter()
    return (n - n_first) / (end - first), first - t0


def bench_loader(n_images: int, tmp: Path) -> dict:
    repo = tmp / "osie_repo"
    source = build_repo_copy(repo, n_images)
    t0 = time.perf_counter()
    prepare_benchmark("osie", repo, tmp / "prepared", input_size=SIZE, output_size=SIZE, splits=("all",),
                      progress=False)
    prep_s = time.perf_counter() - t0
    decode = DecodeEachEpoch(repo, SIZE)
    cache = PreparedDataset(tmp / "prepared" / "all", hflip=True)
    out = {"source": source, "images": len(cache), "size": list(SIZE), "batch_size": 16,
           "prepare_seconds": round(prep_s, 2), "workers": {}}
    for workers in (0, 2):
        d, d_start = epoch_rate(decode, workers)
        c, c_start = epoch_rate(cache, workers)
        out["workers"][str(workers)] = {"decode_samples_per_s": round(d, 1), "cache_samples_per_s": round(c, 1),
                                        "speedup": round(c / d, 2), "decode_first_batch_s": round(d_start, 3),
                                        "cache_first_batch_s": round(c_start, 3)}
        print(f"  workers={workers}: decode each epoch {d:8.1f} samples/s | prepared cache {c:8.1f} samples/s "
              f"| cache/decode = {c / d:5.1f}x   (first batch after {d_start:.2f} s / {c_start:.2f} s)", flush=True)
    return out


_MEMORY_CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
from semipkd.data import prepare_unlabeled

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024  # kB -> MiB
    raise KeyError(key)

# Reset the kernel's peak-RSS mark so the import of torch & co. does not hide prepare's peak.
with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5")
before = status("VmRSS")
t0 = time.perf_counter()
rows = prepare_unlabeled(sys.argv[2], sys.argv[3], input_size=(288, 384), progress=False)
secs = time.perf_counter() - t0
print(json.dumps({"images": len(rows), "rss_before_mib": before, "peak_mib": status("VmHWM"),
                  "peak_over_before_mib": status("VmHWM") - before, "seconds": secs}))
"""


def build_pool(dest: Path, copies: int, limit: int | None) -> tuple[str, int]:
    """A pool of ``copies`` x the real scene images (symlinks), or generated JPEGs if absent."""
    src = SHARED / "scene-unlabeled" / "images"
    files = sorted(src.glob("*.jpg")) if src.is_dir() else []
    if limit:
        files = files[:limit]
    if not files:
        rng = np.random.default_rng(0)
        gen = dest.parent / "generated"
        gen.mkdir(exist_ok=True)
        for i in range(limit or 200):
            p = gen / f"{i:04d}.jpg"
            if not p.exists():
                Image.fromarray(rng.integers(0, 256, (768, 1024, 3), dtype=np.uint8)).save(p, quality=90)
        files = sorted(gen.glob("*.jpg"))
        label = "generated 1024x768 JPEGs"
    else:
        label = "real scene-unlabeled images (256x256 to 2048x1536)"
    for c in range(copies):
        d = dest / f"copy{c}"
        d.mkdir(parents=True)
        for f in files:
            (d / f.name).symlink_to(f)
    return label, len(files) * copies


def bench_memory(tmp: Path, limit: int | None) -> dict:
    out = {"input_size": [288, 384], "runs": []}
    for copies in (1, 4):
        pool = tmp / f"pool{copies}"
        label, n = build_pool(pool, copies, limit)
        res = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, str(ROOT), str(pool), str(tmp / f"prep{copies}")],
                             check=True, capture_output=True, text=True)
        r = json.loads(res.stdout.strip().splitlines()[-1])
        r = {k: round(v, 1) if isinstance(v, float) else v for k, v in r.items()}
        out["source"] = label
        out["runs"].append(r)
        print(f"  pool of {r['images']:5d} images: peak RSS {r['peak_mib']:7.1f} MiB, {r['peak_over_before_mib']:6.1f} MiB "
              f"above the RSS before prepare ({r['rss_before_mib']:.1f} MiB); {r['images'] / r['seconds']:.1f} images/s",
              flush=True)
        shutil.rmtree(tmp / f"prep{copies}", ignore_errors=True)  # free the disk before the next size
    a, b = out["runs"]
    out["peak_ratio_large_over_small"] = round(b["peak_mib"] / a["peak_mib"], 3)
    out["growth_ratio_large_over_small"] = round(b["peak_over_before_mib"] / max(a["peak_over_before_mib"], 1e-9), 3)
    out["pool_size_ratio"] = round(b["images"] / a["images"], 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=200, help="images in the loader comparison (default 200)")
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    args = ap.parse_args()
    n_images = 48 if args.quick else args.images
    limit = 60 if args.quick else None
    torch.manual_seed(0)
    # One torch thread in this process: collate (torch.stack of the batch) with OpenMP threads that
    # spin-wait degrades 10x when other processes share the two cores, which would measure the
    # machine's load rather than the data path. DataLoader workers use one thread anyway.
    torch.set_num_threads(1)
    report = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
                          "platform": platform.platform(), "torch_threads": torch.get_num_threads(),
                          "load_average_at_start": [round(v, 2) for v in os.getloadavg()]}}
    with tempfile.TemporaryDirectory(prefix="semipkd-bench-data-") as tmp:
        tmp = Path(tmp)
        print(f"loader: samples/s into the training loop, {SIZE[0]}x{SIZE[1]} in and out, hflip on")
        report["loader"] = bench_loader(n_images, tmp)
        print("prepare_unlabeled: peak memory at two pool sizes")
        report["prepare_memory"] = bench_memory(tmp, limit)
    report["machine"]["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    speedups = [w["speedup"] for w in report["loader"]["workers"].values()]
    report["summary"] = {"min_speedup": min(speedups), "speedup_target": 3.0, "speedup_met": min(speedups) >= 3.0,
                         "peak_memory_ratio": report["prepare_memory"]["peak_ratio_large_over_small"],
                         "prepare_memory_growth_ratio": report["prepare_memory"]["growth_ratio_large_over_small"]}
    dest = ROOT / "reports" / "benchmarks" / "data.json"
    atomic_write_json(dest, report)
    print(f"summary: cache/decode >= {min(speedups):.1f}x (target 3x); peak RSS x{report['summary']['peak_memory_ratio']}"
          f" (prepare's own growth x{report['summary']['prepare_memory_growth_ratio']}) for a "
          f"x{report['prepare_memory']['pool_size_ratio']} pool")
    print(f"wrote {dest.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
