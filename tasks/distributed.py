"""Data-parallel training with ``torch.distributed``: who this process is, its shard, averaged gradients.

Several processes (ranks) train one model together. Every epoch all ranks draw the same permutation of the
training pairs (seeded by the run's seed and the epoch, as ``DistributedSampler`` does) and rank ``r`` takes
every ``world_size``-th pair from position ``r`` on; each rank then splits its shard into the same number of
batches (:func:`batch_slices`), so no rank waits for a batch that another does not run. After each backward
pass the gradients are summed across ranks, weighted by batch size, and divided by the global batch
(:func:`average_gradients`), so every rank takes the same optimiser step from identical parameters and the
replicas never drift apart.

Why gradients are all-reduced here rather than by wrapping the model in ``DistributedDataParallel``: the
trainer never calls ``forward()`` (it calls :meth:`~models.base.Recommender.loss`, and the hard-negative
sampler scores with the same model between steps), which is where DDP arms its reducer; graph models
(LightGCN, NGCF) propagate over the whole graph, so every parameter's gradient is ready only at the very end
of the backward pass and DDP's bucketed overlap of communication with computation has nothing to overlap;
and some models leave parameters unused in a batch (``find_unused_parameters`` would walk the graph every
step). One flattened all-reduce per step does the same arithmetic, keeps a parameter that no rank touched
without a gradient (so Adam skips it, as in a single process), and densifies sparse gradients.

The backend is NCCL when the ranks train on CUDA (rank ``r`` on ``cuda:LOCAL_RANK``), gloo on the CPU.
"""

from __future__ import annotations

import math
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistContext:
    """This process's place in a data-parallel run.

    Attributes:
        rank: Global rank, ``0..world_size-1``; rank 0 evaluates, decides when to stop and writes outputs.
        world_size: Number of ranks (at least 2: one process trains without a context).
        device: Where this rank trains (``cuda:LOCAL_RANK`` on CUDA, else the CPU).
        owned: This module initialised the process group (from ``torchrun``'s environment) and destroys it
            when training ends; a group the caller initialised is left alone.
    """

    rank: int
    world_size: int
    device: torch.device
    owned: bool = False

    @property
    def is_main(self) -> bool:
        """Rank 0."""
        return self.rank == 0


