"""Downloads from a local server on 127.0.0.1: the cache then holds a verified file or nothing."""

from __future__ import annotations

import dataclasses
import functools
import http.server
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from logloss.data import (
    DATASETS,
    MIRRORS,
    ChecksumError,
    DatasetNotFoundError,
    DownloadError,
    DownloadLimits,
    download_dataset,
    fetch_file,
    load_dataset,
    parse_mirrors,
)
from logloss.data.download import remove_stale_parts

LABELS = "t10k-labels-idx1-ubyte.gz"  # official bytes, 4542 of them: small enough to serve often
FILES = {f.name: f for f in DATASETS["mnist"].all_files}
# Short limits so that slow-server tests take about a second: a mirror below 100 bytes/s over a
# 1 s window, or taking more than 2 s in all, is abandoned; a broken transfer is tried again at
# once.  No socket wait (10 s) is what ends a transfer in these tests.
FAST = DownloadLimits(timeout=10, deadline=2, min_rate=100, rate_window=1, retry_delay=0)
# The same with a deadline that never comes first, for the tests of the minimum rate.
RATE_ONLY = dataclasses.replace(FAST, deadline=30)


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``/<mode>/.../<file>``: ``good`` the bytes, ``corrupt`` one byte flipped, ``cut``
    half the bytes under a full Content-Length then a closed connection, ``missing`` a 404;
    ``flaky`` cuts the first request for a path and serves the later ones, ``busy`` answers the
    first with a 503; ``slow`` sends the body at 1 byte/s, ``drip`` at 640 bytes/s, ``trickle``
    its headers at 1 byte/s (all three stop when the test ends)."""

    def __init__(self, *args, files: dict[str, bytes], log: list[str], stop, **kwargs) -> None:
        self.files, self.log, self.stop = files, log, stop
        super().__init__(*args, **kwargs)

    def _send_slowly(self, data: bytes, piece: int, pause: float) -> None:
        for start in range(0, len(data), piece):
            self.wfile.write(data[start : start + piece])
            self.wfile.flush()
            if self.stop.wait(pause):
                return

    def do_GET(self) -> None:
        self.log.append(self.path)
        mode, name = self.path.split("/")[1], self.path.rsplit("/", 1)[-1]
        body = self.files.get(name)
        first = self.log.count(self.path) == 1
        if body is None or mode == "missing":
            self.send_error(404)
            return
        if mode == "busy" and first:
            self.send_error(503)
            return
        if mode == "trickle":
            self._send_slowly(b"HTTP/1.1 200 OK\r\nContent-Length: 4542\r\nX-Slow: ...", 1, 1.0)
            return
        if mode == "corrupt":
            body = body[:100] + bytes([body[100] ^ 1]) + body[101:]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if mode == "slow":
            self._send_slowly(body, 1, 1.0)
        elif mode == "drip":
            self._send_slowly(body, 64, 0.1)
        elif mode == "cut" or (mode == "flaky" and first):
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
        else:
            self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, list[str]]]:
    """(base URL, request log) of a server holding the shared MNIST files."""
    for variable in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.delenv("LOGLOSS_MIRRORS", raising=False)
    # The shared files: the official bytes except train-images (rebuilt, so its checksum differs).
    files = {name: (data_dir / "mnist" / name).read_bytes() for name in FILES}
    log: list[str] = []
    stop = threading.Event()
    handler = functools.partial(_Handler, files=files, log=log, stop=stop)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", log
    stop.set()  # slow handlers return at once
    httpd.shutdown()
    httpd.server_close()  # joins the handler threads
    thread.join(timeout=10)


def _contents(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*")) if folder.exists() else []


def test_success_writes_the_verified_file_only(server, tmp_path: Path, data_dir: Path) -> None:
    base, log = server
    path = fetch_file(FILES[LABELS], tmp_path / "mnist", [f"{base}/good/"])
    assert path == tmp_path / "mnist" / LABELS
    assert path.read_bytes() == (data_dir / "mnist" / LABELS).read_bytes()
    assert _contents(tmp_path) == ["mnist", LABELS]
    assert log == [f"/good/{LABELS}"]


def test_failing_mirror_then_working_one(server, tmp_path: Path) -> None:
    base, log = server
    mirrors = ["http://127.0.0.1:1/", f"{base}/missing/", f"{base}/good"]
    fetch_file(FILES[LABELS], tmp_path, mirrors)
    assert _contents(tmp_path) == [LABELS]
    assert log == [f"/missing/{LABELS}", f"/good/{LABELS}"]


def test_corrupted_file_is_a_checksum_error_naming_file_and_mirror(server, tmp_path: Path) -> None:
    base, _ = server
    with pytest.raises(ChecksumError) as caught:
        fetch_file(FILES[LABELS], tmp_path / "mnist", [f"{base}/corrupt/"])
    message = str(caught.value)
    assert f"{base}/corrupt/{LABELS}: checksum mismatch" in message
    assert FILES[LABELS].sha256 in message
    assert _contents(tmp_path) == []  # no file, no temporary file, no empty folder


def test_corrupt_mirror_then_good_one(server, tmp_path: Path) -> None:
    base, _ = server
    fetch_file(FILES[LABELS], tmp_path, [f"{base}/corrupt/", f"{base}/good/"])
    assert _contents(tmp_path) == [LABELS]


def test_connection_cut_mid_file_leaves_nothing(server, tmp_path: Path) -> None:
    base, _ = server
    with pytest.raises(DownloadError) as caught:
        fetch_file(
            FILES["t10k-images-idx3-ubyte.gz"], tmp_path / "m", [f"{base}/cut/"], limits=FAST
        )
    assert f"{base}/cut/t10k-images-idx3-ubyte.gz: connection closed after 824438 of 1648877" in (
        str(caught.value)
    )
    assert not isinstance(caught.value, ChecksumError)
    assert _contents(tmp_path) == []


def test_every_mirror_failing_lists_each(server, tmp_path: Path) -> None:
    base, _ = server
    with pytest.raises(DownloadError) as caught:
        fetch_file(FILES[LABELS], tmp_path, ["http://127.0.0.1:1/", f"{base}/missing/"])
    assert str(caught.value) == (
        f"could not download a verified copy of {LABELS}: {base}/missing/{LABELS}: HTTPError: "
        "Not Found (and 1 more failed attempts)"
    )
    tried = caught.value.details.splitlines()
    assert tried[0] == f"{LABELS}: tried"
    assert tried[1].startswith(f"  http://127.0.0.1:1/{LABELS}: URLError: ")
    assert tried[2] == f"  {base}/missing/{LABELS}: HTTPError: Not Found"
    assert _contents(tmp_path) == []


def test_interrupt_mid_download_leaves_nothing(server, tmp_path: Path) -> None:
    base, _ = server

    class InterruptingProgress:
        """A progress display whose user presses Ctrl-C once bytes start arriving."""

        def add_task(self, *args, **kwargs) -> int:
            return 0

        def update(self, task: int, advance: int) -> None:
            raise KeyboardInterrupt

        def remove_task(self, task: int) -> None:
            pass

    with pytest.raises(KeyboardInterrupt):
        fetch_file(
            FILES["t10k-images-idx3-ubyte.gz"],
            tmp_path / "mnist",
            [f"{base}/good/"],
            progress=InterruptingProgress(),
        )
    assert _contents(tmp_path) == []


def test_existing_verified_file_is_replaced_only_by_verified_bytes(
    server, tmp_path: Path, data_dir: Path
) -> None:
    base, _ = server
    fetch_file(FILES[LABELS], tmp_path, [f"{base}/good/"])
    with pytest.raises(ChecksumError):
        fetch_file(FILES[LABELS], tmp_path, [f"{base}/corrupt/"])
    assert (tmp_path / LABELS).read_bytes() == (data_dir / "mnist" / LABELS).read_bytes()
    assert _contents(tmp_path) == [LABELS]


def test_load_dataset_downloads_into_the_cache(
    server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data_dir: Path
) -> None:
    base, log = server
    monkeypatch.delenv("LOGLOSS_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setitem(MIRRORS, "mnist", ["http://127.0.0.1:1/", f"{base}/good/"])
    images, labels = load_dataset("mnist", "test")
    cache = tmp_path / "cache" / "logloss" / "mnist"
    assert _contents(cache) == ["t10k-images-idx3-ubyte.gz", LABELS]
    reference, _ = load_dataset("mnist", "test", data_dir=data_dir, download=False)
    np.testing.assert_array_equal(images, reference)
    assert np.bincount(labels).tolist()[:2] == [980, 1135]
    # The second load reads the cache: no new request.
    requests = len(log)
    load_dataset("mnist", "test")
    assert len(log) == requests


def test_download_dataset_into_data_dir_skips_present_files(server, tmp_path: Path) -> None:
    base, log = server
    folder = download_dataset(
        "mnist", tmp_path, splits=["test"], mirrors=[f"{base}/good/"], progress=False
    )
    assert folder == tmp_path / "mnist"
    assert len(log) == 2
    download_dataset("mnist", tmp_path, splits=["test"], mirrors=[f"{base}/good/"])
    assert len(log) == 2


def test_load_dataset_offline_message_includes_download_failure(
    server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, _ = server
    monkeypatch.delenv("LOGLOSS_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setitem(MIRRORS, "mnist", [f"{base}/corrupt/"])
    with pytest.raises(DatasetNotFoundError) as caught:
        load_dataset("mnist", "test")
    message = str(caught.value)
    assert "\n" not in message
    assert "checksum mismatch" in message
    assert "--data-dir DIR" in message
    assert "  LOGLOSS_DATA: (not set)" in caught.value.details.splitlines()
    assert f"{base}/corrupt/{LABELS}: checksum mismatch" in caught.value.details
    assert _contents(tmp_path / "cache") == []


def test_cli_fetch_keeps_verified_files_and_reports_the_bad_one(
    server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from logloss.cli import main

    base, _ = server
    monkeypatch.setitem(MIRRORS, "mnist", [f"{base}/good/"])
    assert main(["data", "fetch", "mnist", "--data-dir", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"{base}/good/train-images-idx3-ubyte.gz: checksum mismatch" in err
    # The three official files verified and were kept; the rebuilt one was refused.
    assert _contents(tmp_path / "mnist") == sorted(
        ["train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", LABELS]
    )
    assert main(["data", "list", "--json", "--data-dir", str(tmp_path)]) == 0


# ---- issue 13, item 9: deadlines, minimum rate, retries, stale .part files, LOGLOSS_MIRRORS ----


def _timed_fetch(mirrors: list[str], folder: Path, limits: DownloadLimits = FAST):
    """fetch_file of the test labels; returns (the error or None, seconds taken)."""
    start = time.monotonic()
    try:
        fetch_file(FILES[LABELS], folder, mirrors, limits=limits)
        error = None
    except DownloadError as caught:
        error = caught
    return error, time.monotonic() - start


def test_one_byte_per_second_mirror_is_abandoned_for_the_next(server, tmp_path: Path) -> None:
    """issue 13, item 9: a mirror sending 1 byte/s used to hold a download for 75 minutes."""
    base, log = server
    error, seconds = _timed_fetch([f"{base}/slow/", f"{base}/good/"], tmp_path, RATE_ONLY)
    assert error is None
    assert _contents(tmp_path) == [LABELS]
    assert log == [f"/slow/{LABELS}", f"/good/{LABELS}"]  # too slow: not tried again
    assert seconds < 2 * RATE_ONLY.rate_window + 2


def test_too_slow_is_reported_with_the_rate(server, tmp_path: Path) -> None:
    """issue 13, item 9: the error says which rule the mirror broke."""
    base, _ = server
    error, _ = _timed_fetch([f"{base}/slow/"], tmp_path, RATE_ONLY)
    assert isinstance(error, DownloadError)
    assert f"{base}/slow/{LABELS}: slower than the minimum of 100 bytes/s (" in str(error)
    assert _contents(tmp_path) == []


def test_deadline_ends_a_transfer_fast_enough_for_the_minimum_rate(server, tmp_path) -> None:
    """issue 13, item 9: 640 bytes/s passes the minimum rate but not the 2 s deadline."""
    base, log = server
    error, seconds = _timed_fetch([f"{base}/drip/"], tmp_path)
    assert str(error) == (
        f"could not download a verified copy of {LABELS}: {base}/drip/{LABELS}: gave up at the "
        "deadline of 2 s for one transfer"
    )
    assert FAST.deadline <= seconds < FAST.deadline + 2
    assert log == [f"/drip/{LABELS}"]
    assert _contents(tmp_path) == []


def test_deadline_covers_headers_sent_one_byte_per_second(server, tmp_path: Path) -> None:
    """issue 13, item 9: a read that never times out (a byte a second) still ends at the deadline,
    here while the status line and headers arrive."""
    base, _ = server
    error, seconds = _timed_fetch([f"{base}/trickle/"], tmp_path)
    assert "gave up at the deadline of 2 s" in str(error)
    assert seconds < FAST.deadline + 2


def test_deadline_covers_a_stalled_tls_handshake(tmp_path: Path) -> None:
    """issue 13, item 9: a server that accepts the connection and never answers the TLS handshake
    is given up at the 1 s deadline, not after the 30 s socket timeout."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(10)
        port = listener.getsockname()[1]
        limits = DownloadLimits(timeout=30, deadline=1, retry_delay=0)
        error, seconds = _timed_fetch([f"https://127.0.0.1:{port}/"], tmp_path, limits)
    assert "gave up at the deadline of 1 s" in str(error)
    assert seconds < 5


