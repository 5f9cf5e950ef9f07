"""Downloads from a local server on 127.0.0.1: the cache then holds a verified file or nothing."""

from __future__ import annotations

import functools
import http.server
import threading
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
    download_dataset,
    fetch_file,
    load_dataset,
)

LABELS = "t10k-labels-idx1-ubyte.gz"  # official bytes, 4542 of them: small enough to serve often
FILES = {f.name: f for f in DATASETS["mnist"].all_files}


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``/<mode>/<file>``: ``good`` the bytes, ``corrupt`` one byte flipped, ``cut`` half
    the bytes under a full Content-Length then a closed connection, ``missing`` a 404."""

    def __init__(self, *args, files: dict[str, bytes], log: list[str], **kwargs) -> None:
        self.files, self.log = files, log
        super().__init__(*args, **kwargs)

    def do_GET(self) -> None:
        self.log.append(self.path)
        _, mode, name = self.path.split("/", 2)
        body = self.files.get(name)
        if body is None or mode == "missing":
            self.send_error(404)
            return
        if mode == "corrupt":
            body = body[:100] + bytes([body[100] ^ 1]) + body[101:]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if mode == "cut" else body)
        if mode == "cut":
            self.wfile.flush()
            self.close_connection = True

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, list[str]]]:
    """(base URL, request log) of a server holding the shared MNIST files."""
    for variable in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(variable, raising=False)
    # The shared files: the official bytes except train-images (rebuilt, so its checksum differs).
    files = {name: (data_dir / "mnist" / name).read_bytes() for name in FILES}
    log: list[str] = []
    handler = functools.partial(_Handler, files=files, log=log)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", log
    httpd.shutdown()
    httpd.server_close()
    thread.join()


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
        fetch_file(FILES["t10k-images-idx3-ubyte.gz"], tmp_path / "m", [f"{base}/cut/"])
    assert f"{base}/cut/t10k-images-idx3-ubyte.gz: connection closed after 824438 of 1648877" in (
        str(caught.value)
    )
    assert not isinstance(caught.value, ChecksumError)
    assert _contents(tmp_path) == []


def test_every_mirror_failing_lists_each(server, tmp_path: Path) -> None:
    base, _ = server
    with pytest.raises(DownloadError) as caught:
        fetch_file(FILES[LABELS], tmp_path, ["http://127.0.0.1:1/", f"{base}/missing/"])
    message = str(caught.value)
    assert f"http://127.0.0.1:1/{LABELS}: URLError" in message
    assert f"{base}/missing/{LABELS}: HTTPError" in message
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
    assert "checksum mismatch" in message
    assert "LOGLOSS_DATA: (not set)" in message
    assert "--data-dir DIR" in message
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
