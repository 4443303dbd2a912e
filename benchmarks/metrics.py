"""Speed of ``semipkd.metrics`` against pysaliency 0.2.22, side by side in one run.

The workload is the issue's: a batch of 64 saliency maps of 480x640 (smooth blob maps, float64
as evaluation uses), about 200 fixated pixels per image drawn from a separate ground-truth
density, shuffled-AUC negatives from the union of 10 other images' fixations (about 2,000
locations), and a Gaussian center bias as the info-gain baseline.

* semipkd: each of the eight metrics on the whole batch, median of ``--repeats`` runs after a
  warm-up, with torch's default intra-op thread count and with one thread (on a loaded machine
  the default threads' spinning can cost more than it gains; the 1-minute load average before
  each run is recorded), in float64 and float32.
* pysaliency: its per-image functions on the first ``--reference-images`` images (pysaliency
  works image by image; the per-image time is what is compared): ``metrics.CC``,
  ``metrics.MIT_KLDiv``, ``metrics.SIM``, ``metrics.NSS``, and for the AUCs ``roc.general_roc``
  with the negatives its model API builds (AUC-Judd with ``jitter=False``: unfixated pixels,
  thresholds at fixations; AUC-Borji's counterpart: all pixels; sAUC: the other images'
  locations), info gain as its ``SaliencyMapNormalizingModel`` log densities. These are the
  calls its model API makes per image, without its bookkeeping, so its times are if anything
  flattered.
* memory: the peak resident memory added while semipkd scores the batch (Linux: VmHWM after
  resetting it through ``/proc/self/clear_refs``), and on a GPU ``max_memory_allocated``.
* GPU (when one is present): the whole suite's images per second on the batch.

Targets (the issue's): AUC-Judd at least 3x faster per image than pysaliency's, the whole suite
at least 2x faster, at least 1,000 images/s on a GPU. Writes ``reports/benchmarks/metrics.json``.

    .venv/bin/python benchmarks/metrics.py [--repeats 3] [--reference-images 8]
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from semipkd import metrics as M  # noqa: E402  (after the sys.path insert above: this checkout's semipkd when run as a script)
from semipkd.io import atomic_write_json  # noqa: E402  (after the sys.path insert above: this checkout's semipkd when run as a script)

log = logging.getLogger("benchmarks.metrics")

B, H, W = 64, 480, 640
FIXATIONS, OTHER_IMAGES = 200, 10


def make_data(seed: int = 0) -> dict[str, torch.Tensor]:
    """Float64 predictions and densities (sums of 5 Gaussian blobs), bool fixation maps."""
    g = torch.Generator().manual_seed(seed)
    yy = torch.arange(H, dtype=torch.float64)[:, None]
    xx = torch.arange(W, dtype=torch.float64)[None, :]

    def blobs() -> torch.Tensor:
        out = torch.zeros(B, H, W, dtype=torch.float64)
        for _ in range(5):
            cy = torch.rand(B, 1, 1, generator=g, dtype=torch.float64) * H
            cx = torch.rand(B, 1, 1, generator=g, dtype=torch.float64) * W
            s = 20 + 60 * torch.rand(B, 1, 1, generator=g, dtype=torch.float64)
            out += torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
        # rescaled to [0, 1] with minimum exactly 0, where pysaliency's SIM equals the benchmark's
        out = out - out.amin((1, 2), keepdim=True)
        return out / out.amax((1, 2), keepdim=True)

    pred, density = blobs(), blobs()
    idx = torch.multinomial(density.flatten(1), FIXATIONS, replacement=True, generator=g)
    fix = torch.zeros(B, H * W, dtype=torch.bool)
    fix.scatter_(1, idx, True)
    fix = fix.view(B, H, W)
    other = torch.zeros_like(fix)
    for i in range(B):
        for j in range(1, OTHER_IMAGES + 1):
            other[i] |= fix[(i + j) % B]
    baseline = torch.exp(-((yy - H / 2) ** 2 / (2 * (H / 4) ** 2) + (xx - W / 2) ** 2 / (2 * (W / 4) ** 2)))
    return {"pred": pred, "density": density, "fix": fix, "other": other, "baseline": baseline}


def semipkd_suite(d: dict[str, torch.Tensor]) -> dict:
    """name -> zero-argument callable scoring the whole batch."""
    p, q, f, o, b = d["pred"], d["density"], d["fix"], d["other"], d["baseline"]
    return {
        "cc": lambda: M.cc(p, q),
        "kld": lambda: M.kld(p, q),
        "sim": lambda: M.sim(p, q),
        "nss": lambda: M.nss(p, f),
        "auc_judd": lambda: M.auc_judd(p, f),
        "auc_borji": lambda: M.auc_borji(p, f, torch.Generator(device=p.device).manual_seed(0)),
        "sauc": lambda: M.sauc(p, f, o, torch.Generator(device=p.device).manual_seed(0)),
        "info_gain": lambda: M.info_gain(p, f, b),
    }


def time_semipkd(d: dict[str, torch.Tensor], repeats: int, sync=lambda: None) -> dict[str, float]:
    """Median seconds per batch for each metric (after one warm-up call)."""
    out = {}
    for name, fn in semipkd_suite(d).items():
        fn()
        sync()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - t0)
        out[name] = statistics.median(times)
    return out


def pysaliency_suite(d: dict[str, torch.Tensor], i: int) -> dict:
    """name -> zero-argument callable scoring image ``i`` with pysaliency's functions."""
    from pysaliency import metrics as PM
    from pysaliency.roc import general_roc
    from pysaliency.saliency_map_models import _get_unfixated_values

    p, q, b = d["pred"][i].numpy(), d["density"][i].numpy(), d["baseline"].numpy()
    ys, xs = np.nonzero(d["fix"][i].numpy())
    oys, oxs = np.nonzero(d["other"][i].numpy())

    def info_gain():
        own = np.log(PM.convert_saliency_map_to_density(p, minimum_value=0.0))
        base = np.log(PM.convert_saliency_map_to_density(b, minimum_value=0.0))
        return ((own[ys, xs] - base[ys, xs]) / np.log(2)).mean()

    return {
        "cc": lambda: PM.CC(p, q),
        "kld": lambda: PM.MIT_KLDiv(p, q),
        "sim": lambda: PM.SIM(p, q),
        "nss": lambda: PM.NSS(p, xs, ys).mean(),
        "auc_judd": lambda: general_roc(p[ys, xs], _get_unfixated_values(p, ys, xs), judd=1)[0],
        "auc_borji": lambda: general_roc(p[ys, xs], p.flatten())[0],
        "sauc": lambda: general_roc(p[ys, xs], p[oys, oxs])[0],
        "info_gain": info_gain,
    }


