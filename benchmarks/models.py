"""CPU latency of the students: eager PyTorch vs our optimised PyTorch path vs onnxruntime, one run.

Batch 1, 3x288x384 input, 480x640 output (the paper's SALICON setting), at 1 and 2 threads.
Three backends of the same network are timed in ONE interleaved run (eager, optimised,
onnxruntime, eager, optimised, onnxruntime, ...), so whatever else the machine is doing weighs
on all three alike, and every ratio divides by the eager median OF THIS RUN:

* ``eager``: the model as built (``build_model(...).eval()`` under ``inference_mode``), the
  paper code's architecture and outputs;
* ``optimized``: :func:`semipkd.models.optimize_for_inference` (trace, ``torch.jit.freeze`` with
  batch norm folded into the convolutions, channels-last), i.e. ``predict --backend torch``;
* ``onnxruntime``: the graph of :func:`semipkd.export.export_onnx` in
  :class:`semipkd.inference.OnnxRunner` (``ORT_ENABLE_ALL``, intra-op threads set, waiters
  sleeping), i.e. ``predict --backend onnxruntime``.

Reported per model and thread count: median, p10-p90 spread and IQR of each backend, and the
ratios ``median(backend) / median(eager)``. The targets (eeea_c2 <= 0.4x, mobilenet_v3_large and
efficientnet_b4 < 0.6x, at 1 thread) are judged on the fastest backend; a miss is stated in ms
and as a ratio, with a profile of where that backend's time goes (onnxruntime per op type and its
costliest nodes; torch.profiler's top operators for the optimised path). The paper code's
latencies measured on another day (eeea_c2 ~250 ms etc.) are printed as context only and never
divided by. Outputs of the two fast backends are checked against eager (max abs diff <= 1e-4).

Weights are random (no ImageNet files needed); random-init networks produce denormal activations
that trained ones do not, so flush-to-zero is on for torch (``torch.set_flush_denormal``).

Usage: python benchmarks/models.py [--runs N] [--names eeea_c2 ...] [--threads 1 2] [--output PATH]
Writes reports/benchmarks/models.json (atomically). About 4-6 minutes on 2 shared cores.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from semipkd.export import export_onnx  # noqa: E402
from semipkd.inference import OnnxRunner  # noqa: E402
from semipkd.io import atomic_write_json  # noqa: E402
from semipkd.models import build_model, count_macs, count_params, optimize_for_inference  # noqa: E402

log = logging.getLogger("benchmarks.models")

INPUT = (288, 384)
OUTPUT = (480, 640)
BACKENDS = ("eager", "optimized", "onnxruntime")
#: The paper's code on a 2-core CPU, batch 1, 3x288x384, measured on another day with another
#: thread setting: context for the reader, never a denominator here.
PAPER_CODE_MS_OTHER_DAY = {"eeea_c2": 250.0, "mobilenet_v3_large": 53.0, "efficientnet_b4": 420.0}
#: Fastest backend / eager at 1 thread, the project's goal for deployment: (limit, whether the
#: limit itself passes): eeea_c2 at or below 0.4x, the others strictly below 0.6x.
TARGET_RATIO = {"eeea_c2": (0.4, True), "mobilenet_v3_large": (0.6, False), "efficientnet_b4": (0.6, False)}
TOLERANCE = 1e-4


def _stats(ms: list[float]) -> dict:
    a = np.asarray(ms)
    p10, q1, med, q3, p90 = np.percentile(a, [10, 25, 50, 75, 90])
    return {"median_ms": float(med), "p10_ms": float(p10), "p90_ms": float(p90), "iqr_ms": float(q3 - q1),
            "min_ms": float(a.min()), "n": int(a.size)}


def interleaved(fns: dict, x: torch.Tensor, runs: int, warmup: int) -> dict[str, list[float]]:
    """Wall times (ms) of each fn(x), called in turn, ``warmup`` unmeasured rounds first."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    with torch.inference_mode():
        for i in range(warmup + runs):
            for k, fn in fns.items():
                t0 = time.perf_counter()
                fn(x)
                if i >= warmup:
                    times[k].append(1000.0 * (time.perf_counter() - t0))
    return times


