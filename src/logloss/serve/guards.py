"""What the app checks before a request reaches a route, and the headers it adds to every answer.

- ``RequestGuard``: the Host header must name this server (DNS rebinding), a POST must say
  ``application/json`` or ``image/png`` (a cross-site form cannot send either without a
  preflight, which this server never grants), and every answer forbids framing and sniffing.
- ``BodyLimit``: request bodies are counted as they arrive, one by one and all together.
- ``error_response``: every error answer is ``{"detail": ...}``, its length capped.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from logloss.serve.images import short_repr
from logloss.serve.limits import ServeLimits
from logloss.serve.schemas import PolicyJSONResponse

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})  # listen on every interface
POST_TYPES = ("application/json", "image/png")
# Only the page's own files, no inline script, never inside a frame.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-resource-policy", b"same-origin"),
)


def error_response(
    detail: str, status_code: int, limits: ServeLimits, *, retry_after_s: int | None = None
) -> PolicyJSONResponse:
    """``{"detail": detail}`` cut to ``limits.max_error_chars`` characters (no request can
    make the server echo a megabyte back), with Retry-After when given.

    >>> error_response("x" * 50, 422, ServeLimits(max_error_chars=20)).body
    b'{"detail":"xxxxxxxxxxxxxxxxxx \\\\u2026"}'
    """
    if len(detail) > limits.max_error_chars:
        detail = detail[: limits.max_error_chars - 2] + " \u2026"
    headers = {"Retry-After": str(retry_after_s)} if retry_after_s is not None else None
    return PolicyJSONResponse({"detail": detail}, status_code, headers=headers)


def allowed_hosts(bind_host: str) -> frozenset[str] | None:
    """The names a request's Host header may give for a server listening on ``bind_host``:
    the loopback names and ``bind_host`` itself; ``None`` (any IP address, plus this machine's
    name) for a wildcard address, since clients then come by the addresses of its interfaces.

    >>> sorted(allowed_hosts("127.0.0.1"))
    ['127.0.0.1', '::1', 'localhost']
    """
    if bind_host in WILDCARD_HOSTS:
        return None
    return LOOPBACK_NAMES | {bind_host.lower().strip("[]")}


def host_name(header: str) -> str:
    """The name in a Host header, without port or IPv6 brackets, lower case.

    >>> host_name("[::1]:8000"), host_name("LocalHost:80"), host_name("127.0.0.1")
    ('::1', 'localhost', '127.0.0.1')
    """
    if header.startswith("["):
        return header[1:].partition("]")[0].lower()
    return header.rpartition(":")[0].lower() if ":" in header else header.lower()


def host_is_allowed(name: str, allowed: frozenset[str] | None) -> bool:
    """Whether a Host name is one of ``allowed``; with ``None``, any IP address (an address is
    never a DNS-rebinding name) or this machine's own name."""
    if allowed is not None:
        return name in allowed
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return name in (LOOPBACK_NAMES | {socket.gethostname().lower()})
    return True


def post_type_problem(scope: Scope) -> str | None:
    """Why a POST's Content-Type is refused (missing, or neither JSON nor PNG), or None."""
    if scope["method"] != "POST":
        return None
    header = dict(scope["headers"]).get(b"content-type", b"").decode("latin-1")
    kind = header.split(";")[0].strip().lower()
    if kind in POST_TYPES:
        return None
    given = f"Content-Type {short_repr(kind)}" if kind else "no Content-Type"
    return f"{given} is not supported; send application/json or image/png"


class RequestGuard:
    """Refuse a foreign Host (400) and a POST without a JSON or PNG Content-Type (415) before
    the body is read; add ``SECURITY_HEADERS`` to every answer."""

    def __init__(self, app: ASGIApp, limits: ServeLimits, hosts: frozenset[str] | None) -> None:
        self.app = app
        self.limits = limits
        self.hosts = hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *SECURITY_HEADERS]
            await send(message)

        problem = self.problem(scope)
        if problem is not None:
            await error_response(*problem, self.limits)(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)

    def problem(self, scope: Scope) -> tuple[str, int] | None:
        """(detail, status) for a request refused here, or None."""
        header = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
        if not host_is_allowed(host_name(header), self.hosts):
            names = ", ".join(sorted(self.hosts or ("an IP address", "localhost")))
            return (
                f"Host {short_repr(header)} is not this server's name; open it by one of: {names}",
                400,
            )
        post = post_type_problem(scope)
        return None if post is None else (post, 415)


class BodyLimit:
    """Answer 413 to a body over ``limits.max_body_bytes`` (by Content-Length, then by
    counting), and 503 when the bodies held at once would pass
    ``limits.max_buffered_body_bytes``.

    The body is read here and replayed to the app, so a client that lies about Content-Length
    or streams chunks is cut off as soon as it passes the limit.  A body is counted as held
    until its answer is sent.
    """

    def __init__(self, app: ASGIApp, limits: ServeLimits) -> None:
        self.app = app
        self.limits = limits
        self.held = 0  # bytes of bodies held now, all requests together (one event loop)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length", b"0")
        if not length.isdigit():
            await error_response("invalid Content-Length header", 400, self.limits)(
                scope, receive, send
            )
            return
        body = await self.read(int(length), receive)
        if isinstance(body, bytes):
            try:
                await self.app(scope, self.replay(body, receive), send)
            finally:
                self.held -= len(body)
        elif body is not None:
            detail, status = body
            retry = 1 if status == 503 else None
            await error_response(detail, status, self.limits, retry_after_s=retry)(
                scope, receive, send
            )

    async def read(self, declared: int, receive: Receive) -> bytes | tuple[str, int] | None:
        """The whole body (counted in ``held`` until the caller releases it), or (detail,
        status) when it is refused, or None when the client went away."""
        limit = self.limits.max_body_bytes
        too_big = (f"request body over {limit} bytes; send a smaller image", 413)
        if declared > limit:
            return too_big
        chunks: list[bytes] = []
        size = 0
        try:
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    return None
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    return too_big
                if self.held + len(chunk) > self.limits.max_buffered_body_bytes:
                    return ("the server holds too many request bodies now; try again shortly", 503)
                chunks.append(chunk)
                self.held += len(chunk)
                if not message.get("more_body", False):
                    body, chunks = b"".join(chunks), []  # handed over: the caller releases it
                    return body
        finally:
            self.held -= sum(map(len, chunks))

    @staticmethod
    def replay(body: bytes, receive: Receive) -> Receive:
        """A ``receive`` that gives ``body`` once, then whatever the client sends next."""
        given = False

        async def replayed() -> Message:
            nonlocal given
            if not given:
                given = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return replayed
