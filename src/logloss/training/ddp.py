"""Several processes training one model: the process group torchrun's ranks join, and what
crosses it.

Every rank holds the whole model and the whole dataset (MNIST is small).  A global batch of ``B``
samples is split evenly, rank ``r`` taking its rows ``[r B / W, (r + 1) B / W)``
(:meth:`World.share`), and ``DistributedDataParallel`` averages the gradients over the ``W``
ranks during the backward pass, so that every rank takes the optimiser step one process would
take on the whole batch, up to the order of floating-point additions.  Besides the gradients only
a few numbers cross the ranks: the running loss and accuracy sums, evaluation sums, a stop flag.

A run of one process (no torchrun) is rank 0 of a world of 1 without a process group: every
collective below is then the identity, so the training loop is written once.

Every wait on another rank is bounded by the process group's ``timeout``: a rank that died closes
its sockets and the others fail at their next collective; a rank that stopped answering makes
them fail after ``timeout`` seconds.  Either way :class:`ProcessGroupError` says so in one line.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import re
import socket
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from logloss.training.launch import DEFAULT_TIMEOUT, Launch, pick_backend


class ProcessGroupError(RuntimeError):
    """The run's processes could not meet, or one of them failed or stopped answering."""


@dataclass(frozen=True)
class World:
    """This process's place among the run's processes, and the collectives the loop uses.

    ``backend`` is ``None`` for a run of one process without a process group; ``device`` is the
    training device, where the tensors that cross ranks live (CUDA for NCCL, the CPU for gloo).
    """

    launch: Launch
    device: torch.device
    backend: str | None = None
    timeout: float = DEFAULT_TIMEOUT

    @property
    def rank(self) -> int:
        return self.launch.rank

    @property
    def size(self) -> int:
        return self.launch.world_size

    @property
    def is_main(self) -> bool:
        """Rank 0, which prints and writes the run folder."""
        return self.launch.is_main

    def share(self, n: int) -> slice:
        """The rows of a batch of ``n`` that this rank takes: ``n / W`` each when ``W`` divides
        ``n``; otherwise (an epoch's last batch) the first ``n mod W`` ranks take one more.

        >>> World(Launch(rank=1, world_size=3), torch.device("cpu")).share(7)
        slice(3, 5, None)
        """
        base, extra = divmod(n, self.size)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (self.rank < extra))

    def sum(self, values: Sequence[float]) -> list[float]:
        """Each of ``values`` summed over the ranks, in one float64 ``all_reduce`` (exact for
        counts below 2^53); in one process the values themselves, as floats."""
        if self.backend is None:
            return [float(v) for v in values]
        total = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self.device)
        dist.all_reduce(total)
        return total.tolist()

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` is true on any rank: every rank gets the same answer."""
        return self.sum([flag])[0] > 0

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every rank's ``tensor`` (the same shape on each), stacked: ``(W, *shape)`` on the CPU."""
        if self.backend is None:
            return tensor.detach().cpu()[None]
        local = tensor.detach().to(self.device)
        parts = [torch.empty_like(local) for _ in range(self.size)]
        dist.all_gather(parts, local)
        return torch.stack(parts).cpu()

    def broadcast(self, tensors: Iterable[torch.Tensor]) -> None:
        """Overwrite each of ``tensors`` (on the device, the same order on every rank) with rank
        0's values, in place."""
        if self.backend is None:
            return
        with torch.no_grad():
            for tensor in tensors:
                dist.broadcast(tensor, src=0)

    def wrap(self, model: nn.Module) -> nn.Module:
        """``DistributedDataParallel(model)``: rank 0's weights are copied to every rank now, and
        each backward pass averages the gradients over the ranks.  In one process, ``model``."""
        if self.backend is None:
            return model
        devices = [self.device.index] if self.device.type == "cuda" else None
        # The gradients live in DDP's all-reduce buckets (no copy in and out at every step),
        # and the network uses every parameter at every step (a static graph).
        return DistributedDataParallel(
            model, device_ids=devices, gradient_as_bucket_view=True, static_graph=True
        )

    def check_same_options(self, options: Mapping[str, Any]) -> None:
        """Refuse to go on unless every rank was started with rank 0's options.

        Each rank hashes the JSON of its ``options`` (SHA-256, its first 8 bytes) and the hashes
        are gathered, so that every rank compares rank 0's with each one and all stop together.
        """
        text = json.dumps(dict(options), sort_keys=True)
        digest = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big", signed=True)
        hashes = self.gather(torch.tensor([digest], dtype=torch.int64))[:, 0].tolist()
        differ = [rank for rank, value in enumerate(hashes) if value != hashes[0]]
        if differ:
            raise ValueError(
                f"rank(s) {', '.join(map(str, differ))} of {self.size} were started with options "
                f"that differ from rank 0's (options hash {hashes[0] & 0xFFFFFFFF:08x} on rank 0, "
                f"{hashes[differ[0]] & 0xFFFFFFFF:08x} on rank {differ[0]}): start every process "
                "with the same command"
            )

    @contextmanager
    def all_or_none(self) -> Iterator[None]:
        """Run a block on every rank and go on only if it succeeded on every rank.

        A ``ValueError`` or ``OSError`` on some rank stops every rank: rank 0 raises its own
        error, or else a ``ValueError`` ``"rank R: <its message>"`` for the lowest failing rank
        ``R`` (the other ranks raise that too).  In one process the error passes unchanged.
        """
        if self.backend is None:
            yield
            return
        failure: ValueError | OSError | None = None
        try:
            yield
        except (ValueError, OSError) as error:
            failure = error
        self._stop_if_any_failed(failure)

    def _stop_if_any_failed(self, failure: ValueError | OSError | None) -> None:
        """The collective half of :meth:`all_or_none`: which ranks failed (a gather of message
        lengths, -1 for none), then the lowest one's message (a broadcast of its bytes)."""
        mine = str(failure).encode() if failure is not None else b""
        length = torch.tensor([len(mine) if failure is not None else -1], dtype=torch.int64)
        lengths = self.gather(length)[:, 0].tolist()
        failed = [rank for rank, n in enumerate(lengths) if n >= 0]
        if not failed:
            return
        first = failed[0]
        message = torch.zeros(lengths[first], dtype=torch.uint8, device=self.device)
        if self.rank == first:
            message.copy_(torch.frombuffer(bytearray(mine), dtype=torch.uint8))
        if len(message):
            dist.broadcast(message, src=first)
        if self.is_main and failure is not None:
            raise failure
        raise ValueError(f"rank {first}: {bytes(message.cpu().tolist()).decode()}")


@contextmanager
def joined(
    launch: Launch,
    device: torch.device,
    *,
    backend: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> Iterator[World]:
    """Join the process group ``launch`` describes, and leave it at the end, whatever happens.

    One process (``launch.master`` is ``None``): no group, a :class:`World` of one.  Otherwise
    ``backend`` (default: gloo on the CPU, NCCL on CUDA) with ``timeout`` seconds for every wait.

    Raises:
        ValueError: a backend that does not fit the device, or a timeout that is not positive.
        ProcessGroupError: the ranks did not all meet within ``timeout``, or, inside the block,
            a collective failed because another rank died or stopped answering.
    """
    if not timeout > 0:
        raise ValueError(f"the process group's timeout must be > 0 seconds, got {timeout}")
    if launch.master is None:
        if backend is not None:
            raise ValueError(
                f"backend {backend!r} is for processes started by torchrun (RANK and WORLD_SIZE "
                "are not set): start with torchrun --nproc-per-node N -m logloss train ..."
            )
        yield World(launch, device, timeout=timeout)
        return
    world = World(launch, device, pick_backend(backend, device.type), timeout)
    _meet(world)
    try:
        yield world
    except RuntimeError as error:
        if isinstance(error, ProcessGroupError) or not _communication_failure(error):
            raise
        raise ProcessGroupError(
            f"rank {world.rank}: lost contact with the run's other processes: one of them failed "
            f"or did not answer within {timeout:g} s ({_first_sentence(error)})"
        ) from error
    finally:
        dist.destroy_process_group()


def _meet(world: World) -> None:
    """``init_process_group`` from torchrun's variables, every wait bounded by the timeout."""
    host, port = world.launch.master
    where = f"{host}:{port}"
    if not world.is_main:
        _wait_for_listener(world)
    try:
        dist.init_process_group(
            world.backend,
            rank=world.rank,
            world_size=world.size,
            timeout=datetime.timedelta(seconds=world.timeout),
            device_id=world.device if world.device.type == "cuda" else None,
        )
    except (RuntimeError, ValueError) as error:
        raise ProcessGroupError(
            f"rank {world.rank}: the run's {world.size} processes did not all meet at {where} "
            f"within {world.timeout:g} s ({_first_sentence(error)}): start every process, with "
            "the same rendezvous address"
        ) from error


def _wait_for_listener(world: World) -> None:
    """Wait until something accepts connections at the rendezvous address, at most the timeout:
    a clear error instead of torch's retry logs when nothing ever does."""
    host, port = world.launch.master
    deadline = time.monotonic() + world.timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=min(world.timeout, 5.0)):
                return
        except OSError as error:
            if time.monotonic() >= deadline:
                raise ProcessGroupError(
                    f"rank {world.rank}: cannot reach the rendezvous at {host}:{port} within "
                    f"{world.timeout:g} s ({error.strerror or error}): start rank 0's machine "
                    "first (torchrun --node-rank 0) and check the address (--rdzv-endpoint, or "
                    "MASTER_ADDR and MASTER_PORT)"
                ) from None
        time.sleep(0.2)


def _communication_failure(error: BaseException) -> bool:
    """Whether a collective failed for want of another rank: torch's distributed errors, and the
    RuntimeErrors of gloo's transport and of NCCL, which name them."""
    text = str(error)
    return isinstance(error, dist.DistError) or "gloo/transport" in text or "NCCL" in text


def _first_sentence(error: BaseException) -> str:
    """The first sentence of a torch error, without the ``[source.cc:123]`` it starts with.

    >>> _first_sentence(RuntimeError("[a/pair.cc:537] Read error: reset by peer. Check the logs"))
    'Read error: reset by peer'
    """
    text = re.sub(r"^\[[^\]]*\]\s*", "", str(error).strip())
    return text.split("\n", 1)[0].split(". ", 1)[0].rstrip(".")