def test_a_broken_transfer_is_tried_once_more_on_the_same_mirror(server, tmp_path) -> None:
    """issue 13, item 9: a connection cut, or a 503, then the same mirror serves the file."""
    base, log = server
    assert _timed_fetch([f"{base}/flaky/"], tmp_path / "a")[0] is None
    assert _timed_fetch([f"{base}/busy/"], tmp_path / "b")[0] is None
    assert log == [f"/flaky/{LABELS}"] * 2 + [f"/busy/{LABELS}"] * 2
    assert _contents(tmp_path / "a") == _contents(tmp_path / "b") == [LABELS]


def test_retry_once_per_mirror_then_the_next(server, tmp_path: Path) -> None:
    """issue 13, item 9: each mirror gets one retry after a broken transfer, no more; a 404 or
    wrong bytes are not retried."""
    base, log = server
    mirrors = [f"{base}/cut/", f"{base}/missing/", f"{base}/corrupt/", f"{base}/good/"]
    error, _ = _timed_fetch(mirrors, tmp_path)
    assert error is None
    assert log == [f"/{mode}/{LABELS}" for mode in ("cut", "cut", "missing", "corrupt", "good")]


def test_every_attempt_is_in_the_details(server, tmp_path: Path) -> None:
    base, _ = server
    error, _ = _timed_fetch([f"{base}/cut/", f"{base}/slow/"], tmp_path, RATE_ONLY)
    assert error.details.splitlines() == [
        f"{LABELS}: tried",
        f"  {base}/cut/{LABELS}: connection closed after 2271 of 4542 bytes (cut short) "
        "(trying again)",
        f"  {base}/cut/{LABELS}: connection closed after 2271 of 4542 bytes (cut short)",
        f"  {base}/slow/{LABELS}: " + error.details.rsplit(": ", 1)[1],
    ]
    assert "slower than the minimum" in error.details.splitlines()[-1]


