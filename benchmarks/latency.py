"""CPU latency of the pipeline's models, for the ``CPU (ms)`` column of ``reports/tables.md``.

The ``report`` stage does not time anything: a timing changes on every run, and a DVC output
that changes on every run makes ``dvc.lock`` dirty although every model is bit-identical. It
reads the figures this script writes to ``reports/benchmarks/latency.json`` (a committed file,
declared as a dependency of ``report``), keyed by backbone, width and input size.

Measured: the eager model as built (random weights: latency does not depend on them), batch 1,
``report.latency_input_size`` of params.yaml (maps out at the same size), ``report.latency_repeats`` timed runs after 3
warm-up runs, median, at ``--threads`` intra-op threads (default 1, the deployment setting of
``benchmarks/models.py``). By default the teacher and student of the given params file are
measured; ``--backbone NAME --width W`` adds others. Entries for other models already in the
file are kept, so results of several configurations accumulate.

Usage: python benchmarks/latency.py [--params params.yaml] [--backbone NAME ...] [--width W]
       [--threads N] [--output reports/benchmarks/latency.json]
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import platform
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from semipkd.config import load_params  # noqa: E402  (after the sys.path insert above: this checkout's semipkd when run as a script)
from semipkd.io import atomic_write_json  # noqa: E402  (after the sys.path insert above: this checkout's semipkd when run as a script)
from semipkd.models import build_model  # noqa: E402  (after the sys.path insert above: this checkout's semipkd when run as a script)
from semipkd.models.cost import measure_latency  # noqa: E402  (after the sys.path insert above: this checkout's semipkd when run as a script)
from semipkd.report import LATENCY_FILE, load_latencies  # noqa: E402  (after the sys.path insert above: this checkout's semipkd when run as a script)

log = logging.getLogger("benchmarks.latency")


def measure(backbone: str, width: float, input_size: list[int], repeats: int) -> dict:
    """One entry: the eager model's median CPU latency at batch 1."""
    torch.manual_seed(0)
    model = build_model(backbone, width=width, output_size=tuple(input_size)).eval()
    x = torch.rand(1, 3, *input_size)
    ms = measure_latency(model, x, repeats=repeats, warmup=3)
    return {"backbone": backbone, "width": width, "input_size": list(input_size), "cpu_latency_ms": round(ms, 2)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--params", default="params.yaml", help="params file whose teacher/student and report sizes to use")
    ap.add_argument("--backbone", nargs="*", default=[], help="further backbones to measure (at --width)")
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--output", default=str(ROOT / LATENCY_FILE))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")

    params = load_params(args.params)
    size = [int(s) for s in params.report.latency_input_size]
    wanted = [(params.teacher.backbone, float(params.teacher.width)), (params.student.backbone, float(params.student.width))]
    wanted += [(b, float(args.width)) for b in args.backbone]
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # random weights give denormals that trained ones do not
    out = Path(args.output)
    fresh = []
    try:
        for backbone, width in dict.fromkeys(wanted):
            entry = measure(backbone, width, size, params.report.latency_repeats)
            log.info("%s (width %g) at %s: %.1f ms", backbone, width, "x".join(map(str, size)), entry["cpu_latency_ms"])
            fresh.append(entry)
    finally:  # leave the process as it was (the tests call main() in-process)
        torch.set_num_threads(threads)
        torch.set_flush_denormal(False)
    keys = {(e["backbone"], float(e["width"]), tuple(e["input_size"])) for e in fresh}
    kept = [e for e in load_latencies(out) if (e["backbone"], float(e["width"]), tuple(e["input_size"])) not in keys]
    entries = sorted(kept + fresh, key=lambda e: (e["backbone"], e["width"], e["input_size"]))
    atomic_write_json(out, {
        "setting": {
            "batch": 1,
            "threads": args.threads,
            "repeats": params.report.latency_repeats,
            "statistic": "median of timed runs after 3 warm-up runs, eager model, torch.inference_mode",
            "output_size": "the input size",
            "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "date": datetime.date.today().isoformat(),
        },
        "entries": entries,
    })
    log.info("wrote %d entries to %s", len(entries), out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
