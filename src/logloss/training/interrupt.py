"""Ctrl-C during training: the first one asks the loop to save and stop at a step boundary.

Under torchrun the launcher passes on the Ctrl-C or SIGTERM it receives to every process, so a
run of several processes also turns SIGTERM into the flag (:data:`LAUNCHER_SIGNALS`).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

LAUNCHER_SIGNALS = (signal.SIGINT, signal.SIGTERM)  # what torchrun passes on to its processes


class StopFlag:
    """Set by the first Ctrl-C (the loop saves and returns); a second Ctrl-C interrupts."""

    def __init__(self) -> None:
        self.requested = False

    def __bool__(self) -> bool:
        return self.requested


@contextmanager
def stop_on_interrupt(
    signals: tuple[signal.Signals, ...] = (signal.SIGINT,),
) -> Iterator[StopFlag]:
    """Turn each of ``signals`` (Ctrl-C's SIGINT by default) into a flag that the training loop
    checks between steps.

    A step is never cut in half (which could leave the optimiser half-updated); the loop saves
    a consistent state at the next step boundary.  A second signal interrupts at once.  Only the
    main thread can install handlers; elsewhere the flag simply never gets set by a signal.
    """
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum: int, frame: Any) -> None:
        if flag.requested:
            raise KeyboardInterrupt
        flag.requested = True

    previous = {number: signal.signal(number, handler) for number in signals}
    try:
        yield flag
    finally:
        for number, action in previous.items():
            signal.signal(number, action)
