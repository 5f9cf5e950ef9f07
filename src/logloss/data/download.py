"""Download dataset files from public mirrors, verified against their published SHA-256.

Each file is streamed into a temporary file in its destination folder while being hashed; it is
renamed into place only when its size and SHA-256 match the published ones.  A failed, corrupted or
interrupted download therefore leaves nothing behind, and the temporary file of a download that was
killed outright (SIGKILL, power cut) is removed by the next attempt (issue 13, item 9).  Every
transfer runs within :class:`~logloss.data.transfer.DownloadLimits`: a timeout on each socket
wait, a deadline, a minimum rate, and one more try on the same mirror after a broken transfer.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import re
import time
import urllib.error
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from logloss._atomic import atomic_write
from logloss.data.errors import ChecksumError, DownloadError
from logloss.data.locations import download_root
from logloss.data.registry import SPLITS, FileInfo, get_dataset, mirrors_for
from logloss.data.transfer import DownloadLimits, TransferTooSlow, http_get

try:  # POSIX: a live download holds a lock on its temporary file, so that it is not "stale"
    import fcntl
except ImportError:  # Windows: an open file cannot be deleted, which protects it the same way
    fcntl = None

if TYPE_CHECKING:
    from rich.progress import Progress

__all__ = ["DownloadLimits", "download_dataset", "fetch_file", "remove_stale_parts", "sha256_file"]

_USER_AGENT = "logloss (+https://pypi.org/project/logloss)"
# Failures of a transfer that broke on the way; trying the same mirror again may well work.
_BROKEN = (TimeoutError, http.client.HTTPException)


class _Rejected(Exception):
    """One mirror's copy was received but failed verification (size or checksum)."""


class _CutShort(ConnectionError):
    """The connection closed before the announced number of bytes arrived."""


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file, as 64 lowercase hex digits.

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "empty"
    >>> _ = path.write_bytes(b"")
    >>> sha256_file(path)[:16]
    'e3b0c44298fc1c14'
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _lock_exclusively(handle: BinaryIO) -> None:
    if fcntl is not None:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)


def _is_locked(path: Path) -> bool:
    """Whether a live process holds ``path`` open for a download (always False on Windows,
    where such a file refuses to be deleted instead)."""
    if fcntl is None:
        return False
    with open(path, "rb") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
    return False


