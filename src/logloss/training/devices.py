"""Which device to train on: CUDA, then Apple MPS, then the CPU.

``pick_device("auto")`` asks torch which accelerators are present, in that order of preference
(the article trained on ``mps``).  An explicit request for an absent accelerator is an error that
says what is available instead, never a silent fallback.
"""

from __future__ import annotations

import os

import torch

from logloss.training.launch import Launch

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def cuda_available() -> bool:
    """True when torch sees a usable CUDA device."""
    return bool(torch.cuda.is_available())


def mps_available() -> bool:
    """True when torch sees Apple's Metal (MPS) backend; False on builds without it."""
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def available_devices() -> list[str]:
    """The device kinds usable here, most preferred first; ``"cpu"`` is always last.

    >>> available_devices()[-1]
    'cpu'
    """
    found = []
    if cuda_available():
        found.append("cuda")
    if mps_available():
        found.append("mps")
    found.append("cpu")
    return found


def pick_device(requested: str = "auto") -> torch.device:
    """The torch device for ``requested``: ``auto`` = first of CUDA, MPS, CPU that is present.

    Args:
        requested: ``"auto"``, ``"cpu"``, ``"cuda"`` (or ``"cuda:N"``) or ``"mps"``.

    Returns:
        ``torch.device``.

    Raises:
        ValueError: an unknown name, or an accelerator that is not present here.

    >>> pick_device("cpu")
    device(type='cpu')
    """
    name = str(requested).strip().lower()
    kind = name.split(":", 1)[0]
    if kind not in DEVICE_CHOICES or (":" in name and kind != "cuda"):
        raise ValueError(
            f"unknown device {requested!r}: expected one of {', '.join(DEVICE_CHOICES)} "
            "(or cuda:N for a particular GPU)"
        )
    present = available_devices()
    if kind == "auto":
        return torch.device(present[0])
    if kind not in present:
        raise ValueError(
            f"device {requested!r} is not available on this machine (available: "
            f"{', '.join(present)}); pass --device auto or --device cpu"
        )
    return torch.device(name)


def usable_cores() -> int:
    """The CPUs this process may run on (a container may allow fewer than ``os.cpu_count()``)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no sched_getaffinity
        return os.cpu_count() or 1


def threads_per_process(local_processes: int) -> int:
    """The CPU threads of each of ``local_processes`` training processes on one machine: the
    usable cores shared evenly, at least one each.

    >>> threads_per_process(1) == usable_cores()
    True
    """
    return max(1, usable_cores() // local_processes)


def configure_threads(device: torch.device, threads: int | None = None) -> int:
    """Set torch's intra-op thread count for CPU work and return it.

    On the CPU every core should work on the matrix products; by default torch already uses one
    thread per core, but a container may report fewer usable cores than ``os.cpu_count()``.
    With an accelerator the CPU only feeds it, so the setting hardly matters.

    Args:
        device: the training device.
        threads: an explicit count, or None for the number of CPUs this process may use.
    """
    if threads is None:
        threads = usable_cores()
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    if device.type == "cpu" and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def process_device(device: torch.device, launch: Launch) -> torch.device:
    """The device of this process: under torchrun, process ``LOCAL_RANK`` of a machine trains on
    GPU ``LOCAL_RANK`` (``cuda`` becomes ``cuda:LOCAL_RANK``); otherwise ``device`` itself.

    Raises:
        ValueError: ``cuda:N`` named for several processes on one machine, or more processes
            on it than GPUs.

    >>> process_device(torch.device("cpu"), Launch(rank=1, world_size=2))
    device(type='cpu')
    """
    local = launch.local_world_size
    if launch.master is None or device.type != "cuda" or (device.index is not None and local == 1):
        return device
    if device.index is not None:
        raise ValueError(
            f"--device {device} names one GPU for the {local} processes on this machine: each "
            "process trains on its own GPU (cuda:LOCAL_RANK); pass --device cuda"
        )
    count = torch.cuda.device_count()
    if launch.local_rank >= count:
        raise ValueError(
            f"{local} processes on this machine but {count} GPU(s): start at most {count} "
            f"(torchrun --nproc-per-node {count}), or pass --device cpu"
        )
    torch.cuda.set_device(launch.local_rank)
    return torch.device("cuda", launch.local_rank)


def synchronize(device: torch.device) -> None:
    """Wait for queued work on ``device`` (for honest timings); a no-op on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
