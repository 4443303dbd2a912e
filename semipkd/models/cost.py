"""Cost profile of a model: parameters, multiply-accumulates, CPU (and GPU) latency.

``python -m semipkd.models.profile eeea_c2 efficientnet_b4`` prints one row per backbone (the
command line lives in ``profile.py``; the functions live here so that running that module with
``-m`` does not find it already imported by the package).

MACs count the convolutions and linear layers (kernel MACs plus bias adds, ptflops' convention
for these layers), measured with forward hooks on one (1, 3, H, W) image; element-wise layers
(BN, activations, resizes, the blur) are left out. The convolutions dominate: the counts agree
with the paper code's ptflops figures at 3x288x384 (eeea_c2 1.130 G vs ~1.13 G,
mobilenet_v3_large 0.965 G vs ~0.97 G, efficientnet_b4 6.658 G vs ~6.66 G).
"""

from __future__ import annotations

import copy
import logging
import statistics
import time
from typing import Any, Sequence

import torch
from torch import nn

from .optimize import optimize_for_inference
from .registry import _unwrap, build_model, get_backbone, list_backbones

log = logging.getLogger(__name__)

__all__ = ["count_params", "count_macs", "measure_latency", "profile", "main"]


def count_params(module: nn.Module) -> int:
    """Number of parameters (trainable or not) of ``module``."""
    return sum(p.numel() for p in module.parameters())