def remove_stale_parts(target: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files that killed downloads of ``target`` left beside it.

    They are ``atomic_write``'s ``.<name>.<12 hex digits>.part``; one that a live download (in
    this or another process) is still writing is kept.

    Returns:
        The files deleted.
    """
    target = Path(target)
    pattern = re.compile(rf"\.{re.escape(target.name)}\.[0-9a-f]{{12}}\.part")
    removed = []
    with contextlib.suppress(OSError):  # no folder (or not one we may read): nothing to clean
        for path in target.parent.iterdir():
            if not pattern.fullmatch(path.name):
                continue
            with contextlib.suppress(OSError):  # gone meanwhile, or in use (Windows)
                if not _is_locked(path):
                    path.unlink()
                    removed.append(path)
    return removed


def _stream(
    url: str, file: FileInfo, target: Path, limits: DownloadLimits, advance: Callable[[int], None]
) -> None:
    """Fetch ``url`` into ``target`` atomically; raise ``_Rejected`` if the bytes are wrong."""
    digest = hashlib.sha256()
    received = 0
    with (
        http_get(url, limits, {"User-Agent": _USER_AGENT}) as (declared, body),
        atomic_write(target) as out,
    ):
        _lock_exclusively(out)
        for chunk in body:
            digest.update(chunk)
            out.write(chunk)
            received += len(chunk)
            advance(len(chunk))
            if received > file.size:  # stop early: it cannot be the published file
                raise _Rejected(f"checksum mismatch: more than the published {file.size} bytes")
        if declared is not None and received < declared:
            raise _CutShort(f"connection closed after {received} of {declared} bytes (cut short)")
        if received != file.size or digest.hexdigest() != file.sha256:
            raise _Rejected(
                f"checksum mismatch: SHA-256 {digest.hexdigest()} ({received} bytes), published "
                f"{file.sha256} ({file.size} bytes)"
            )


def _worth_retrying(error: Exception) -> bool:
    """Whether ``error`` broke a transfer that the same mirror may well complete next time."""
    if isinstance(error, urllib.error.HTTPError):
        return error.code >= 500 or error.code in (408, 429)
    reason = error.reason if isinstance(error, urllib.error.URLError) else error
    refused = isinstance(reason, ConnectionRefusedError)
    return isinstance(reason, _BROKEN) or (isinstance(reason, ConnectionError) and not refused)


def _describe(error: Exception) -> str:
    if isinstance(error, (_Rejected, _CutShort, TransferTooSlow)):
        return str(error)
    return f"{type(error).__name__}: {getattr(error, 'reason', None) or error}"


def _from_mirror(
    url: str,
    file: FileInfo,
    target: Path,
    limits: DownloadLimits,
    progress: Progress | None,
    failures: list[tuple[str, Exception]],
) -> bool:
    """Try ``url`` (again after a broken transfer, up to ``limits.retries`` times); record each
    failure in ``failures``.  Returns whether ``target`` now holds the verified file."""
    attempt = 0
    while True:
        task = None if progress is None else progress.add_task(file.name, total=file.size)

        def advance(n: int, task=task) -> None:
            if task is not None:
                progress.update(task, advance=n)

        try:
            _stream(url, file, target, limits, advance)
            return True
        except (_Rejected, TransferTooSlow) as error:  # the next mirror, not this one again
            failures.append((f"{url}: {_describe(error)}", error))
            return False
        except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
            if attempt >= limits.retries or not _worth_retrying(error):
                failures.append((f"{url}: {_describe(error)}", error))
                return False
            failures.append((f"{url}: {_describe(error)} (trying again)", error))
        finally:
            if task is not None:
                progress.remove_task(task)
        attempt += 1
        time.sleep(limits.retry_delay)


def fetch_file(
    file: FileInfo,
    folder: str | os.PathLike[str],
    mirrors: Sequence[str],
    *,
    progress: Progress | None = None,
    limits: DownloadLimits | None = None,
) -> Path:
    """Download ``file`` into ``folder`` from the first mirror that delivers verified bytes.

    Stale temporary files of earlier, killed attempts are removed first and after success.

    Args:
        file: the file's name, published SHA-256 and size.
        folder: the destination folder (created if missing).
        mirrors: base URLs tried in turn; the file's URL is ``base + file.name``.
        progress: a ``rich.progress.Progress`` to report to, or ``None`` for silence.
        limits: timeouts, deadline, minimum rate and retries; default ``DownloadLimits()``.

    Returns:
        The path of the verified file, ``folder / file.name``.

    Raises:
        ChecksumError: some mirror delivered wrong bytes and none delivered right ones.
        DownloadError: every mirror failed (unreachable, HTTP error, connection cut, too slow).
        Both are one line naming the file and the last failure; ``details`` lists every attempt.
    """
    limits = DownloadLimits() if limits is None else limits
    folder = Path(folder)
    # Folders this call creates (deepest first), removed again if nothing gets downloaded.
    created = [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DownloadError(f"cannot create the folder {folder} for {file.name}: {error}") from None
    target = folder / file.name
    remove_stale_parts(target)
    failures: list[tuple[str, Exception]] = []
    try:
        for base in mirrors:
            if _from_mirror(
                base.rstrip("/") + "/" + file.name, file, target, limits, progress, failures
            ):
                remove_stale_parts(target)
                return target
    finally:
        if not target.is_file():
            with contextlib.suppress(OSError):  # stops at the first folder that is not empty
                for path in created:
                    path.rmdir()
    if not failures:
        raise DownloadError(f"could not download {file.name}: no mirrors configured")
    mismatched = any(isinstance(error, _Rejected) for _, error in failures)
    lines = [line for line, _ in failures]
    others = f" (and {len(lines) - 1} more failed attempts)" if len(lines) > 1 else ""
    raise (ChecksumError if mismatched else DownloadError)(
        f"could not download a verified copy of {file.name}: {lines[-1]}{others}",
        details=f"{file.name}: tried\n  " + "\n  ".join(lines),
    )


def download_dataset(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    splits: Sequence[str] = SPLITS,
    mirrors: Sequence[str] | None = None,
    progress: bool = True,
    limits: DownloadLimits | None = None,
) -> Path:
    """Download the files of ``name`` for ``splits`` that are missing from its folder.

    The folder is ``data_dir / name`` when ``data_dir`` is given, else the user cache's. Files
    already there are kept as they are; a file that fails does not stop the others.  Temporary
    files that killed downloads left in the folder are removed.

    Args:
        name: a downloadable dataset (``mnist``, ``fashion-mnist``, ``kmnist``).
        data_dir: the data folder to download into, or ``None`` for the user cache.
        splits: which splits' files to fetch.
        mirrors: base URLs to try in turn; default :func:`~logloss.data.registry.mirrors_for`
            (``$LOGLOSS_MIRRORS``, else ``MIRRORS[name]``).
        progress: show a progress bar (on stderr) per file.
        limits: timeouts, deadline, minimum rate and retries; default ``DownloadLimits()``.

    Returns:
        The dataset's folder.

    Raises:
        ValueError: an unknown or bundled dataset, an unknown split, a bad ``$LOGLOSS_MIRRORS``.
        ChecksumError, DownloadError: as :func:`fetch_file`, raised once every file has been
            tried; one line for all files that failed, ``details`` with every attempt.
    """
    info = get_dataset(name)
    if info.bundled:
        raise ValueError(f"dataset {name!r} ships with logloss and is never downloaded")
    for split in splits:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")
    folder = download_root(data_dir) / name
    bases = mirrors_for(name) if mirrors is None else list(mirrors)
    wanted = [f for s in splits for f in info.files[s]]
    for file in wanted:
        remove_stale_parts(folder / file.name)
    missing = [f for f in wanted if not (folder / f.name).is_file()]
    if not missing:
        return folder
    bar = _progress_bar(progress)
    failures: dict[str, DownloadError] = {}
    with bar:
        for file in missing:  # one failure does not stop the others: verified files are kept
            try:
                fetch_file(file, folder, bases, progress=bar, limits=limits)
            except DownloadError as error:
                failures[file.name] = error
    if failures:
        raise _combined(failures)
    return folder


def _combined(failures: dict[str, DownloadError]) -> DownloadError:
    """One error for the files that failed (file name -> its error): one line, every attempt in
    ``details``; a ``ChecksumError`` if any of them is one."""
    errors = list(failures.values())
    message = str(errors[0])
    if len(errors) > 1:
        message = f"{len(errors)} files could not be downloaded ({', '.join(failures)}); {message}"
    kind = ChecksumError if any(isinstance(e, ChecksumError) for e in errors) else DownloadError
    return kind(message, details="\n".join(e.details for e in errors))


def _progress_bar(show: bool) -> Progress:
    """A progress display on stderr, shown only where someone watches (a terminal)."""
    # rich is imported here, not at the top: `import logloss.data` stays fast without it.
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    console = Console(stderr=True)
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=console,
        disable=not (show and console.is_terminal),
    )
