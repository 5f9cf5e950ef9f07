"""The process group and the collectives: which ranks, which device carries the messages.

Every collective here moves O(N) numbers (or a few integers), never logits.  They run on
``torch.distributed`` with whatever backend the group has: gloo on CPU tensors, NCCL on CUDA
tensors (messages are moved to the device the backend takes, a copy of O(N) numbers).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class ShardLayout:
    """The group and how the V classes are split: rank r holds [offsets[r], offsets[r] + sizes[r]).

    ``device`` is where this group's collectives take their tensors.
    """

    group: dist.ProcessGroup | None
    rank: int
    sizes: tuple[int, ...]
    device: torch.device

    @property
    def offset(self) -> int:
        return sum(self.sizes[: self.rank])

    @property
    def local_size(self) -> int:
        return self.sizes[self.rank]

    @property
    def n_classes(self) -> int:
        return sum(self.sizes)


def resolve_group(group: dist.ProcessGroup | None) -> tuple[int, int]:
    """(rank in ``group``, its size); ``None`` is the default group.

    Raises ValueError when torch.distributed is not initialised or this process is not in
    ``group`` (the same on every rank that gets this far, so nobody waits in a collective).
    """
    if not dist.is_available() or not dist.is_initialized():
        raise ValueError(
            "logloss.distributed needs an initialised process group: call "
            "torch.distributed.init_process_group(backend='gloo' (CPU) or 'nccl' (CUDA), ...) "
            "first (torchrun sets the rank and world size), then pass group= or use the default"
        )
    rank = dist.get_rank(group)
    if rank < 0:
        raise ValueError(
            f"this process (global rank {dist.get_rank()}) is not a member of the group passed "
            "as group=; call the loss only on the group's ranks"
        )
    return rank, dist.get_world_size(group)


def message_device(
    group: dist.ProcessGroup | None, data_device: torch.device | None = None
) -> torch.device:
    """The device for this group's messages: CUDA data's own device when the backend has NCCL,
    the current CUDA device for an NCCL-only group (it cannot carry CPU tensors), else the CPU.

    ``data_device=None`` (the input checks, before ranks agree on a device) depends only on the
    backend, so every rank picks the same kind of device.
    """
    backend = str(dist.get_backend(group)).lower()
    if data_device is not None and data_device.type == "cuda" and "nccl" in backend:
        return data_device
    if backend == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_gather_stacked(
    x: torch.Tensor, group: dist.ProcessGroup | None, device: torch.device
) -> torch.Tensor:
    """(P, *x.shape): every rank's ``x`` (same shape and dtype on all ranks), on x's device.

    Sent from ``device`` (the group's message device); the result is bit-identical on all ranks.
    """
    world = dist.get_world_size(group)
    send = x.to(device).contiguous()
    out = torch.empty((world, *x.shape), dtype=x.dtype, device=device)
    dist.all_gather(list(out.unbind(0)), send, group=group)
    return out.to(x.device)


def all_reduce_sum(
    x: torch.Tensor, group: dist.ProcessGroup | None, device: torch.device
) -> torch.Tensor:
    """Sum of ``x`` (contiguous) over the ranks, written into ``x``."""
    moved = x.to(device)  # x itself when it is on the message device
    dist.all_reduce(moved, op=dist.ReduceOp.SUM, group=group)
    return moved if moved is x else x.copy_(moved)
