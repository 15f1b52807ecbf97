"""What ``generate`` and ``fid`` need to run under torchrun: process groups and seed chunks dealt to ranks.

Seeds are split into fixed chunks by global position and the chunks dealt round-robin, so every sample is
computed in the same batch (hence bit-identically) whatever the number of ranks; ranks exchange nothing but
float64 statistics, summed exactly (:class:`~edm_samplers.evaluation.FeatureStats`). Private: the command line and the
benchmark scripts use it.
"""

from __future__ import annotations

import atexit
import functools
import os
from collections.abc import Iterator, Sequence

import torch

__all__ = ["cpu_group", "dist_info", "init_distributed", "iter_chunks", "shard_chunks"]


def dist_info() -> tuple[int, int]:
    """(rank, world size); (0, 1) without an initialised process group."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed() -> bool:
    """Initialise torch.distributed (gloo) from torchrun's environment; False if not launched by torchrun."""
    import torch.distributed as dist

    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ or not dist.is_available():
        return False
    if not dist.is_initialized():
        # gloo whatever the device: every collective here reduces small float64 CPU tensors (statistics,
        # error sums) and sampling itself needs no communication. Ranks take the node's GPUs round-robin,
        # so more processes than GPUs share them instead of failing (NCCL allows one rank per GPU).
        dist.init_process_group(backend="gloo")
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
        # A process that exits with its group alive can abort (SIGABRT, "terminate called without an active
        # exception"): gloo's worker threads outlive the interpreter's teardown. Destroy it while Python lives.
        atexit.register(_destroy_process_group)
    return True


def _destroy_process_group() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@functools.cache
def cpu_group() -> object:
    """A process group that can all-reduce CPU tensors: None (the default) under gloo, a gloo group under nccl.

    Statistics and error sums are reduced as float64 CPU tensors, which nccl cannot do. Creating a group
    is collective: every rank calls this at the same points, once (cached).
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_backend() == "gloo":
        return None
    return dist.new_group(backend="gloo")


def shard_chunks(num: int, chunk: int) -> list[tuple[int, int]]:
    """This rank's ``(start, stop)`` index ranges: global chunks of ``chunk`` items, dealt round-robin."""
    rank, world = dist_info()
    all_chunks = [(s, min(s + chunk, num)) for s in range(0, num, chunk)]
    return all_chunks[rank::world]


def iter_chunks(seeds: Sequence[int], chunk: int) -> Iterator[tuple[int, list[int]]]:
    """This rank's chunks of ``seeds`` as (global start index, seeds)."""
    for a, b in shard_chunks(len(seeds), chunk):
        yield a, list(seeds[a:b])
