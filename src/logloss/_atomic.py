"""Write a file so that readers see the old file or the complete new one, never half of it."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """Open a temporary file beside ``path`` for binary writing; rename it onto ``path`` on success.

    The temporary file lives in the destination folder (``os.replace`` is atomic only within one
    file system), is created with the usual permissions (0o666 less the umask), and is removed if
    the body raises, ``KeyboardInterrupt`` included.

    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> with atomic_write(folder / "a.bin") as f:
    ...     _ = f.write(b"xyz")
    >>> (folder / "a.bin").read_bytes(), sorted(p.name for p in folder.iterdir())
    (b'xyz', ['a.bin'])
    """
    target = Path(path)
    temporary = target.with_name(f".{target.name}.{secrets.token_hex(6)}.part")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    try:
        descriptor = os.open(temporary, flags, 0o666)
    except FileNotFoundError:  # name the file the caller asked for, not our temporary
        raise FileNotFoundError(
            errno.ENOENT, f"the folder {target.parent} does not exist", str(target)
        ) from None
    try:
        with open(descriptor, "wb") as handle:
            yield handle
            with naming_errors(target):
                handle.flush()
                os.fsync(handle.fileno())
        with naming_errors(target):
            os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


@contextlib.contextmanager
def naming_errors(target: str | os.PathLike[str]) -> Iterator[None]:
    """Re-raise an ``OSError`` of the body (a write, a flush, ``fsync``, a rename: they name no
    file, or only our temporary one) as the same kind of error naming ``target``, so that a full
    disk says which file it stopped.

    >>> with naming_errors("run/x.json"):
    ...     raise OSError(28, "No space left on device")
    Traceback (most recent call last):
    OSError: [Errno 28] No space left on device (the file was not changed): 'run/x.json'
    """
    try:
        yield
    except OSError as error:
        if not error.errno or error.filename == str(target):
            raise
        reason = error.strerror or str(error)
        if error.errno == errno.ENOSPC:
            reason += " (the file was not changed)"
        raise type(error)(error.errno, reason, str(target)) from None


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` all at once or not at all, creating its folder if needed.

    Raises:
        OSError: naming ``path`` (a full disk: ``errno.ENOSPC``); the old file is left intact.
    """
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as handle, naming_errors(path):
        handle.write(data)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` all at once or not at all."""
    write_bytes_atomic(path, text.encode("utf-8"))
