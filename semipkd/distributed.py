"""The distributed shim of the training loop: one process or ``torchrun`` alike.

:class:`Distributed` holds the few collective operations the loop needs (plain pass-throughs in a
single process); the samplers give each process its share of every global batch, so one process
and N processes see the same global batches in the same order.
"""

from __future__ import annotations

from typing import Any, Iterator

import torch
from torch import nn
from torch.utils.data import Sampler

__all__ = ["Distributed", "GlobalBatchSampler", "ShardSampler", "unwrap_ddp"]


def unwrap_ddp(model: nn.Module) -> nn.Module:
    """The module inside a ``DistributedDataParallel`` wrapper (``model`` itself otherwise)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


class Distributed:
    """The few collective operations the loop needs; plain pass-throughs in a single process."""

    def __init__(self, rank: int, world_size: int, device: torch.device) -> None:
        self.rank, self.world_size, self.device = rank, world_size, device
        self.main = rank == 0

    def all_sum(self, values: list[float]) -> list[float]:
        if self.world_size == 1:
            return values
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def any_true(self, flag: bool) -> bool:
        if self.world_size == 1:
            return flag
        return self.all_sum([1.0 if flag else 0.0])[0] > 0

    def gather(self, obj: Any) -> list[Any]:
        if self.world_size == 1:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.world_size > 1:
            import torch.distributed as dist

            dist.barrier()


class GlobalBatchSampler(Sampler[int]):
    """Indices of this process's share of each global batch of a seeded random permutation.

    Epoch order: ``perm = randperm(n, generator seeded by seed_key)``; global batch ``s`` is
    ``perm[s*G:(s+1)*G]`` with ``G = per_rank_batch * world_size``, and rank ``r`` takes its
    contiguous slice ``[r*b:(r+1)*b]``. The incomplete last batch is dropped (every step has the
    full batch, which BatchNorm needs). Use with ``DataLoader(batch_size=per_rank_batch)``.

    ``draw``: only the first ``draw`` items of the permutation are used, i.e. a seeded draw of
    ``draw`` of the ``n`` items without replacement (``draw // G`` steps); None: all ``n``.
    """

    def __init__(self, n: int, per_rank_batch: int, *, rank: int, world_size: int, seed_key: int,
                 draw: int | None = None) -> None:
        if per_rank_batch < 1:
            raise ValueError(f"per_rank_batch must be >= 1, got {per_rank_batch}")
        if draw is not None and not 0 <= draw <= n:
            raise ValueError(f"draw must be in [0, {n}], got {draw}")
        self.n, self.b, self.rank, self.world_size, self.seed_key = n, per_rank_batch, rank, world_size, seed_key
        self.steps = (n if draw is None else draw) // (per_rank_batch * world_size)

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed_key)
        perm = torch.randperm(self.n, generator=g).tolist()
        global_b = self.b * self.world_size
        for s in range(self.steps):
            start = s * global_b + self.rank * self.b
            yield from perm[start : start + self.b]

    def __len__(self) -> int:
        return self.steps * self.b


class ShardSampler(Sampler[int]):
    """Rank ``r``'s contiguous, unpadded share of ``range(n)`` in order (validation)."""

    def __init__(self, n: int, *, rank: int, world_size: int) -> None:
        per = -(-n // world_size)
        self.indices = range(min(n, rank * per), min(n, (rank + 1) * per))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
