"""Download dataset files from public mirrors, verified against their published SHA-256.

Each file is streamed into a temporary file in its destination folder while being hashed; it is
renamed into place only when its size and SHA-256 match the published ones.  A failed, corrupted or
interrupted download therefore leaves nothing behind: neither the file nor the temporary file.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from logloss._atomic import atomic_write
from logloss.data.errors import ChecksumError, DownloadError
from logloss.data.locations import download_root
from logloss.data.registry import MIRRORS, SPLITS, FileInfo, get_dataset

if TYPE_CHECKING:
    from rich.progress import Progress

__all__ = ["download_dataset", "fetch_file", "sha256_file"]

_CHUNK = 1 << 16
_USER_AGENT = "logloss (+https://pypi.org/project/logloss)"


class _Rejected(Exception):
    """One mirror's copy was received but failed verification (size or checksum)."""

    def __init__(self, message: str, *, checksum: bool = False) -> None:
        super().__init__(message)
        self.checksum = checksum


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


def _stream(
    url: str, file: FileInfo, target: Path, timeout: float, advance: Callable[[int], None]
) -> None:
    """Fetch ``url`` into ``target`` atomically; raise ``_Rejected`` if the bytes are wrong."""
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    digest = hashlib.sha256()
    received = 0
    with atomic_write(target) as out, urllib.request.urlopen(request, timeout=timeout) as response:
        declared = response.headers.get("Content-Length", "")
        while chunk := response.read(_CHUNK):
            digest.update(chunk)
            out.write(chunk)
            received += len(chunk)
            advance(len(chunk))
            if received > file.size:  # stop early: it cannot be the published file
                raise _Rejected(
                    f"checksum mismatch: more than the published {file.size} bytes", checksum=True
                )
        if declared.isdigit() and received < int(declared):
            raise _Rejected(f"connection closed after {received} of {declared} bytes (cut short)")
        if received != file.size or digest.hexdigest() != file.sha256:
            raise _Rejected(
                f"checksum mismatch: SHA-256 {digest.hexdigest()} ({received} bytes), published "
                f"{file.sha256} ({file.size} bytes)",
                checksum=True,
            )


def fetch_file(
    file: FileInfo,
    folder: str | os.PathLike[str],
    mirrors: Sequence[str],
    *,
    progress: Progress | None = None,
    timeout: float = 30.0,
) -> Path:
    """Download ``file`` into ``folder`` from the first mirror that delivers verified bytes.

    Args:
        file: the file's name, published SHA-256 and size.
        folder: the destination folder (created if missing).
        mirrors: base URLs tried in turn; the file's URL is ``base + file.name``.
        progress: a ``rich.progress.Progress`` to report to, or ``None`` for silence.
        timeout: seconds to wait for each connection or read.

    Returns:
        The path of the verified file, ``folder / file.name``.

    Raises:
        ChecksumError: some mirror delivered wrong bytes and none delivered right ones; the
            message names the file and each mirror's failure.
        DownloadError: every mirror failed (unreachable, HTTP error, connection cut).
    """
    folder = Path(folder)
    # Folders this call creates (deepest first), removed again if nothing gets downloaded.
    created = [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DownloadError(f"cannot create the folder {folder} for {file.name}: {error}") from None
    target = folder / file.name
    failures: list[str] = []
    mismatched = False  # whether some mirror served bytes with the wrong checksum
    try:
        for base in mirrors:
            url = base.rstrip("/") + "/" + file.name
            task = None if progress is None else progress.add_task(file.name, total=file.size)

            def advance(n: int, task=task) -> None:
                if task is not None:
                    progress.update(task, advance=n)

            try:
                _stream(url, file, target, timeout, advance)
                return target
            except _Rejected as error:
                failures.append(f"{url}: {error}")
                mismatched = mismatched or error.checksum
            except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
                reason = getattr(error, "reason", None) or error
                failures.append(f"{url}: {type(error).__name__}: {reason}")
            finally:
                if task is not None:
                    progress.remove_task(task)
    finally:
        if not target.is_file():
            with contextlib.suppress(OSError):  # stops at the first folder that is not empty
                for path in created:
                    path.rmdir()
    detail = "\n  ".join(failures) if failures else "no mirrors configured"
    kind = ChecksumError if mismatched else DownloadError
    raise kind(f"could not download a verified copy of {file.name}; tried:\n  {detail}")


def download_dataset(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    splits: Sequence[str] = SPLITS,
    mirrors: Sequence[str] | None = None,
    progress: bool = True,
    timeout: float = 30.0,
) -> Path:
    """Download the files of ``name`` for ``splits`` that are missing from its folder.

    The folder is ``data_dir / name`` when ``data_dir`` is given, else the user cache's. Files
    already there are kept as they are; a file that fails does not stop the others.

    Args:
        name: a downloadable dataset (``mnist``, ``fashion-mnist``, ``kmnist``).
        data_dir: the data folder to download into, or ``None`` for the user cache.
        splits: which splits' files to fetch.
        mirrors: base URLs to try in turn; default ``MIRRORS[name]``.
        progress: show a progress bar (on stderr) per file.
        timeout: seconds to wait for each connection or read.

    Returns:
        The dataset's folder.

    Raises:
        ValueError: an unknown or bundled dataset, or an unknown split.
        ChecksumError, DownloadError: as :func:`fetch_file`, one line per file that failed,
            raised once every file has been tried.
    """
    info = get_dataset(name)
    if info.bundled:
        raise ValueError(f"dataset {name!r} ships with logloss and is never downloaded")
    for split in splits:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")
    folder = download_root(data_dir) / name
    bases = list(MIRRORS.get(name, ()) if mirrors is None else mirrors)
    missing = [f for s in splits for f in info.files[s] if not (folder / f.name).is_file()]
    if not missing:
        return folder
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TransferSpeedColumn,
    )

    console = Console(stderr=True)
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=console,
        disable=not (progress and console.is_terminal),  # bars only where someone watches
    )
    failures: list[DownloadError | ChecksumError] = []
    with bar:
        for file in missing:  # one failure does not stop the others: verified files are kept
            try:
                fetch_file(file, folder, bases, progress=bar, timeout=timeout)
            except (DownloadError, ChecksumError) as error:
                failures.append(error)
    if failures:
        kind = (
            ChecksumError
            if any(isinstance(e, ChecksumError) for e in failures)
            else (DownloadError)
        )
        raise kind("\n".join(map(str, failures)))
    return folder
