"""Slow and surplus connections: what uvicorn's settings do not cover, on its h11 protocol.

uvicorn closes a connection idle *between* requests (``timeout_keep_alive``), bounds the
request line and headers in bytes (``h11_max_incomplete_event_size``) and answers 503 past
``limit_concurrency``; but it waits forever for a request that never comes, for headers sent a
byte at a time and for a body that stalls, and it keeps every connection it accepts.
:class:`BoundedH11Protocol` adds the two missing rules (see :class:`ServeLimits`):

- a deadline per request: ``request_timeout_s`` from the connection's opening, or from the end
  of the previous answer, to the last byte of the request's body; then the connection is closed;
- a cap: a connection beyond ``max_connections`` open ones is closed as soon as it is accepted.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from logloss.serve.limits import ServeLimits


class BoundedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline per request and a cap on open connections."""

    def __init__(self, *args: Any, limits: ServeLimits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits
        self.deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            transport.close()  # connection_lost follows and forgets it
            return
        self.arm_deadline()

    def handle_events(self) -> None:
        super().handle_events()
        if self.conn.their_state is not h11.IDLE and self.conn.their_state is not h11.SEND_BODY:
            self.disarm_deadline()  # the whole request is in (or the connection is done)

    def on_response_complete(self) -> None:
        self.arm_deadline()  # first: the base class may read a pipelined request at once
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self.disarm_deadline()
        super().connection_lost(exc)

    def arm_deadline(self) -> None:
        self.disarm_deadline()
        self.deadline = self.loop.call_later(self.limits.request_timeout_s, self.too_slow)

    def disarm_deadline(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def too_slow(self) -> None:
        """The request did not arrive in time: close (a route reading its body gets
        ``http.disconnect``)."""
        self.deadline = None
        if not self.transport.is_closing():
            self.transport.close()


def bounded_protocol(limits: ServeLimits) -> Callable[..., BoundedH11Protocol]:
    """The protocol factory to give ``uvicorn.Config(http=...)``."""
    return functools.partial(BoundedH11Protocol, limits=limits)