def launched_world_size() -> int:
    """The number of ranks ``torchrun`` (or any ``env://`` launcher) started, 1 outside such a launch."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank_device(name: str, local_rank: int) -> torch.device:
    """The device of the rank with ``local_rank`` on its machine, for a run that asked for ``name``.

    ``auto`` and ``cuda`` give ``cuda:local_rank`` when CUDA is available (one GPU per rank), ``cpu`` and
    ``auto`` without CUDA give the CPU.

    Raises:
        ValueError: for ``cuda:N``, which would put every rank on the same GPU.
        RuntimeError: ``cuda`` without CUDA.
    """
    if name.startswith("cuda:"):
        raise ValueError(
            f"device {name!r} names one GPU, but data-parallel training puts rank r on cuda:LOCAL_RANK; "
            "use --device cuda (or auto)"
        )
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for, but CUDA is not available on this machine")
    if name in ("auto", "cuda") and torch.cuda.is_available():
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(
                f"local rank {local_rank} has no GPU: this machine has {torch.cuda.device_count()}; "
                "start at most that many processes per machine"
            )
        return torch.device(f"cuda:{local_rank}")
    return torch.device("cpu")


def backend_for(device: torch.device) -> str:
    """NCCL for CUDA ranks, gloo for CPU ranks."""
    return "nccl" if device.type == "cuda" else "gloo"


def init_process_group(device: torch.device, *, rank: int, world_size: int, init_method: str) -> None:
    """Join the process group with the backend that fits ``device`` (and make ``device`` current on CUDA)."""
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend_for(device), init_method=init_method, rank=rank, world_size=world_size)


def current_context(device_name: str) -> DistContext | None:
    """This process's :class:`DistContext`, or ``None`` when it trains alone.

    A process group the caller initialised is used as it is. Otherwise, when the environment says that a
    launcher (``torchrun``) started several ranks (``WORLD_SIZE`` > 1, with ``RANK``, ``LOCAL_RANK``,
    ``MASTER_ADDR``, ``MASTER_PORT``), the group is initialised from it (``env://``) and owned.
    """
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if dist.is_available() and dist.is_initialized():
        if dist.get_world_size() == 1:
            return None
        local_rank = int(os.environ.get("LOCAL_RANK", str(dist.get_rank())))
        device = rank_device(device_name, local_rank)
        return DistContext(dist.get_rank(), dist.get_world_size(), device)
    world_size = launched_world_size()
    if world_size <= 1:
        return None
    device = rank_device(device_name, local_rank)
    rank = int(os.environ["RANK"])
    init_process_group(device, rank=rank, world_size=world_size, init_method="env://")
    return DistContext(rank, world_size, device, owned=True)


def finish(context: DistContext | None) -> None:
    """Destroy the process group when this module initialised it."""
    if context is not None and context.owned and dist.is_initialized():
        dist.destroy_process_group()


def free_port() -> int:
    """A TCP port free on the loopback interface now (for a rendezvous on one machine)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- the shards ------------------------------------------------------------------------------------------


def epoch_permutation(num_pairs: int, seed: int, epoch: int) -> torch.Tensor:
    """The order of the training pairs in ``epoch``, the same on every rank (drawn on the CPU).

    Shapes:
        ``[num_pairs]``.
    """
    generator = torch.Generator().manual_seed(rank_seed(seed, -1, epoch))
    return torch.randperm(num_pairs, generator=generator)


def shard(order: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """Rank ``rank``'s part of ``order``: every ``world_size``-th entry from position ``rank``.

    The shards of all ranks are disjoint, together hold every entry once, and differ in length by at most 1.
    """
    return order[rank::world_size]


def shard_length(num_pairs: int, rank: int, world_size: int) -> int:
    """``len(shard(order, rank, world_size))`` for an ``order`` of ``num_pairs`` entries."""
    return len(range(rank, num_pairs, world_size))


def batch_slices(shard_len: int, num_pairs: int, world_size: int, batch_size: int) -> list[slice]:
    """Split a rank's shard into the batches of one epoch, the same number on every rank.

    The global batch stays ``batch_size``: each rank takes about ``batch_size / world_size`` pairs per step,
    and the number of steps, ``ceil(longest shard / ceil(batch_size / world_size))``, depends only on the run,
    not on the rank. Within a shard the batches differ in size by at most 1 (a shorter shard can end with an
    empty batch when per-rank batches hold one pair; its rank still joins that step's all-reduce).

    Args:
        shard_len: Length of this rank's shard.
        num_pairs: Training pairs of the epoch over all ranks.
        world_size: Number of ranks.
        batch_size: The global batch size (``TrainConfig.batch_size``).

    Returns:
        Slices into the shard, in order, covering it exactly.
    """
    local_batch = math.ceil(batch_size / world_size)
    longest = math.ceil(num_pairs / world_size)
    count = max(1, math.ceil(longest / local_batch))
    return [slice(j * shard_len // count, (j + 1) * shard_len // count) for j in range(count)]


def rank_seed(seed: int, rank: int, epoch: int) -> int:
    """A well-mixed 63-bit seed for (run seed, rank, epoch); rank ``-1`` is the seed all ranks share."""
    words = np.random.SeedSequence([seed & 0xFFFFFFFF, rank + 1, epoch]).generate_state(2, dtype=np.uint32)
    return int((int(words[0]) << 31) ^ int(words[1]))


# -- collectives -----------------------------------------------------------------------------------------


def broadcast_parameters(module: nn.Module) -> None:
    """Rank 0's parameters and dense buffers on every rank (what DDP does when it wraps a model)."""
    for tensor in list(module.parameters()) + list(module.buffers()):
        if tensor.layout == torch.strided:
            dist.broadcast(tensor.data, src=0)


def broadcast_buffers(module: nn.Module) -> None:
    """Rank 0's dense buffers on every rank.

    Called after :meth:`~models.base.Recommender.on_epoch_start`, where a model may redraw state from its
    rank's generator (PinSage's random-walk neighbourhoods), so that all replicas stay one model. Sparse
    buffers (a fixed adjacency) are data that every rank builds identically, and are skipped.
    """
    for buffer in module.buffers():
        if buffer.layout == torch.strided and buffer.numel() > 0:
            dist.broadcast(buffer.data, src=0)


def average_gradients(parameters: Iterable[nn.Parameter], batch_len: int, device: torch.device) -> int:
    """Replace every rank's gradients by the global-batch mean; returns the global batch size.

    Each rank's loss is a mean over its ``batch_len`` pairs, so the global mean's gradient is
    ``sum_r batch_len_r * grad_r / sum_r batch_len_r``. One flattened all-reduce carries the weighted
    gradients, a flag per parameter (did any rank give it a gradient?) and the batch sizes. A parameter no
    rank touched keeps no gradient, so the optimiser skips it as a single process would; sparse gradients
    are densified.

    Args:
        parameters: The model's parameters, in the same order on every rank.
        batch_len: Pairs in this rank's batch (0 for an empty batch, whose gradients are ``None``).
        device: Where the all-reduce buffer lives (the rank's device; NCCL needs CUDA tensors).
    """
    params = [p for p in parameters if p.requires_grad]
    pieces = []
    for p in params:
        grad = p.grad
        if grad is None:
            pieces.append(torch.zeros(p.numel(), device=device, dtype=torch.float32))
        else:
            dense = grad.to_dense() if grad.is_sparse else grad
            pieces.append(dense.reshape(-1).to(device=device, dtype=torch.float32) * batch_len)
    flags = torch.tensor([p.grad is not None for p in params], device=device, dtype=torch.float32)
    flat = torch.cat([*pieces, flags, torch.tensor([float(batch_len)], device=device)])
    dist.all_reduce(flat)
    total = int(flat[-1].item())
    offset = 0
    for p, piece in zip(params, pieces, strict=True):
        size = piece.numel()
        p.grad = (flat[offset : offset + size] / max(total, 1)).view_as(p).to(p.dtype)
        offset += size
    for p, touched in zip(params, flat[offset : offset + len(params)].tolist(), strict=True):
        if touched == 0:
            p.grad = None
    return total


def all_sum(value: torch.Tensor) -> torch.Tensor:
    """The sum of ``value`` over ranks (a new tensor)."""
    out = value.detach().clone()
    dist.all_reduce(out)
    return out


def broadcast_int(value: int, device: torch.device) -> int:
    """Rank 0's ``value`` on every rank."""
    tensor = torch.tensor([value], dtype=torch.long, device=device)
    dist.broadcast(tensor, src=0)
    return int(tensor.item())
