"""Running the app: a listening socket on loopback by default, uvicorn in front or behind.

uvicorn runs with the app's connection limits (``app.state.limits``, a
:class:`~logloss.serve.limits.ServeLimits`): its own ``timeout_keep_alive``,
``limit_concurrency`` and ``h11_max_incomplete_event_size``, and the h11 protocol of
:mod:`logloss.serve.connections` for what uvicorn has no setting for (a deadline per request, a
cap on open connections).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI

from logloss.serve.connections import bounded_protocol
from logloss.serve.limits import ServeLimits


def bind_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A listening TCP socket on (host, port); port 0 picks a free port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise ValueError(f"cannot listen on {host}:{port} ({error}); try another --port") from None
    sock.listen(128)
    sock.setblocking(False)
    return sock


def socket_url(sock: socket.socket) -> str:
    """``http://host:port`` of a bound socket (IPv6 hosts in brackets)."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _server(app: FastAPI, log_level: str) -> uvicorn.Server:
    limits = getattr(app.state, "limits", None) or ServeLimits()
    config = uvicorn.Config(
        app,
        log_level=log_level,
        access_log=False,
        lifespan="off",
        http=bounded_protocol(limits),  # type: ignore[arg-type]  # a factory, as uvicorn calls it
        timeout_keep_alive=limits.keep_alive_s,  # type: ignore[arg-type]  # used as a float
        limit_concurrency=limits.max_connections,
        h11_max_incomplete_event_size=limits.max_header_bytes,
    )
    return uvicorn.Server(config)


def serve(
    app: FastAPI,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    announce: Callable[[str], object] = print,
    log_level: str = "warning",
) -> None:
    """Serve ``app`` in the foreground until interrupted; ``announce(url)`` once listening."""
    sock = bind_socket(host, port)
    announce(socket_url(sock))
    _server(app, log_level).run(sockets=[sock])


@contextmanager
def running_server(
    app: FastAPI, host: str = "127.0.0.1", port: int = 0, *, log_level: str = "warning"
) -> Iterator[str]:
    """Run ``app`` in a background thread; yields its base URL, stops it on exit."""
    sock = bind_socket(host, port)
    server = _server(app, log_level)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        for _ in range(1000):  # up to 10 s for start-up
            if server.started or not thread.is_alive():
                break
            threading.Event().wait(0.01)
        if not server.started:
            raise RuntimeError("the server did not start within 10 s")
        yield socket_url(sock)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
