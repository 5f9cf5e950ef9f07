"""Every limit of ``logloss serve`` in one place (docs/security.md gives their reasons)."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields


@dataclass(frozen=True)
class ServeLimits:
    """The sizes, counts and times the server allows; the defaults are those of the command.

    Attributes:
        max_body_bytes: a request body over this gets 413 (by Content-Length, or counted as it
            streams in).
        max_buffered_body_bytes: request bodies held in memory at once, all connections
            together; a body that would pass it gets 503 with Retry-After.
        max_png_pixels: width * height of a PNG, read from its header before decoding; more
            gets 413.
        max_png_side: the longer side of a PNG, from its header; longer gets 413.
        work_side: a decoded PNG is reduced by a whole factor (box filter) until its longer side
            is at most this many pixels, before the MNIST preprocessing.
        max_decodes: PNG requests decoded and preprocessed at once.
        decode_wait_s: how long a PNG request waits for a decode slot; then 503 with
            Retry-After.
        request_timeout_s: time to send a whole request (headers and body), counted from the
            connection's opening or the end of the previous answer; then the connection is
            closed.
        keep_alive_s: an idle connection between requests is closed after this (uvicorn's
            ``timeout_keep_alive``).
        max_connections: open connections at once; a further one is closed at once, and a
            request made while this many are open gets 503 (uvicorn's ``limit_concurrency``).
        max_header_bytes: the request line and headers (uvicorn's
            ``h11_max_incomplete_event_size``); more gets 400.
        max_error_chars: an error answer's ``detail`` is cut to this many characters.

    >>> ServeLimits(max_body_bytes=0)
    Traceback (most recent call last):
    ...
    ValueError: ServeLimits.max_body_bytes = 0; use a positive whole number
    """

    max_body_bytes: int = 1 << 20  # a 280x280 canvas PNG is ~10 KiB, a JSON 28x28 image ~4 KiB
    max_buffered_body_bytes: int = 64 << 20
    max_png_pixels: int = 2048 * 2048  # decoded: at most 16 MiB of RGBA
    max_png_side: int = 4096
    work_side: int = 512  # the ink's bounding box becomes 20x20: 512 is plenty
    max_decodes: int = 2
    decode_wait_s: float = 10.0
    request_timeout_s: float = 10.0
    keep_alive_s: float = 5.0
    max_connections: int = 256
    max_header_bytes: int = 16384
    max_error_chars: int = 600

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            whole = field.type == "int"  # the annotation, as a string (postponed annotations)
            kinds = int if whole else (int, float)
            if isinstance(value, bool) or not isinstance(value, kinds) or not 0 < value < math.inf:
                kind = "whole number" if whole else "finite number of seconds"
                raise ValueError(f"ServeLimits.{field.name} = {value!r}; use a positive {kind}")
