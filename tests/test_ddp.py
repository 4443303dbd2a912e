"""DistributedDataParallel: 2 CPU processes (torchrun, gloo) train the same network as 1 process
with the same global batch.

The model is the toy mobilenet_v2 with every BatchNorm replaced by GroupNorm(8): BatchNorm's
batch statistics are per process under CPU DDP (SyncBatchNorm needs CUDA), so with BatchNorm
the two runs would legitimately differ; GroupNorm normalises each image on its own. What is left
is float rounding: gradients are summed in a different order (per-process halves, then an
all-reduce), and which order the CPU kernels pick depends on the machine. Adam's step is about
lr*sign(g) for a gradient near zero, so a rounding-level difference there can move one element by
a few lr in the other direction: element-wise maxima are not a fair test (measured here:
1.75e-3 against a 8.8e-3 move, and CI failed the old 2e-5 bound). The test therefore compares the runs as wholes: the relative gap
between the two weight updates (L2 over all weights) under 2% (measured: 0.36%), per tensor the
mean disagreement under 2% of the mean move (worst measured: 0.47%), validation metrics and
per-epoch losses within 1e-3 relative (measured: 7e-5).

Run directly under torchrun this file is the worker: ``torchrun --nproc_per_node=2
tests/test_ddp.py DATA OUT``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))

import test_engine as t  # noqa: E402  (test_engine is found through the sys.path insert above)
from test_engine import one_thread  # noqa: E402,F401  (as above; one_thread: the single-process run uses 1 thread too)


def groupnorm_model() -> torch.nn.Module:
    model = t.tiny_model(seed=0)
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, torch.nn.BatchNorm2d):
                setattr(module, name, torch.nn.GroupNorm(8, child.num_features))
    return model


def _worker(root: Path, out: Path) -> None:
    from semipkd.runtime import setup_logging

    setup_logging("test_ddp")
    t.run_fit(root, out, t.make_cfg(), model=groupnorm_model())


def test_two_gloo_processes_match_one_process_with_the_same_global_batch(tmp_path):
    root = t.make_data(tmp_path / "data")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS.parent), os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(Path(__file__)),
         str(root), str(tmp_path / "ddp")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # the single-process run meanwhile, in this process (its own output folder)
        single = t.run_fit(root, tmp_path / "single", t.make_cfg(), model=groupnorm_model())
        _, stderr = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr[-3000:]

    # only rank 0 logs at INFO: one line per epoch, not two
    assert stderr.count("epoch 1/2:") == 1, stderr[-3000:]
    ckpt = torch.load(tmp_path / "ddp" / "ckpt" / "last.pt", weights_only=True)
    assert len(ckpt["rng"]) == 2  # every process's RNG state is kept for an exact resume

    a = torch.load(tmp_path / "ddp" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "single" / "model.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == single["best_epoch"]
    initial = groupnorm_model().state_dict()
    # Compare how far each run moved the weights, not single elements: Adam's update is close to
    # lr*sign(g) for a gradient near zero, so a rounding-level difference in such a gradient can
    # flip one element's step (a few x lr apart) without the network being any different.
    diff_sq = move_sq = worst = 0.0
    for k in b["model"]:
        if not b["model"][k].is_floating_point():
            assert torch.equal(a["model"][k], b["model"][k]), k
            continue
        step = (b["model"][k] - initial[k]).double()
        gap = (a["model"][k] - b["model"][k]).double()
        diff_sq += float(gap.pow(2).sum())
        move_sq += float(step.pow(2).sum())
        worst = max(worst, float(gap.abs().mean()) / max(float(step.abs().mean()), 1e-12))
        # per tensor: the mean disagreement is a small fraction of the mean move
        assert float(gap.abs().mean()) <= 0.02 * float(step.abs().mean()) + 1e-7, (
            k, float(gap.abs().mean()), float(step.abs().mean()))
    rel = (diff_sq / move_sq) ** 0.5
    assert move_sq ** 0.5 > 1e-2  # training really changed the weights, so agreeing is not trivial
    assert rel < 0.02, rel  # the two updates agree to 2% of their length (measured: see docstring)
    for k, v in b["val"].items():
        assert abs(a["val"][k] - v) <= 1e-3 * max(1.0, abs(v)), (k, a["val"][k], v)
    hist_a = torch.load(tmp_path / "ddp" / "ckpt" / "last.pt", weights_only=True)["history"]
    hist_b = torch.load(tmp_path / "single" / "ckpt" / "last.pt", weights_only=True)["history"]
    assert len(hist_a) == len(hist_b)
    for ra, rb in zip(hist_a, hist_b, strict=True):
        assert ra.keys() == rb.keys()
        for k in rb:
            assert abs(ra[k] - rb[k]) <= 1e-3 * max(1.0, abs(rb[k])), (k, ra[k], rb[k])
    print(f"DDP vs single: relative weight-update gap {rel:.2e}, update norm {move_sq ** 0.5:.3e}, worst tensor {worst:.2e}, "
          f"val {max(abs(a['val'][k] - b['val'][k]) for k in b['val']):.1e}")

if __name__ == "__main__":
    _worker(Path(sys.argv[1]), Path(sys.argv[2]))