_KILLED_DOWNLOAD = """
import sys
from pathlib import Path
from logloss.data import DATASETS, DownloadLimits, fetch_file
file = {f.name: f for f in DATASETS["mnist"].all_files}[sys.argv[3]]
fetch_file(file, Path(sys.argv[1]), [sys.argv[2]], limits=DownloadLimits(min_rate=0.1))
"""


def _parts(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob(".*.part"))


def test_killed_download_leaves_a_part_file_the_next_attempt_removes(server, tmp_path) -> None:
    """issue 13, item 9: SIGKILL during a download leaves its temporary .part file; the next
    download of that file removes it (and the file arrives)."""
    base, _ = server
    command = [sys.executable, "-c", _KILLED_DOWNLOAD, str(tmp_path), f"{base}/slow/", LABELS]
    process = subprocess.Popen(command, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        deadline = time.monotonic() + 30
        while not _parts(tmp_path) and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
    finally:
        process.kill()
        process.wait(timeout=10)
    stale = _parts(tmp_path)
    assert len(stale) == 1
    assert stale[0].startswith(f".{LABELS}.")
    fetch_file(FILES[LABELS], tmp_path, [f"{base}/good/"], limits=FAST)
    assert _contents(tmp_path) == [LABELS]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file locks (Windows refuses to delete)")
def test_a_part_file_being_written_is_not_stale(server, tmp_path: Path) -> None:
    """issue 13, item 9: cleaning up never deletes the .part file of a live download."""
    import fcntl  # POSIX only

    base, _ = server
    live = tmp_path / f".{LABELS}.0123456789ab.part"
    dead = tmp_path / f".{LABELS}.ba9876543210.part"
    dead.write_bytes(b"left by a killed download")
    with open(live, "wb") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)  # as a download in progress holds it
        assert remove_stale_parts(tmp_path / LABELS) == [dead]
        fetch_file(FILES[LABELS], tmp_path, [f"{base}/good/"], limits=FAST)
        assert live.exists()
    assert _contents(tmp_path) == sorted([LABELS, live.name])