def profile_onnxruntime(path: Path, x: torch.Tensor, threads: int, runs: int = 5) -> dict:
    """Where onnxruntime's time goes: ms per run by op type and for the costliest nodes."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.enable_profiling = True
    opts.profile_file_prefix = str(path.with_suffix(""))
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feed = {"image": x.numpy()}
    sess.run(None, feed)  # warm-up, excluded below by counting only the last `runs`
    for _ in range(runs):
        sess.run(None, feed)
    events = json.loads(Path(sess.end_profiling()).read_text())
    kernels = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    per_run = len(kernels) // (runs + 1)
    kernels = kernels[-per_run * runs:]
    by_op: collections.Counter = collections.Counter()
    by_node: collections.Counter = collections.Counter()
    for e in kernels:
        by_op[e["args"]["op_name"]] += e["dur"] / 1000.0 / runs
        by_node[e["name"].removesuffix("_kernel_time")] += e["dur"] / 1000.0 / runs
    total = sum(by_op.values())
    return {
        "kernel_ms_per_run": round(total, 2),
        "by_op_type_ms": {k: round(v, 2) for k, v in by_op.most_common(8)},
        "by_op_type_share": {k: round(v / total, 3) for k, v in by_op.most_common(8)},
        "top_nodes_ms": {k: round(v, 2) for k, v in by_node.most_common(6)},
    }


def profile_torch(fn, x: torch.Tensor, runs: int = 3) -> dict:
    """torch.profiler: the operators with the most self CPU time, ms per run."""
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode():
        fn(x)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(runs):
                fn(x)
    rows = sorted(prof.key_averages(), key=lambda r: r.self_cpu_time_total, reverse=True)
    total = sum(r.self_cpu_time_total for r in rows)
    return {
        "self_cpu_ms_per_run": round(total / 1000.0 / runs, 2),
        "top_ops_ms": {r.key: round(r.self_cpu_time_total / 1000.0 / runs, 2) for r in rows[:6]},
    }


def bench_model(name: str, runs: int, warmup: int, threads: list[int], workdir: Path) -> dict:
    torch.manual_seed(0)
    x = torch.rand(1, 3, *INPUT)
    torch.set_num_threads(max(threads))
    model = build_model(name, output_size=OUTPUT).eval()
    t0 = time.perf_counter()
    fast = optimize_for_inference(model, INPUT)
    optimize_s = time.perf_counter() - t0
    onnx_path = workdir / f"{name}.onnx"
    t0 = time.perf_counter()
    export_onnx(model, onnx_path, INPUT, tolerance=None)  # compared below, at this input size
    export_s = time.perf_counter() - t0
    ort_by_threads = {n: OnnxRunner(onnx_path, threads=n) for n in threads}
    with torch.inference_mode():
        ref = model(x)
        diffs = {"optimized": float((fast(x) - ref).abs().max()),
                 "onnxruntime": float((ort_by_threads[threads[0]](x) - ref).abs().max())}
    row = {
        "params": count_params(model),
        "macs": count_macs(model, INPUT),
        "max_abs_diff_vs_eager": diffs,
        "outputs_equal": all(d <= TOLERANCE for d in diffs.values()),
        "optimize_seconds": round(optimize_s, 2),
        "export_seconds": round(export_s, 2),
        "by_threads": {},
    }
    for n in threads:
        torch.set_num_threads(n)
        load = os.getloadavg()[0]
        times = interleaved({"eager": model, "optimized": fast, "onnxruntime": ort_by_threads[n]}, x, runs, warmup)
        stats = {k: _stats(v) for k, v in times.items()}
        eager = stats["eager"]["median_ms"]
        paired = {k: float(np.median(np.asarray(times[k]) / np.asarray(times["eager"]))) for k in BACKENDS[1:]}
        row["by_threads"][str(n)] = {
            **stats,
            "ratio_to_eager": {k: stats[k]["median_ms"] / eager for k in BACKENDS[1:]},
            "paired_ratio_median": paired,
            "loadavg_1min_at_start": load,
        }
    one = row["by_threads"][str(min(threads))]
    fastest = min(BACKENDS[1:], key=lambda k: one[k]["median_ms"])
    row["fastest_at_1_thread"] = fastest
    row["fastest_ratio_at_1_thread"] = one["ratio_to_eager"][fastest]
    if name in TARGET_RATIO:
        target, inclusive = TARGET_RATIO[name]
        ratio = row["fastest_ratio_at_1_thread"]
        row["target_ratio"] = target
        row["target"] = f"{'<=' if inclusive else '<'} {target}x eager"
        row["meets_target"] = bool((ratio <= target if inclusive else ratio < target) and row["outputs_equal"])
        if not row["meets_target"]:
            goal_ms = target * one["eager"]["median_ms"]
            row["miss"] = {
                "ratio_over_target": round(ratio - target, 3),
                "ms_over_target": round(one[fastest]["median_ms"] - goal_ms, 1),
                "target_ms_in_this_run": round(goal_ms, 1),
            }
            torch.set_num_threads(min(threads))
            row["profile_at_1_thread"] = {
                "onnxruntime": profile_onnxruntime(onnx_path, x, min(threads)),
                "optimized": profile_torch(fast, x),
                "eager": profile_torch(model, x),
            }
    if name in PAPER_CODE_MS_OTHER_DAY:
        row["context_paper_code_ms_other_day"] = PAPER_CODE_MS_OTHER_DAY[name]
    return row


def run(names: list[str], runs: int, warmup: int, threads: list[int]) -> dict:
    torch.set_flush_denormal(True)
    load_before = os.getloadavg()
    started = time.time()
    rows = {}
    with tempfile.TemporaryDirectory(prefix="semipkd-bench-") as tmp, warnings.catch_warnings():
        # the tracer's and exporter's notes about constant shapes are expected here
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Constant folding")
        for name in names:
            rows[name] = bench_model(name, runs, warmup, threads, Path(tmp))
            log.info("%s done", name)
    import onnxruntime

    return {
        "setting": {
            "batch": 1,
            "input_size": list(INPUT),
            "output_size": list(OUTPUT),
            "threads": threads,
            "runs": runs,
            "warmup": warmup,
            "order": "interleaved per round: " + ", ".join(BACKENDS),
            "flush_denormal": True,
            "tolerance": TOLERANCE,
            "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__,
            "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "loadavg_before": [round(v, 2) for v in load_before],
            "loadavg_after": [round(v, 2) for v in os.getloadavg()],
            "wall_seconds": round(time.time() - started, 1),
        },
        "note": ("Run on a 2-core machine shared with other engineers' jobs (see the load averages): absolute "
                 "milliseconds are inflated and vary; the ratios are fair because the backends are interleaved "
                 "and share the same load. paper-code ms are from another day and another thread setting: "
                 "context only."),
        "models": rows,
    }


def print_table(result: dict) -> None:
    print(f"{'backbone':<20}{'thr':>4}{'eager ms':>10}{'p10-p90':>14}{'opt ms':>9}{'p10-p90':>14}{'ort ms':>9}"
          f"{'p10-p90':>14}{'opt/eager':>10}{'ort/eager':>10}{'target':>8}  ok")
    for name, r in result["models"].items():
        for n, t in r["by_threads"].items():
            cells = []
            for k in BACKENDS:
                cells.append(f"{t[k]['median_ms']:>9.1f}" if k != "eager" else f"{t[k]['median_ms']:>10.1f}")
                cells.append(f"{t[k]['p10_ms']:>7.0f}-{t[k]['p90_ms']:<6.0f}")
            first = n == str(min(int(k) for k in r["by_threads"]))
            target = r["target"].removesuffix(" eager") if "target" in r and first else ""
            ok = {True: "yes", False: "NO"}.get(r.get("meets_target")) if first and "meets_target" in r else ""
            print(f"{name:<20}{n:>4}" + "".join(cells) + f"{t['ratio_to_eager']['optimized']:>9.2f}x"
                  f"{t['ratio_to_eager']['onnxruntime']:>9.2f}x{target:>8}  {ok}")
        if "miss" in r:
            m = r["miss"]
            p = r["profile_at_1_thread"]["onnxruntime"]
            print(f"  {name} misses by {m['ratio_over_target']:.2f}x ({m['ms_over_target']:.1f} ms over "
                  f"{m['target_ms_in_this_run']:.1f} ms); onnxruntime by op type (ms): {p['by_op_type_ms']}")
            print(f"  costliest nodes (ms): {p['top_nodes_ms']}")
            conv = p["by_op_type_ms"].get("Conv", 0.0)
            print(f"  why: convolutions alone take {conv:.1f} ms ({100 * conv / p['kernel_ms_per_run']:.0f}% of the kernel "
                  f"time) against a {m['target_ms_in_this_run']:.1f} ms target; fusing batch norm and activations and "
                  "changing the layout do not remove that arithmetic" if conv > m["target_ms_in_this_run"] else
                  f"  convolutions take {conv:.1f} ms of {p['kernel_ms_per_run']:.1f} ms kernel time")
        if "context_paper_code_ms_other_day" in r:
            print(f"  context only: the paper's code took ~{r['context_paper_code_ms_other_day']:.0f} ms on another day")
        print(f"  max abs diff vs eager: {r['max_abs_diff_vs_eager']}")
    s = result["setting"]
    print(f"medians of {s['runs']} interleaved rounds; loadavg (1-min) before/after: "
          f"{s['loadavg_before'][0]:.2f}/{s['loadavg_after'][0]:.2f} on {s['cpu_count']} CPUs; {s['wall_seconds']} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--names", nargs="+", default=["eeea_c2", "mobilenet_v3_large", "efficientnet_b4", "mobilenet_v2"])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--output", type=Path, default=Path("reports/benchmarks/models.json"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    result = run(args.names, args.runs, args.warmup, sorted(args.threads))
    print_table(result)
    atomic_write_json(args.output, result)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