def time_pysaliency(d: dict[str, torch.Tensor], n: int) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Mean seconds per image for each metric over images 0..n-1 (after a warm-up on image 0)."""
    for fn in pysaliency_suite(d, 0).values():
        fn()
    totals = dict.fromkeys(M.METRIC_NAMES, 0.0)
    values: dict[str, list[float]] = {k: [] for k in M.METRIC_NAMES}
    for i in range(n):
        for name, fn in pysaliency_suite(d, i).items():
            t0 = time.perf_counter()
            values[name].append(float(fn()))
            totals[name] += time.perf_counter() - t0
    return {k: v / n for k, v in totals.items()}, values


def peak_rss_delta(fn) -> int | None:
    """Bytes of resident memory added at the peak while ``fn`` runs (Linux only, else None)."""
    status = Path("/proc/self/status")
    try:
        gc.collect()
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    except OSError:
        return None

    def read(key: str) -> int:
        for line in status.read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
        raise KeyError(key)

    before = read("VmRSS")
    fn()
    return read("VmHWM") - before


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--reference-images", type=int, default=8, help="images pysaliency scores (per-image times)")
    ap.add_argument("--out", type=Path, default=ROOT / "reports" / "benchmarks" / "metrics.json")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated")  # pysaliency's import
    warnings.filterwarnings("ignore", message="`trapz` is deprecated")
    warnings.filterwarnings("ignore", message="divide by zero encountered in log")  # log(0) in pysaliency

    data = make_data()
    k = data["fix"].flatten(1).sum(1).double()
    m = data["other"].flatten(1).sum(1).double()
    log.info("batch %dx%dx%d float64, fixated pixels per image %.1f (min %d), other-image locations %.0f",
             B, H, W, k.mean(), int(k.min()), m.mean())
    default_threads = torch.get_num_threads()
    result: dict = {
        "workload": {"batch": B, "size": [H, W], "dtype": "float64", "fixations_per_image_mean": k.mean().item(),
                     "other_locations_per_image_mean": m.mean().item(), "reference_images": args.reference_images,
                     "repeats": args.repeats},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                    "default_threads": default_threads},
        "cpu": {},
    }

    # semipkd on the CPU: default threads and one thread, float64 and float32
    for threads in sorted({default_threads, 1}, reverse=True):
        torch.set_num_threads(threads)
        for dtype in (torch.float64, torch.float32):
            d = dict(data)
            for key in ("pred", "density", "baseline"):
                d[key] = data[key].to(dtype)
            load = os.getloadavg()[0]
            secs = time_semipkd(d, args.repeats)
            tag = f"threads_{threads}_{str(dtype).removeprefix('torch.')}"
            result["cpu"][tag] = {
                "load_average_1min_before": load,
                "batch_s": secs,
                "per_image_ms": {n: 1000 * s / B for n, s in secs.items()},
                "suite_per_image_ms": 1000 * sum(secs.values()) / B,
            }
            log.info("semipkd %-20s suite %.2f ms/image (load %.1f): %s", tag, 1000 * sum(secs.values()) / B, load,
                     ", ".join(f"{n} {1000 * s / B:.2f}" for n, s in secs.items()))
    torch.set_num_threads(default_threads)

    # pysaliency, image by image (numpy, single-threaded)
    load = os.getloadavg()[0]
    ref_secs, ref_values = time_pysaliency(data, args.reference_images)
    ref_suite = sum(ref_secs.values())
    result["pysaliency"] = {
        "load_average_1min_before": load,
        "per_image_ms": {n: 1000 * s for n, s in ref_secs.items()},
        "suite_per_image_ms": 1000 * ref_suite,
    }
    log.info("pysaliency suite %.2f ms/image (load %.1f): %s", 1000 * ref_suite, load,
             ", ".join(f"{n} {1000 * s:.2f}" for n, s in ref_secs.items()))

    # the same numbers, where the definitions agree (a check that like is timed against like)
    n = args.reference_images
    sub = {key: (v[:n] if key != "baseline" else v) for key, v in data.items()}
    ours = {name: fn().numpy() for name, fn in semipkd_suite(sub).items()}
    npx = H * W
    agreement = {
        "cc": float(np.abs(ours["cc"] - ref_values["cc"]).max()),
        "kld": float(np.abs(ours["kld"] - ref_values["kld"]).max()),
        "sim": float(np.abs(ours["sim"] - ref_values["sim"]).max()),  # all minima are 0 here
        "nss_times_sqrt_n_over_n_minus_1": float(
            np.abs(ours["nss"] * np.sqrt(npx / (npx - 1)) - ref_values["nss"]).max()),
        "auc_judd": float(np.abs(ours["auc_judd"] - ref_values["auc_judd"]).max()),
    }
    result["max_abs_difference_to_pysaliency"] = agreement
    log.info("max |semipkd - pysaliency| on the reference images: %s", agreement)

    # ratios: pysaliency's per-image time over semipkd's, for each semipkd configuration
    ratios = {}
    for tag, r in result["cpu"].items():
        ratios[tag] = {name: 1000 * ref_secs[name] / r["per_image_ms"][name] for name in M.METRIC_NAMES}
        ratios[tag]["suite"] = 1000 * ref_suite / r["suite_per_image_ms"]
    result["speedup_vs_pysaliency"] = ratios
    best = max(ratios, key=lambda t: ratios[t]["suite"])
    f64 = [t for t in ratios if t.endswith("float64")]
    best64 = max(f64, key=lambda t: ratios[t]["suite"])
    result["targets"] = {
        "auc_judd_speedup_at_least_3": {"config": best64, "value": ratios[best64]["auc_judd"],
                                        "met": ratios[best64]["auc_judd"] >= 3},
        "suite_speedup_at_least_2": {"config": best64, "value": ratios[best64]["suite"],
                                     "met": ratios[best64]["suite"] >= 2},
    }
    for tag in ratios:
        log.info("speed-up vs pysaliency, %-20s suite %.1fx, auc_judd %.1fx", tag, ratios[tag]["suite"],
                 ratios[tag]["auc_judd"])
    log.info("fastest CPU configuration: %s", best)

    # memory: peak resident memory added while scoring the float64 batch once
    peak = peak_rss_delta(lambda: [fn() for fn in semipkd_suite(data).values()])
    result["memory"] = {
        "cpu_peak_rss_added_mib": None if peak is None else peak / 2**20,
        "input_batch_mib": sum(t.numel() * t.element_size() for t in data.values()) / 2**20,
    }
    log.info("peak resident memory added while scoring the float64 batch: %s MiB (inputs %.0f MiB)",
             "n/a" if peak is None else f"{peak / 2**20:.0f}", result["memory"]["input_batch_mib"])

    if torch.cuda.is_available():
        dev = torch.device("cuda")
        d = {key: v.to(dev) for key, v in data.items()}
        torch.cuda.reset_peak_memory_stats(dev)
        base_mem = torch.cuda.memory_allocated(dev)
        secs = time_semipkd(d, max(args.repeats, 5), sync=torch.cuda.synchronize)
        total = sum(secs.values())
        result["gpu"] = {
            "device": torch.cuda.get_device_name(dev),
            "batch_s": secs,
            "suite_images_per_s": B / total,
            "peak_memory_added_mib": (torch.cuda.max_memory_allocated(dev) - base_mem) / 2**20,
            "target_1000_images_per_s_met": B / total >= 1000,
        }
        log.info("GPU %s: suite %.0f images/s, peak memory added %.0f MiB", result["gpu"]["device"], B / total,
                 result["gpu"]["peak_memory_added_mib"])
    else:
        result["gpu"] = None
        log.info("no GPU on this machine: the 1,000 images/s target is not measured")

    atomic_write_json(args.out, result)
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