def count_macs(model: nn.Module, input_size: Sequence[int] = (288, 384)) -> int:
    """Multiply-accumulates of one forward pass on a (1, 3, H, W) input (conv + linear layers)."""
    total = 0

    def conv_hook(mod: nn.Conv2d, inp: Any, out: torch.Tensor) -> None:
        nonlocal total
        kh, kw = mod.kernel_size
        per_out = (mod.in_channels // mod.groups) * kh * kw + (1 if mod.bias is not None else 0)
        total += out.numel() * per_out

    def linear_hook(mod: nn.Linear, inp: Any, out: torch.Tensor) -> None:
        nonlocal total
        total += out.numel() * (mod.in_features + (1 if mod.bias is not None else 0))

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        with torch.inference_mode():
            model(torch.rand(1, 3, *input_size, device=device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return int(total)


def measure_latency(
    fn: Any, x: torch.Tensor, *, repeats: int = 10, warmup: int = 3, cuda: bool = False
) -> float:
    """Median wall time of ``fn(x)`` in milliseconds, under ``torch.inference_mode``."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    times = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            if cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn(x)
            if cuda:
                torch.cuda.synchronize()
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    return 1000.0 * statistics.median(times)


def profile(
    model_or_name: nn.Module | str,
    input_size: Sequence[int] = (288, 384),
    *,
    output_size: Sequence[int] | None = None,
    width: float = 1.0,
    repeats: int = 10,
    warmup: int = 3,
    optimized: bool = True,
    gpu: bool | None = None,
    gpu_batch: int = 32,
) -> dict[str, Any]:
    """Cost profile of a saliency model (or of ``build_model(name, width=width)``).

    Returns a dict with ``backbone``, ``width``, ``input_size``, ``output_size``, ``params``,
    ``encoder_params``, ``decoder_params``, ``paper_params`` (None if not in the paper), ``macs``
    (one image), ``cpu_latency_ms`` (batch 1, eager, inference mode, median of ``repeats``
    timed runs after ``warmup`` untimed ones), ``cpu_threads``, and with
    ``optimized`` ``cpu_latency_optimized_ms`` (:func:`optimize_for_inference`). With a GPU (or
    ``gpu=True``): ``gpu_latency_ms`` (batch 1) and ``gpu_throughput_ips`` (images/s at
    ``gpu_batch``, fp32). ``output_size`` defaults to the model's own.
    """
    if isinstance(model_or_name, str):
        model = build_model(model_or_name, width=width, **({"output_size": output_size} if output_size else {}))
    else:
        # A copy: profiling moves the model between devices and sets eval mode.
        model = copy.deepcopy(_unwrap(model_or_name))
        if output_size is not None:
            model.output_size = output_size
    model = model.cpu().eval()
    h, w = (int(s) for s in input_size)
    spec = get_backbone(model.backbone)
    result: dict[str, Any] = {
        "backbone": model.backbone,
        "width": model.width,
        "input_size": [h, w],
        "output_size": list(model.output_size),
        "params": count_params(model),
        "encoder_params": count_params(model.encoder),
        "decoder_params": count_params(model.decoder),
        "paper_params": spec.paper_params if model.width == 1.0 else None,
        "macs": count_macs(model, (h, w)),
        "cpu_threads": torch.get_num_threads(),
    }
    x = torch.rand(1, 3, h, w)
    result["cpu_latency_ms"] = measure_latency(model, x, repeats=repeats, warmup=warmup)
    if optimized:
        fast = optimize_for_inference(model, (h, w))
        result["cpu_latency_optimized_ms"] = measure_latency(fast, x, repeats=repeats, warmup=warmup)
    if gpu is None:
        gpu = torch.cuda.is_available()
    if gpu:
        if not torch.cuda.is_available():
            raise RuntimeError("profile(gpu=True) needs a CUDA device, and none is available")
        m = model.cuda()
        xb = torch.rand(1, 3, h, w, device="cuda")
        result["gpu_latency_ms"] = measure_latency(m, xb, repeats=repeats, warmup=warmup, cuda=True)
        xb = torch.rand(gpu_batch, 3, h, w, device="cuda")
        ms = measure_latency(m, xb, repeats=repeats, warmup=warmup, cuda=True)
        result["gpu_throughput_ips"] = gpu_batch / (ms / 1000.0)
        result["gpu_name"] = torch.cuda.get_device_name()
    return result


def _format_table(rows: list[dict[str, Any]]) -> str:
    cols = [
        ("backbone", "backbone", "{}"),
        ("width", "width", "{:g}"),
        ("params", "params", "{:,}"),
        ("paper_params", "paper", "{:,}"),
        ("encoder_params", "encoder", "{:,}"),
        ("macs", "GMACs", None),
        ("cpu_latency_ms", "CPU ms", "{:.1f}"),
        ("cpu_latency_optimized_ms", "CPU opt ms", "{:.1f}"),
        ("gpu_latency_ms", "GPU ms", "{:.2f}"),
        ("gpu_throughput_ips", "GPU img/s", "{:.0f}"),
    ]
    cols = [c for c in cols if any(c[0] in r for r in rows)]
    table = [[title for _, title, _ in cols]]
    for r in rows:
        line = []
        for key, _, fmt in cols:
            v = r.get(key)
            if v is None:
                line.append("-")
            elif key == "macs":
                line.append(f"{v / 1e9:.3f}")
            else:
                line.append(fmt.format(v))
        table.append(line)
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
    return "\n".join("  ".join(cell.rjust(wd) for cell, wd in zip(row, widths, strict=True)) for row in table)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``python -m semipkd.models.profile NAME... [--input-size H W] [--width W] [--repeats N]``."""
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="python -m semipkd.models.profile", description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="+", metavar="NAME", help=f"backbones: {', '.join(list_backbones())}, or all")
    parser.add_argument("--input-size", nargs=2, type=int, default=[288, 384], metavar=("H", "W"))
    parser.add_argument("--output-size", nargs=2, type=int, default=[480, 640], metavar=("H", "W"))
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--no-optimized", action="store_true", help="skip the optimized CPU path")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    # The profiled networks have random weights, whose activations decay into denormal floats
    # that trained weights do not produce; x86 computes on denormals many times slower, so
    # latency is measured with flush-to-zero (this process only).
    torch.set_flush_denormal(True)
    names = list_backbones() if args.names == ["all"] else args.names
    rows = []
    for name in names:
        rows.append(
            profile(
                name,
                args.input_size,
                output_size=args.output_size,
                width=args.width,
                repeats=args.repeats,
                optimized=not args.no_optimized,
            )
        )
    print(json.dumps(rows, indent=2) if args.json else _format_table(rows))
    return 0