def test_stale_parts_of_present_files_are_removed_too(server, tmp_path: Path) -> None:
    """issue 13, item 9: after a successful resume (the other files downloaded), no .part of any
    file of the dataset is left."""
    base, _ = server
    folder = tmp_path / "mnist"
    folder.mkdir()
    for name in ("t10k-images-idx3-ubyte.gz", LABELS):
        (folder / f".{name}.00000000000a.part").write_bytes(b"killed")
    download_dataset("mnist", tmp_path, splits=["test"], mirrors=[f"{base}/good/"], limits=FAST)
    assert _contents(folder) == ["t10k-images-idx3-ubyte.gz", LABELS]


def test_mirrors_from_the_environment(server, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """issue 13, item 9: LOGLOSS_MIRRORS replaces the built-in mirrors, without any Python."""
    base, log = server
    monkeypatch.setitem(MIRRORS, "mnist", ["http://127.0.0.1:1/never-used/"])
    monkeypatch.setenv("LOGLOSS_MIRRORS", f"{base}/missing/{{dataset}}/, {base}/good/{{dataset}}")
    download_dataset("mnist", tmp_path, splits=["test"], progress=False, limits=FAST)
    assert _contents(tmp_path / "mnist") == ["t10k-images-idx3-ubyte.gz", LABELS]
    assert log == [
        "/missing/mnist/t10k-images-idx3-ubyte.gz",
        "/good/mnist/t10k-images-idx3-ubyte.gz",
        f"/missing/mnist/{LABELS}",
        f"/good/mnist/{LABELS}",
    ]


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("", MIRRORS["kmnist"]),
        (" , ", MIRRORS["kmnist"]),
        ("http://a/{dataset}/", ["http://a/kmnist/"]),
        ("http://a/ , https://b/x/{dataset}", ["http://a/", "https://b/x/kmnist"]),
        ("https://c/ default", ["https://c/", *MIRRORS["kmnist"]]),
    ],
)
def test_parse_mirrors(setting: str, expected: list[str]) -> None:
    assert parse_mirrors(setting, "kmnist") == expected


