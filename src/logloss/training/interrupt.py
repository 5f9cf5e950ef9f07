"""Ctrl-C during training: the first one asks the loop to save and stop at a step boundary."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class StopFlag:
    """Set by the first Ctrl-C (the loop saves and returns); a second Ctrl-C interrupts."""

    def __init__(self) -> None:
        self.requested = False

    def __bool__(self) -> bool:
        return self.requested


@contextmanager
def stop_on_interrupt() -> Iterator[StopFlag]:
    """Turn SIGINT into a flag that the training loop checks between steps.

    A step is never cut in half (which could leave the optimiser half-updated); the loop saves
    a consistent state at the next step boundary.  Only the main thread can install handlers;
    elsewhere the flag simply never gets set by a signal.
    """
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum: int, frame: Any) -> None:
        if flag.requested:
            raise KeyboardInterrupt
        flag.requested = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)
