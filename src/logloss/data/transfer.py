"""One HTTP(S) GET that cannot hang: a timeout on every socket wait, a deadline, a minimum rate.

A socket timeout alone does not bound a transfer: a server sending one byte per second answers
every read in time and a 4.5 KB file takes 75 minutes (issue 13, item 9).  So each transfer also has
an overall deadline, enforced by a watchdog thread that shuts down the transfer's sockets (waking
any read blocked on them, during the TLS handshake and the headers too), and a minimum rate,
averaged over a window, checked as the body arrives.  Proxies from the environment
(``https_proxy`` ...) are honoured as by ``urllib``.  Name resolution (DNS) is bounded only by the
system resolver's own timeout.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import math
import socket
import ssl
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, fields
from typing import Any

__all__ = ["DownloadLimits", "TransferTooSlow", "http_get"]

_CHUNK = 1 << 16


@dataclass(frozen=True)
class DownloadLimits:
    """How long one download may take, and how often a broken one is tried again.

    Attributes:
        timeout: seconds any single socket wait (connect, TLS handshake step, read) may take.
        deadline: seconds one transfer of one file from one mirror may take in all.
        min_rate: bytes per second below which a transfer is abandoned, averaged over each
            ``rate_window`` seconds of the body.
        rate_window: seconds over which the rate is measured.
        retries: further attempts on the same mirror after a broken transfer (connection reset or
            cut short, a socket wait timing out, an HTTP 5xx answer); a refusal (HTTP 4xx, no
            connection), wrong bytes or a too slow transfer moves on to the next mirror at once.
        retry_delay: seconds to wait before trying again.

    >>> DownloadLimits(deadline=0)
    Traceback (most recent call last):
    ...
    ValueError: DownloadLimits: deadline must be a number > 0, got 0
    """

    timeout: float = 30.0
    deadline: float = 600.0
    min_rate: float = 4096.0
    rate_window: float = 30.0
    retries: int = 1
    retry_delay: float = 1.0

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            kind = int if field.name == "retries" else (int, float)
            zero_allowed = field.name in ("retries", "retry_delay")
            if (
                isinstance(value, bool)
                or not isinstance(value, kind)
                or not math.isfinite(value)
                or value < 0
                or (value == 0 and not zero_allowed)
            ):
                rule = "an integer" if field.name == "retries" else "a number"
                rule += " >= 0" if zero_allowed else " > 0"
                raise ValueError(f"DownloadLimits: {field.name} must be {rule}, got {value!r}")


class TransferTooSlow(Exception):
    """A transfer passed its deadline or fell below the minimum rate."""


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed, or never connected
        sock.shutdown(socket.SHUT_RDWR)


class _Watchdog:
    """Shuts down every socket of one transfer once ``seconds`` have passed, so that no read,
    however slowly its bytes trickle in, outlives the deadline."""

    def __init__(self, seconds: float) -> None:
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> _Watchdog:
        self._timer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._timer.cancel()
        self._timer.join()

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            if self.expired:
                _shutdown(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                _shutdown(sock)


class _WatchedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, *args: Any, watchdog: _Watchdog, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._watchdog = watchdog

    def connect(self) -> None:
        super().connect()
        self._watchdog.watch(self.sock)


class _WatchedHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, watchdog: _Watchdog) -> None:
        super().__init__()
        self._watchdog = watchdog

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        connection = functools.partial(_WatchedHTTPConnection, watchdog=self._watchdog)
        return self.do_open(connection, req)


class _WatchedSSLContext(ssl.SSLContext):
    """Python's default HTTPS context, except that the watchdog sees each socket before its TLS
    handshake (a server can stall the handshake as well as the body)."""

    watchdog: _Watchdog

    def wrap_socket(self, sock: socket.socket, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        wrapped = super().wrap_socket(sock, *args, **{**kwargs, "do_handshake_on_connect": False})
        self.watchdog.watch(wrapped)
        wrapped.do_handshake()
        return wrapped


def _opener(watchdog: _Watchdog) -> urllib.request.OpenerDirector:
    # What ssl.create_default_context() sets up: certificates verified against the system's
    # store ($SSL_CERT_FILE honoured), host names checked; plus HTTP/1.1 as http.client asks.
    context = _WatchedSSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_default_certs()
    context.set_alpn_protocols(["http/1.1"])
    context.watchdog = watchdog
    https = urllib.request.HTTPSHandler(context=context)
    return urllib.request.build_opener(_WatchedHTTPHandler(watchdog), https)


def _deadline_error(limits: DownloadLimits) -> TransferTooSlow:
    return TransferTooSlow(f"gave up at the deadline of {limits.deadline:g} s for one transfer")


def _body(
    response: http.client.HTTPResponse, limits: DownloadLimits, watchdog: _Watchdog
) -> Iterator[bytes]:
    """The body's pieces as they arrive (one socket read each, so slow data is seen at once)."""
    window_start, window_bytes = time.monotonic(), 0
    while True:
        try:
            chunk = response.read1(_CHUNK)
        except (OSError, http.client.HTTPException):
            if watchdog.expired:
                raise _deadline_error(limits) from None
            raise
        if not chunk:
            if watchdog.expired:  # the watchdog's shutdown reads as the end of the data
                raise _deadline_error(limits)
            return
        window_bytes += len(chunk)
        elapsed = time.monotonic() - window_start
        if elapsed >= limits.rate_window:
            if window_bytes < limits.min_rate * elapsed:
                raise TransferTooSlow(
                    f"slower than the minimum of {limits.min_rate:g} bytes/s "
                    f"({window_bytes} bytes in {elapsed:.1f} s)"
                )
            window_start, window_bytes = time.monotonic(), 0
        yield chunk


@contextlib.contextmanager
def http_get(
    url: str, limits: DownloadLimits, headers: dict[str, str] | None = None
) -> Iterator[tuple[int | None, Iterator[bytes]]]:
    """GET ``url`` within ``limits``: yields ``(Content-Length or None, the body's pieces)``.

    Raises:
        TransferTooSlow: the deadline passed or the rate fell below ``limits.min_rate``.
        urllib.error.URLError, urllib.error.HTTPError, http.client.HTTPException, OSError: as
            ``urllib.request.urlopen`` and reading its answer do.
    """
    request = urllib.request.Request(url, headers=headers or {})
    with _Watchdog(limits.deadline) as watchdog:
        try:
            response = _opener(watchdog).open(request, timeout=limits.timeout)
        except (OSError, http.client.HTTPException):
            if watchdog.expired:
                raise _deadline_error(limits) from None
            raise
        with response:
            declared = response.headers.get("Content-Length", "")
            length = int(declared) if declared.isdigit() else None
            yield length, _body(response, limits, watchdog)