@pytest.mark.parametrize("entry", ["ftp://a/", "mirror.example/mnist", "https://", "defaults"])
def test_bad_mirror_setting_is_one_clear_error(entry: str, monkeypatch, capsys, tmp_path) -> None:
    from logloss.cli import main

    monkeypatch.setenv("LOGLOSS_MIRRORS", f"https://ok.example/ {entry}")
    assert main(["data", "fetch", "kmnist", "--data-dir", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"logloss: error: LOGLOSS_MIRRORS: {entry!r} is not an http:// or ")
    assert err.count("\n") == 1
    assert not (tmp_path / "kmnist").exists()


@pytest.mark.parametrize(
    ("field", "value", "rule"),
    [
        ("timeout", 0, "a number > 0"),
        ("deadline", float("inf"), "a number > 0"),
        ("min_rate", -1.0, "a number > 0"),
        ("rate_window", "30", "a number > 0"),
        ("retries", 1.5, "an integer >= 0"),
        ("retries", True, "an integer >= 0"),
        ("retry_delay", -0.1, "a number >= 0"),
    ],
)
def test_download_limits_are_validated(field: str, value, rule: str) -> None:
    with pytest.raises(ValueError, match=f"^DownloadLimits: {field} must be {rule}, got "):
        DownloadLimits(**{field: value})
    assert DownloadLimits(retries=0, retry_delay=0).retries == 0


def test_cli_fetch_json_reports_downloaded_and_present_files(
    server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys, data_dir: Path
) -> None:
    """issue 14: `logloss data fetch --json` says which files it downloaded, with their SHA-256;
    the mirror comes from LOGLOSS_MIRRORS (issue 13, item 9)."""
    import json

    from logloss.cli import main

    base, _ = server
    monkeypatch.setenv("LOGLOSS_MIRRORS", f"{base}/good/")
    folder = tmp_path / "mnist"
    folder.mkdir()
    shutil.copy(data_dir / "mnist" / "train-images-idx3-ubyte.gz", folder)  # the rebuilt copy
    assert main(["data", "fetch", "mnist", "--data-dir", str(tmp_path), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert (record["folder"], record["status"]) == (str(folder), "downloaded")
    status = {f["name"]: (f["status"], f["matches_published_sha256"]) for f in record["files"]}
    assert status == {
        "train-images-idx3-ubyte.gz": ("present", False),
        "train-labels-idx1-ubyte.gz": ("downloaded", True),
        "t10k-images-idx3-ubyte.gz": ("downloaded", True),
        LABELS: ("downloaded", True),
    }
    assert record["files"][3]["sha256"] == FILES[LABELS].sha256
