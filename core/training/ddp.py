"""Multi-process training through PyTorch DistributedDataParallel.

``torchrun --nproc-per-node N main.py train ...`` starts N copies of the same
command with ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous
variables set; :func:`init_distributed` reads them. NCCL on CUDA (one GPU per
local rank), gloo on the CPU. Rank 0 writes the event stream, checkpoints and
the cache; the other ranks wait for it at barriers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_dist_info() -> DistInfo:
    """What torchrun (or any launcher using its variables) set; a single process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    return DistInfo(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))


def init_distributed(device: str) -> DistInfo:
    """Join the process group when launched by torchrun; returns the single-process info otherwise."""
    info = env_dist_info()
    if not info.enabled:
        return info
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") and dist.is_nccl_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group(backend=backend)
    return info


def rank_device(device: str, info: DistInfo) -> str:
    """Each local rank drives its own GPU."""
    if device == "cuda" and info.enabled:
        return f"cuda:{info.local_rank}"
    return device


def barrier(info: DistInfo) -> None:
    if info.enabled:
        import torch.distributed as dist

        dist.barrier()


def any_rank(flag: bool, info: DistInfo) -> bool:
    """True on every rank when ``flag`` is true on any (a stop request seen by one rank stops all)."""
    if not info.enabled:
        return flag
    import torch
    import torch.distributed as dist

    t = torch.tensor([1.0 if flag else 0.0])
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def mean_across(value: float, info: DistInfo) -> float:
    if not info.enabled:
        return value
    import torch
    import torch.distributed as dist

    t = torch.tensor([float(value)], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t.item()) / info.world_size


def shard(indices: np.ndarray, info: DistInfo, batch_size: int) -> np.ndarray:
    """This rank's share of an epoch's items, padded by wrapping so every rank runs as many full batches.

    Item ``k`` of global batch ``b`` goes to rank ``(k // batch_size) % world``
    in interleaved order, like DistributedSampler without shuffling (the order
    is already a seeded shuffle).
    """
    indices = np.asarray(indices)
    per_step = batch_size * info.world_size
    n_steps = -(-len(indices) // per_step) if len(indices) else 0
    total = n_steps * per_step
    if total > len(indices):
        indices = np.resize(indices, total)  # repeats from the start, as often as needed
    return indices.reshape(n_steps, info.world_size, batch_size)[:, info.rank, :].ravel()


def cleanup(info: DistInfo) -> None:
    if info.enabled:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
