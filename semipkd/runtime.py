"""Where code runs: device choice, mixed precision, seeding, logging, torch.distributed.

Package code never assumes CUDA: it asks :func:`select_device` once and passes the device on.
Mixed precision is a context from :func:`autocast` that is a no-op on the CPU, so the same
training step runs everywhere. A process started by ``torchrun`` finds its rank and world size
in the environment (:func:`dist_info`); :func:`init_distributed` joins the process group.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import sys
from typing import Iterator

import numpy as np
import torch

__all__ = [
    "select_device",
    "amp_dtype",
    "autocast",
    "seed_everything",
    "setup_logging",
    "dist_info",
    "init_distributed",
    "barrier",
]

log = logging.getLogger(__name__)

_DEVICE_CHOICES = ("auto", "cpu", "cuda")


def select_device(requested: str = "auto") -> torch.device:
    """Return the device to train or infer on and log which one (and the GPU's name).

    ``requested``: ``"auto"`` (CUDA when a GPU is visible, else the CPU), ``"cpu"`` or
    ``"cuda"``. Under ``torchrun`` each process gets ``cuda:LOCAL_RANK``. Asking for ``"cuda"``
    on a machine without a usable GPU is an error rather than a silent fall-back to the CPU,
    which would turn a one-hour run into a week.
    """
    if requested not in _DEVICE_CHOICES:
        raise ValueError(f"device: {requested!r} is not one of {', '.join(_DEVICE_CHOICES)}")
    has_cuda = torch.cuda.is_available()
    if requested == "cuda" and not has_cuda:
        raise RuntimeError(
            "device: 'cuda' was requested but torch sees no CUDA GPU "
            f"(torch {torch.__version__}, CUDA build: {torch.version.cuda}); use 'auto' or 'cpu'"
        )
    if requested == "cpu" or not has_cuda:
        device = torch.device("cpu")
        log.info("device: cpu (%d threads)", torch.get_num_threads())
        return device
    _, world_size, local_rank = dist_info()
    index = local_rank if world_size > 1 else torch.cuda.current_device()
    if index >= torch.cuda.device_count():
        raise RuntimeError(
            f"device: LOCAL_RANK={local_rank} but only {torch.cuda.device_count()} GPU(s) are visible"
        )
    device = torch.device("cuda", index)
    props = torch.cuda.get_device_properties(device)
    log.info(
        "device: %s (%s, %.1f GiB, bf16 %s)",
        device,
        props.name,
        props.total_memory / 2**30,
        "yes" if torch.cuda.is_bf16_supported() else "no",
    )
    return device


def amp_dtype(device: torch.device, enabled: bool) -> torch.dtype | None:
    """The autocast dtype for ``device``: bf16 where the GPU supports it, else fp16; None = off.

    bf16 has float32's exponent range, so it needs no loss scaling; fp16 (pre-Ampere GPUs) does,
    which is why the engine pairs it with a ``GradScaler``. On the CPU mixed precision is off:
    CPU autocast speeds little up and would make CPU results differ from the reference runs.
    """
    if not enabled or torch.device(device).type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


@contextlib.contextmanager
def autocast(device: torch.device, enabled: bool) -> Iterator[None]:
    """Mixed-precision context: bf16/fp16 autocast on CUDA when ``enabled``, no-op otherwise."""
    dtype = amp_dtype(device, enabled)
    if dtype is None:
        yield
        return
    with torch.autocast(device_type="cuda", dtype=dtype):
        yield


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and every GPU)."""
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed: expected an int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def setup_logging(stage_name: str, level: int = logging.INFO) -> None:
    """Configure the root logger once: INFO, one concise line per record, to stderr.

    Under ``torchrun`` only rank 0 logs at INFO; the other ranks log warnings and errors only,
    each line tagged with its rank, so N processes do not print N copies of every line.
    Calling it again (a second stage in the same process, a test) changes nothing.
    """
    root = logging.getLogger()
    if getattr(root, "_semipkd_configured", False):
        return
    rank, world_size, _ = dist_info()
    tag = f"{stage_name}" if world_size == 1 else f"{stage_name}[rank {rank}]"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter(f"%(asctime)s %(levelname)s {tag} %(name)s: %(message)s", datefmt="%H:%M:%S")
    )
    root.addHandler(handler)
    root.setLevel(level if rank == 0 else max(level, logging.WARNING))
    root._semipkd_configured = True  # type: ignore[attr-defined]


def dist_info() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from the environment ``torchrun`` sets; (0, 1, 0) otherwise."""

    def _env_int(name: str, default: int) -> int:
        raw = os.environ.get(name)
        if raw is None or raw == "":
            return default
        try:
            return int(raw)
        except ValueError:
            raise RuntimeError(f"environment variable {name}={raw!r} is not an integer") from None

    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", rank)
    if world_size < 1 or not 0 <= rank < world_size:
        raise RuntimeError(f"inconsistent torchrun environment: RANK={rank}, WORLD_SIZE={world_size}")
    return rank, world_size, local_rank


def init_distributed(device: torch.device) -> tuple[int, int]:
    """Join the process group when launched by ``torchrun`` with WORLD_SIZE > 1.

    The backend follows the device: NCCL between GPUs, gloo between CPU processes. Returns
    ``(rank, world_size)``; a single process returns ``(0, 1)`` and initialises nothing. Calling
    it when the group already exists returns the group's rank and size.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    rank, world_size, _ = dist_info()
    if world_size == 1:
        return 0, 1
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    device = torch.device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    log.info("distributed: %d processes, backend %s", world_size, backend)
    return rank, world_size


def barrier() -> None:
    """Wait for every process of the group; nothing to wait for in a single process."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
