"""What torchrun tells each process it starts: who it is among the run's processes, where to meet.

``torchrun --nproc-per-node N -m logloss train`` starts N processes and sets in each one's
environment ``RANK`` (0 to ``WORLD_SIZE - 1``, unique in the run), ``WORLD_SIZE``, ``LOCAL_RANK``
and ``LOCAL_WORLD_SIZE`` (the same on this machine), and ``MASTER_ADDR``/``MASTER_PORT``, where
the process group meets.  A process started without them is a run of one process.

Kept free of torch: the command line refuses a batch that does not split over the processes, or a
backend that does not fit the device, before it loads torch.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

BACKENDS = ("gloo", "nccl")  # gloo moves CPU tensors, NCCL CUDA tensors
DEFAULT_TIMEOUT = 120.0  # seconds a process waits for the others (never torch's 30 minutes)
_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class Launch:
    """This process's place in the run, as its launcher described it.

    ``master`` is the ``(host, port)`` where the process group meets; ``None`` for a run of one
    process started without torchrun (rank 0 of 1, no process group).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    master: tuple[str, int] | None = None

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that prints and writes the run folder."""
        return self.rank == 0

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Launch:
        """The launch torchrun's variables describe, or one process when ``RANK`` and
        ``WORLD_SIZE`` are both unset.

        >>> Launch.from_environment({})
        Launch(rank=0, world_size=1, local_rank=0, local_world_size=1, master=None)
        >>> Launch.from_environment({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1",
        ...     "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}).rank
        1
        """
        environ = os.environ if environ is None else environ
        if "RANK" not in environ and "WORLD_SIZE" not in environ:
            return cls()
        missing = [name for name in _VARIABLES if not environ.get(name)]
        if missing:
            raise ValueError(
                f"started as one of several processes (RANK or WORLD_SIZE is set) but "
                f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not: start the "
                "processes with torchrun, which sets them all"
            )
        number = {name: _count(name, environ[name]) for name in _VARIABLES if name != "MASTER_ADDR"}
        launch = cls(
            rank=number["RANK"],
            world_size=number["WORLD_SIZE"],
            local_rank=number["LOCAL_RANK"],
            local_world_size=number["LOCAL_WORLD_SIZE"],
            master=(environ["MASTER_ADDR"], number["MASTER_PORT"]),
        )
        launch._check()
        return launch

    def _check(self) -> None:
        """Each rank below its world's size; the machine's processes a part of the world."""
        problems = [
            f"{name}={value} is not below {limit_name}={limit}"
            for name, value, limit_name, limit in (
                ("RANK", self.rank, "WORLD_SIZE", self.world_size),
                ("LOCAL_RANK", self.local_rank, "LOCAL_WORLD_SIZE", self.local_world_size),
            )
            if value >= limit
        ]
        if self.local_world_size > self.world_size:
            problems.append(
                f"LOCAL_WORLD_SIZE={self.local_world_size} exceeds WORLD_SIZE={self.world_size}"
            )
        if problems:
            raise ValueError(
                f"torchrun's environment does not describe a run: {'; '.join(problems)}; start "
                "the processes with torchrun"
            )


def _count(name: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise ValueError(f"environment variable {name} must be a whole number >= 0, got {text!r}")
    return value


def check_batch_split(batch_size: int, world_size: int) -> int:
    """The samples each process takes of a global batch of ``batch_size``: ``batch_size / W``.

    Raises:
        ValueError: ``batch_size`` is not a multiple of the world size ``W`` (the nearest
            multiples are suggested).

    >>> check_batch_split(256, 2)
    128
    """
    if batch_size % world_size:
        below = batch_size - batch_size % world_size
        above = below + world_size
        choices = f"{below} or {above}" if below else str(above)
        raise ValueError(
            f"the batch size {batch_size} is the global batch, split evenly over the "
            f"{world_size} processes: it must be a multiple of {world_size} "
            f"({batch_size} = {batch_size // world_size} x {world_size} + "
            f"{batch_size % world_size}); pass --batch-size {choices}"
        )
    return batch_size // world_size


def pick_backend(requested: str | None, device_type: str) -> str:
    """The process group's backend: gloo for a CPU run, NCCL for a CUDA run.

    Args:
        requested: ``"gloo"``, ``"nccl"``, or ``None`` for the device's own.
        device_type: ``"cpu"``, ``"cuda"`` or ``"mps"``.

    Raises:
        ValueError: an unknown backend, one that does not fit the device, or MPS (which no
            backend moves).

    >>> pick_backend(None, "cpu"), pick_backend(None, "cuda")
    ('gloo', 'nccl')
    """
    if requested is not None and requested not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {requested!r}")
    if device_type == "mps":
        raise ValueError(
            "several processes cannot train on mps: no process-group backend moves MPS "
            "tensors; pass --device cpu"
        )
    own = "nccl" if device_type == "cuda" else "gloo"
    if requested is not None and requested != own:
        fix = "pass --device cpu" if own == "nccl" else "pass --device cuda"
        raise ValueError(
            f"the {requested} backend cannot train on {device_type}: {own} is the backend for "
            f"{device_type} tensors; {fix}"
        )
    return own
