"""The processes of a multi-process (DDP) run, through ``torch.distributed`` alone (no
Lightning, which only training imports): which one this is, and rows computed across them."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist

#: Where a launcher (torchrun, Lightning's DDP, SLURM, jsrun) leaves a process's rank, read in
#: Lightning's order, as its ``rank_zero_only`` does.
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")


def world() -> tuple[int, int]:
    """(rank, world size) of the initialised process group, (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def rank_zero() -> bool:
    """Whether this is the process that speaks for the run: rank 0 of the process group, or
    before one is initialised, of its launcher's environment (:data:`RANK_VARIABLES`)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    rank = next((os.environ[k] for k in RANK_VARIABLES if k in os.environ), "0")
    return int(rank) == 0


@contextmanager
def own_process_group() -> Iterator[None]:
    """Destroy the default process group that the block made (Lightning's DDP under torchrun),
    once the block ends without an error; one made before it is left to its maker.

    Lightning destroys an NCCL group at exit, never a gloo one (CPU); left to the interpreter's
    finalization, gloo's threads can abort the process ("terminate called without an active
    exception", SIGABRT) after its work is done, and torchrun then fails that node while the
    other waits 300 s at its exit barrier (pytorch/pytorch#190489). Not after an error: a
    destroy while another rank is inside a collective can hang."""
    made_before = dist.is_available() and dist.is_initialized()
    yield
    if not made_before and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def gather_rows(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """``fn(x)`` for ``fn`` mapping (n, ...) rows to (n, k) results, sharded over the ranks.

    Rank r computes rows r, r + W, ...; the shards are all-gathered (padded to one length) and
    put back in the original order, so every rank returns the whole (n, k) result.
    """
    rank, size = world()
    if size == 1:
        return fn(x)
    part = fn(x[rank::size])
    length = -(-len(x) // size)
    padded = torch.zeros((length, *part.shape[1:]), dtype=part.dtype, device=part.device)
    padded[: len(part)] = part
    shards = [torch.empty_like(padded) for _ in range(size)]
    dist.all_gather(shards, padded)
    out = torch.empty((len(x), *part.shape[1:]), dtype=part.dtype, device=part.device)
    for r, shard in enumerate(shards):
        out[r::size] = shard[: len(range(r, len(x), size))]
    return out
