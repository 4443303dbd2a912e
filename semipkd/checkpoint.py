"""The resume checkpoint of a training run: what it holds, how it is written and checked.

``last.pt`` (in a stage's ``models/ckpt/<stage>/``) holds the model, the EMA, optimiser,
schedule, scaler, every process's RNG states, the history and the best epoch so far, plus a
fingerprint of the run configuration and the sha256 of its contents. It is written atomically at
the end of every epoch by :func:`save_checkpoint`; :func:`load_checkpoint` returns it only when
it belongs to this run and is intact (a foreign one is ignored with a warning, a damaged one is a
:class:`CheckpointError` naming the file).
"""

from __future__ import annotations

import hashlib
import logging
import random
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from semipkd.distributed import unwrap_ddp
from semipkd.errors import SemipkdError
from semipkd.io import atomic_torch_save

__all__ = [
    "CKPT_VERSION",
    "CheckpointError",
    "rng_state",
    "set_rng_state",
    "state_digest",
    "save_checkpoint",
    "load_checkpoint",
    "diff_keys",
]

log = logging.getLogger("semipkd.engine")

#: Format version of ``last.pt``; a different one is not resumed from.
CKPT_VERSION = 2  # 2: the checkpoint carries the sha256 of its contents


class CheckpointError(SemipkdError, RuntimeError):
    """A resume checkpoint that exists but cannot be used; the message names the file."""


def rng_state() -> dict[str, Any]:
    """Python, NumPy, torch and CUDA RNG states as plain Python objects.

    Bytes and lists rather than tensors and arrays: they pass through ``all_gather_object`` and
    ``torch.load(weights_only=True)`` alike.
    """
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [np_state[0], np_state[1].tolist(), *(v.item() if hasattr(v, "item") else v for v in np_state[2:])],
        "torch": torch.get_rng_state().numpy().tobytes(),
    }
    if torch.cuda.is_available():
        state["cuda"] = [s.numpy().tobytes() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), *rest))
    torch.set_rng_state(torch.frombuffer(bytearray(state["torch"]), dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([torch.frombuffer(bytearray(s), dtype=torch.uint8) for s in state["cuda"]])


def state_digest(obj: Any) -> str:
    """sha256 over a checkpoint's contents: every key, every tensor's dtype, shape and bytes.

    Stored in the resume checkpoint and checked at load, so a file whose bytes changed after it
    was written (a bit flip, a partial copy that still unzips) is refused rather than resumed
    from: ``torch.load`` itself does not check its records' CRCs.
    """
    h = hashlib.sha256()

    def walk(x: Any) -> None:
        if isinstance(x, torch.Tensor):
            t = x.detach().cpu().contiguous()
            h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(x, Mapping):
            h.update(b"{")
            for k in sorted(x, key=repr):
                h.update(repr(k).encode())
                walk(x[k])
            h.update(b"}")
        elif isinstance(x, (list, tuple)):
            h.update(b"[")
            for v in x:
                walk(v)
            h.update(b"]")
        else:
            h.update(repr(x).encode())

    walk(obj)
    return h.hexdigest()


def save_checkpoint(
    path: Path,
    fingerprint: dict[str, Any],
    state: dict[str, Any],
    model: nn.Module,
    ema: AveragedModel,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler,
    rngs: list[dict[str, Any]],
) -> None:
    payload = {
        "version": CKPT_VERSION,
        "fingerprint": fingerprint,
        "epoch": state["epoch"],
        "best": state["best"],
        "history": state["history"],
        "skipped_steps": state["skipped_steps"],
        "model": unwrap_ddp(model).state_dict(),
        "ema": ema.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "rng": rngs,
    }
    atomic_torch_save(path, {**payload, "sha256": state_digest(payload)})


def load_checkpoint(path: Path, fingerprint: dict[str, Any], *, main: bool) -> dict[str, Any] | None:
    """The resume checkpoint at ``path`` if it belongs to this run, else None (fresh start).

    An unreadable file is an error, not a silent restart: deleting days of training is the
    user's call. A readable one written for another config is ignored with a warning (and
    overwritten after the first epoch).
    """
    if not path.exists():
        return None
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a truncated or foreign file
        raise CheckpointError(
            f"{path}: resume checkpoint cannot be read ({type(exc).__name__}: {exc}); "
            "delete it to start this stage from scratch"
        ) from exc
    required = ("version", "fingerprint", "epoch", "model", "ema", "optimizer", "scheduler", "scaler", "rng", "best", "history")
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in required):
        raise CheckpointError(f"{path}: not a semipkd resume checkpoint (missing keys); delete it to start from scratch")
    if ckpt["version"] != CKPT_VERSION or ckpt["fingerprint"] != fingerprint:
        if main:
            old = ckpt["fingerprint"] if isinstance(ckpt["fingerprint"], dict) else {}
            diff = diff_keys(old, fingerprint)
            log.warning(
                "%s was written for a different run configuration (%s): ignoring it and training from scratch",
                path,
                "; ".join(diff) or "format version",
            )
        return None
    stored = ckpt.pop("sha256", None)
    if stored is None or stored != state_digest(ckpt):
        raise CheckpointError(
            f"{path}: resume checkpoint fails its integrity check "
            f"({'no stored hash' if stored is None else 'contents do not match the stored sha256'}); "
            "it was changed after it was written: delete it to start this stage from scratch"
        )
    return ckpt


def diff_keys(a: Mapping[str, Any], b: Mapping[str, Any], prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, Mapping) and isinstance(vb, Mapping):
            out += diff_keys(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k}: {va!r} -> {vb!r}")
    return out
