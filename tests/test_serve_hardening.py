"""``logloss serve`` under attack (issue 13): each test reproduces one attack on a real server on
127.0.0.1 and checks it gets a clean 4xx/503 answer, in bounded time and memory.

Memory is read from Linux's ``/proc/<pid>/status``: ``VmHWM`` (the peak resident set of a server
process) and ``VmRSS`` (sampled, for a server running in this process).
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import selectors
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path

import anyio
import httpx
import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import logloss.serve.predictor
from logloss.data import load_dataset
from logloss.data.preprocess import to_mnist
from logloss.serve import Predictor, ServeLimits, build_app, create_app, running_server
from logloss.serve.guards import allowed_hosts, host_is_allowed, host_name
from logloss.serve.images import DecodeSlots
from logloss.serve.schemas import InputError, PolicyJSONResponse
from logloss.training.checkpoint import load_checkpoint

WHICH = "best"
GIB = 1 << 30
DOCS = Path(__file__).resolve().parents[1] / "docs"
GOOD = [[0] * 28] * 28


def proc_status_bytes(pid: int | str, field: str) -> int:
    """A ``kB`` field of ``/proc/<pid>/status`` (VmHWM: peak resident set, VmRSS: now)."""
    path = Path(f"/proc/{pid}/status")
    if not path.is_file():
        pytest.skip("memory is read from Linux's /proc (CI runs Linux)")
    match = re.search(rf"^{field}:\s+(\d+) kB$", path.read_text(), re.MULTILINE)
    assert match is not None, f"no {field} in {path}"
    return int(match.group(1)) * 1024


@contextmanager
def peak_rss_growth() -> Iterator[dict[str, int]]:
    """Sample this process's VmRSS every 10 ms; on exit ``result["growth"]`` is the highest
    sample minus the one before the block."""
    result = {"before": proc_status_bytes("self", "VmRSS")}
    peak = [result["before"]]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.01):
            peak.append(max(peak[-1], proc_status_bytes("self", "VmRSS")))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield result
    finally:
        done.set()
        sampler.join(timeout=5)
        result["peak"] = peak[-1]
        result["growth"] = peak[-1] - result["before"]


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def stroke_png(width: int, height: int) -> bytes:
    """Black ink (a thick diagonal) on transparent pixels: a pixel bomb that is a drawing."""
    image = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    ImageDraw.Draw(image).line(
        (width // 4, height // 4, 3 * width // 4, 3 * height // 4),
        fill=(0, 0, 0, 255),
        width=max(4, min(width, height) // 20),
    )
    return png(image)


def post_png(url: str, body: bytes, results: list, timeout: float = 120) -> None:
    with httpx.Client(timeout=timeout) as client:
        results.append(
            client.post(f"{url}/api/predict", content=body, headers={"Content-Type": "image/png"})
        )


def all_at_once(url: str, bodies: list[bytes]) -> list[httpx.Response]:
    results: list[httpx.Response] = []
    threads = [threading.Thread(target=post_png, args=(url, body, results)) for body in bodies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)
    assert len(results) == len(bodies), "a request did not finish within 180 s"
    return results


@contextmanager
def cli_server(*flags: str, env: dict[str, str] | None = None) -> Iterator[tuple[int, str, list]]:
    """``logloss serve --port 0 FLAGS`` in a subprocess: (pid, base URL, stdout lines)."""
    command = [sys.executable, "-m", "logloss", "serve", "--port", "0", *flags]
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environment, text=True
    )
    lines: list[str] = []

    def read() -> None:
        for line in process.stdout:
            lines.append(line)

    threading.Thread(target=read, daemon=True).start()
    try:
        for _ in range(600):  # up to 60 s: loading torch and the checkpoint
            if lines or process.poll() is not None:
                break
            time.sleep(0.1)
        assert lines, process.poll() is not None and process.stderr.read()
        assert lines[0].startswith("logloss serve: http://"), lines
        time.sleep(0.3)  # the lines printed right after the address
        yield process.pid, lines[0].split()[2].rstrip("/"), lines
    finally:
        process.terminate()
        process.wait(timeout=20)


@pytest.fixture(scope="module")
def checkpoint(small_run: Path):
    return load_checkpoint(small_run, which=WHICH)


@pytest.fixture(scope="module")
def client(small_run: Path, data_dir: Path):
    """A client of a server with the default limits (its address: ``client.base_url``)."""
    app = create_app(small_run, which=WHICH, data_dir=data_dir)
    with running_server(app) as base, httpx.Client(base_url=base, timeout=60) as session:
        yield session


# ---------------------------------------------------------------- item 1: pixel bombs


def test_pixel_bombs_over_the_limit_get_413_before_decoding(client):
    """issue 13, item 1: a 75 KB PNG of 4096x4096 RGBA is refused from its header (413, not
    415, fast), and so is one under 4096 a side but over the pixel count."""
    limits = ServeLimits()
    for width, height in ((4096, 4096), (4096, limits.max_png_pixels // 4096 + 1)):
        bomb = stroke_png(width, height)
        assert len(bomb) < 150_000
        start = time.perf_counter()
        answer = client.post("/api/predict", content=bomb, headers={"Content-Type": "image/png"})
        assert answer.status_code == 413, answer.text
        assert f"{width}x{height} pixels" in answer.json()["detail"]
        assert f"at most {limits.max_png_pixels} pixels" in answer.json()["detail"]
        assert time.perf_counter() - start < 2.0  # decoding alone would take longer


def test_large_png_is_reduced_by_whole_blocks_before_preprocessing(client, checkpoint, data_dir):
    """issue 13, item 1: a picture larger than work_side is reduced by a whole factor (box
    filter) first; for a digit drawn in uniform 64x64 blocks the result is exact."""
    digit = load_dataset("mnist", "test", data_dir=data_dir, download=False)[0][3]
    big = 255 - np.kron(digit, np.ones((64, 64), dtype=np.uint8))  # 1792x1792, dark on white
    factor = math.ceil(1792 / ServeLimits().work_side)  # 4: 448x448
    reduced = 255 - np.kron(digit, np.ones((64 // factor, 64 // factor), dtype=np.uint8))
    answer = client.post(
        "/api/predict", content=png(Image.fromarray(big)), headers={"Content-Type": "image/png"}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["input"] == to_mnist(reduced).tolist()


def test_eight_concurrent_pixel_bombs_keep_the_server_under_1_gb(small_run, data_dir, capsys):
    """issue 13, item 1: 8 concurrent 4096x4096 RGBA bombs (~75 KB each), then 8 concurrent
    pictures at the pixel limit: only 2xx/413/503 answers, and the server process's peak
    resident memory (VmHWM) stays under 1 GiB (before the fix: 0.5 GB -> 4.3 GB for 4)."""
    limits = ServeLimits()
    over = stroke_png(4096, 4096)
    at_limit = stroke_png(limits.max_png_pixels // 2048, 2048)
    with cli_server("--checkpoint", str(small_run), "--data-dir", str(data_dir)) as (pid, url, _):
        started = proc_status_bytes(pid, "VmHWM")
        refused = all_at_once(url, [over] * 8)
        decoded = all_at_once(url, [at_limit] * 8)
        peak = proc_status_bytes(pid, "VmHWM")
    assert [r.status_code for r in refused] == [413] * 8
    assert {r.status_code for r in decoded} <= {200, 503}
    assert any(r.status_code == 200 for r in decoded)
    for answer in decoded:
        assert answer.status_code == 200 or answer.headers["retry-after"] == "1"
    with capsys.disabled():
        print(f"\n  serve RSS peak: {started / 2**20:.0f} MiB after start, {peak / 2**20:.0f} MiB")
    assert peak < GIB


def test_decodes_beyond_the_slots_wait_then_get_503_with_retry_after():
    """issue 13, item 1: with every decode slot taken, a PNG request waits decode_wait_s and
    then gets 503 with Retry-After (nothing else happens in between)."""
    slots = DecodeSlots(ServeLimits(max_decodes=2, decode_wait_s=0.2))
    waited: list[float] = []

    async def scenario() -> None:
        async with slots.hold(), slots.hold():
            start = time.perf_counter()
            with pytest.raises(InputError) as refused:
                async with slots.hold():
                    pytest.fail("a third slot was given")
            waited.append(time.perf_counter() - start)
            assert refused.value.status_code == 503
            assert refused.value.retry_after_s == 1
        async with slots.hold():  # given back: free again
            pass

    anyio.run(scenario)
    assert 0.2 <= waited[0] < 2.0


def test_busy_decoder_answers_503_with_retry_after(small_run, data_dir):
    """issue 13, item 1: one decode slot and no patience: of 6 pictures sent at once, those
    that find the slot taken get 503 with Retry-After: 1, the others their prediction."""
    limits = ServeLimits(max_decodes=1, decode_wait_s=0.001)
    app = create_app(small_run, which=WHICH, data_dir=data_dir, limits=limits)
    with running_server(app) as base:
        answers = all_at_once(base, [stroke_png(2048, 2048)] * 6)
    statuses = sorted(answer.status_code for answer in answers)
    assert set(statuses) == {200, 503}, statuses
    for answer in answers:
        if answer.status_code == 503:
            assert answer.headers["retry-after"] == "1"
            assert "try again" in answer.json()["detail"]


# ---------------------------------------------------------------- item 2: non-finite numbers


def test_nan_weights_are_a_clean_startup_error(checkpoint):
    """issue 13, item 2: a model whose logits are NaN is refused when the app is built, with a
    ValueError that says so (the command prints it as one line)."""
    broken = load_checkpoint(checkpoint.directory, which=WHICH)
    with torch.no_grad():
        broken.model.layers[-1].bias[3] = math.nan
    expected = r"logits are not finite \(1 of 10 values, e.g. logits\[0\]\[3\] = nan\).*damaged"
    with pytest.raises(ValueError, match=expected):
        Predictor(broken, dataset="mnist")


def test_damaged_checkpoint_stops_the_command_with_one_line(small_run, tmp_path):
    """issue 13, item 2: ``logloss serve`` on weights with a NaN bias exits with status 2 and
    one ``logloss: error:`` line, never a traceback."""
    damaged = tmp_path / "run"
    shutil.copytree(small_run, damaged)
    weights = damaged / f"{WHICH}.safetensors"
    with safe_open(weights, "pt") as opened:
        metadata = opened.metadata()
    tensors = load_file(weights)
    bias = next(name for name in tensors if name.endswith("bias"))
    tensors[bias][0] = math.nan
    save_file(tensors, weights, metadata=metadata)
    command = [sys.executable, "-m", "logloss", "serve", "--checkpoint", str(damaged)]
    done = subprocess.run([*command, "--port", "0"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("logloss: error: ")
    assert done.stderr.count("\n") == 1, done.stderr


@pytest.fixture(scope="module")
def overflowing_url(checkpoint, data_dir):
    """A model finite on the blank image (the start-up check) but infinite on ink: hidden unit
    0 weighs every pixel 1e37, so ink overflows float32 while a blank image stays negative
    (ReLU -> 0)."""
    model = load_checkpoint(checkpoint.directory, which=WHICH)
    with torch.no_grad():
        model.model.layers[1].weight[0] = 1e37
        model.model.layers[1].bias[0] = 0.0
    predictor = Predictor(model, dataset="mnist", data_dir=data_dir)  # starts: blank is finite
    with running_server(build_app(predictor)) as base:
        yield base


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/predict", {"image": [[255] * 28] * 28}),
        ("GET", "/api/samples?kind=hardest", None),
    ],
)
def test_non_finite_model_output_is_a_json_503(overflowing_url, method, path, body):
    """issue 13, item 2: non-finite logits become a 503 with a JSON detail, never a 500 or a
    bare NaN token."""
    answer = httpx.request(method, overflowing_url + path, json=body, timeout=60)
    assert answer.status_code == 503
    detail = json.loads(answer.content, parse_constant=pytest.fail)["detail"]
    assert "the model's logits are not finite" in detail


def test_answers_follow_the_json_policy():
    """issue 13, item 2: an answer holding a non-finite number is encoded as logloss._json
    encodes it (strings), the usual one with the standard encoder."""
    finite = PolicyJSONResponse({"loss": 0.5, "input": [[1, 2]]})
    assert json.loads(finite.body) == {"loss": 0.5, "input": [[1, 2]]}
    odd = PolicyJSONResponse({"loss": math.inf, "p": [math.nan, -math.inf, 0.25]})
    assert json.loads(odd.body, parse_constant=pytest.fail) == {
        "loss": "Infinity",
        "p": ["NaN", "-Infinity", 0.25],
    }


# ---------------------------------------------------------------- item 6: a bad dataset


def test_a_dataset_that_fails_to_load_is_read_once(small_run, tmp_path, monkeypatch):
    """issue 13, item 6: damaged dataset files give one clear 503, the same each time, without
    being read again (before: re-inflated and a 500 on every /api/sample)."""
    folder = tmp_path / "data" / "mnist"
    folder.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        (folder / name).write_bytes(b"\x1f\x8b\x08\x00" + b"not really gzip" * 10)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (folder / name).write_bytes(b"\x1f\x8b\x08\x00" + b"not really gzip" * 10)
    reads: list[str] = []
    real_load = logloss.serve.predictor.load_dataset

    def counting_load(*args, **kwargs):
        reads.append(args[1])
        return real_load(*args, **kwargs)

    monkeypatch.setattr(logloss.serve.predictor, "load_dataset", counting_load)
    app = create_app(small_run, which=WHICH, data_dir=tmp_path / "data")
    with running_server(app) as base, httpx.Client(base_url=base, timeout=60) as session:
        answers = [session.get(path) for path in ["/api/sample/test/0", "/api/samples"] * 3]
        drawing = session.post("/api/predict", json={"image": GOOD})
    assert [answer.status_code for answer in answers] == [503] * 6
    details = {answer.json()["detail"] for answer in answers}
    assert len(details) == 1
    assert "the mnist test split cannot be read" in details.pop()
    assert reads == ["test"]
    assert drawing.status_code == 200


# ---------------------------------------------------------------- item 7: slow clients

PARTIAL_HEADER = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "
PARTIAL_BODY = (
    b"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    b"Content-Length: 500000\r\n\r\n" + b" " * 16384
)


def open_slow_clients(url: str, counts: dict[bytes, int]) -> list[socket.socket]:
    """Connections that send ``start`` (nothing, part of the headers, part of a body) and stall."""
    host, port = url.removeprefix("http://").split(":")
    clients = []
    for start, count in counts.items():
        for _ in range(count):
            sock = socket.create_connection((host, int(port)), timeout=10)
            if start:
                sock.sendall(start)
            clients.append(sock)
    return clients


def seconds_until_closed(clients: list[socket.socket], wait_s: float) -> list[float | None]:
    """For each connection, the seconds until the server closed it (None: still open after
    ``wait_s``); what the server sent before closing is read and dropped."""
    start = time.perf_counter()
    closed: list[float | None] = [None] * len(clients)
    with selectors.DefaultSelector() as selector:
        for k, sock in enumerate(clients):
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ, k)
        while selector.get_map() and time.perf_counter() - start < wait_s:
            for key, _ in selector.select(timeout=0.05):
                try:
                    data = key.fileobj.recv(65536)
                except ConnectionError:
                    data = b""
                if not data:
                    closed[key.data] = time.perf_counter() - start
                    selector.unregister(key.fileobj)
    for sock in clients:
        sock.close()
    return closed


@pytest.fixture(scope="module")
def impatient_url(small_run, data_dir):
    limits = ServeLimits(request_timeout_s=1.0, keep_alive_s=1.0, max_connections=40)
    with running_server(create_app(small_run, which=WHICH, data_dir=data_dir, limits=limits)) as b:
        yield b


def test_slow_clients_are_closed_at_the_request_deadline(impatient_url):
    """issue 13, item 7: idle, partial-header and partial-body connections are closed when the
    request deadline (1 s here) passes, not 75 s later; the server still answers after."""
    clients = open_slow_clients(impatient_url, {b"": 10, PARTIAL_HEADER: 10, PARTIAL_BODY: 10})
    closed = seconds_until_closed(clients, wait_s=10)
    assert None not in closed, closed
    assert min(closed) >= 0.9, closed
    assert max(closed) <= 3.5, closed
    assert httpx.get(impatient_url + "/api/samples?count=1", timeout=30).status_code == 200


def test_idle_keep_alive_connection_is_closed(impatient_url):
    """issue 13, item 7: after an answer, a connection that sends nothing more is closed after
    keep_alive_s (uvicorn's timeout_keep_alive)."""
    (sock,) = open_slow_clients(impatient_url, {b"": 1})
    sock.sendall(b"GET /static/style.css HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    (closed,) = seconds_until_closed([sock], wait_s=10)
    assert closed is not None
    assert closed <= 3.0


def test_connections_beyond_the_cap_are_closed_at_once(impatient_url):
    """issue 13, item 7: beyond max_connections (40 here) a connection is closed as soon as it
    is accepted; those within the cap wait for their deadline."""
    clients = open_slow_clients(impatient_url, {b"": 100})
    closed = seconds_until_closed(clients, wait_s=10)
    early = [t for t in closed if t is not None and t < 0.5]
    assert len(early) == 60, sorted(t for t in closed if t is not None)
    assert None not in closed


def test_a_thousand_slow_connections_cost_little_memory(small_run, data_dir, capsys):
    """issue 13, item 7: 1,000 slow clients (idle, partial headers, 16 KiB of a 500 KB body)
    against the default connection cap: the server's memory grows by tens of MiB at most
    (before: 3,000 cost 630 MB), and every connection is closed by its deadline."""
    limits = ServeLimits(request_timeout_s=3.0)
    app = create_app(small_run, which=WHICH, data_dir=data_dir, limits=limits)
    with running_server(app) as base, peak_rss_growth() as memory:
        clients = open_slow_clients(base, {b"": 334, PARTIAL_HEADER: 333, PARTIAL_BODY: 333})
        closed = seconds_until_closed(clients, wait_s=15)
    assert None not in closed
    with capsys.disabled():
        print(f"\n  1000 slow connections: RSS +{memory['growth'] / 2**20:.1f} MiB")
    assert memory["growth"] < 64 * 2**20


# ---------------------------------------------------------------- item 8: rebinding, cross-site


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("evil.example", 400),
        ("evil.example:{port}", 400),
        ("127.0.0.1.evil.example:{port}", 400),
        ("", 400),
        ("localhost:{port}", 200),
        ("LOCALHOST", 200),
        ("127.0.0.1:{port}", 200),
        ("[::1]:{port}", 200),
    ],
)
def test_only_this_servers_host_names_are_served(client, host, status):
    """issue 13, item 8: a request naming another host (DNS rebinding: evil.example resolving
    to 127.0.0.1) gets 400; the loopback names are served."""
    headers = {"Host": host.format(port=client.base_url.port)}
    answer = client.get("/api/samples?count=1", headers=headers)
    assert answer.status_code == status, answer.text
    if status == 400:
        assert "is not this server's name" in answer.json()["detail"]


def test_host_names_follow_the_bound_address():
    """issue 13, item 8: --host adds its own name; a wildcard address accepts IP addresses
    (never a rebinding name) and this machine's name, not other names."""
    assert host_is_allowed("myhost.lan", allowed_hosts("myhost.lan"))
    assert not host_is_allowed("192.168.1.5", allowed_hosts("127.0.0.1"))
    assert host_is_allowed("192.168.1.5", allowed_hosts("0.0.0.0"))
    assert host_is_allowed("fe80::1", allowed_hosts("::"))
    assert host_is_allowed(socket.gethostname().lower(), allowed_hosts("0.0.0.0"))
    assert not host_is_allowed("evil.example", allowed_hosts("0.0.0.0"))
    assert host_name("[fe80::1]:8000") == "fe80::1"


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"],
)
def test_post_without_json_or_png_content_type_is_refused(client, content_type):
    """issue 13, item 8: a body a cross-site form (or a request without Content-Type) can send
    gets 415 before it is read: the model never runs for it."""
    body = json.dumps({"image": GOOD}).encode()
    headers = [("Host", "127.0.0.1"), ("Connection", "close"), ("Content-Length", str(len(body)))]
    if content_type is not None:
        headers.append(("Content-Type", content_type))
    request = "".join(f"{k}: {v}\r\n" for k, v in headers)
    address = (client.base_url.host, client.base_url.port)
    with socket.create_connection(address, timeout=30) as sock:
        sock.sendall(f"POST /api/predict HTTP/1.1\r\n{request}\r\n".encode() + body)
        reply = b"".join(iter(lambda: sock.recv(65536), b"")).decode()  # until the server closes
    assert reply.startswith("HTTP/1.1 415"), reply
    expected = "no Content-Type" if content_type is None else "is not supported"
    assert expected in reply


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"),
    [
        ("GET", "/", {}, 200),
        ("GET", "/static/app.js", {}, 200),
        ("GET", "/api/samples?count=1", {}, 200),
        ("GET", "/nowhere", {}, 404),
        ("POST", "/api/predict", {"content": b"x"}, 415),
        ("POST", "/api/predict", {"json": {"image": "x" * (1 << 20)}}, 413),
        ("GET", "/", {"headers": {"Host": "evil.example"}}, 400),
    ],
)
def test_every_answer_forbids_framing_and_sniffing(client, method, path, kwargs, status):
    """issue 13, item 8: X-Frame-Options, frame-ancestors and nosniff on every answer, errors
    included."""
    answer = client.request(method, path, **kwargs)
    assert answer.status_code == status
    assert answer.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
    assert answer.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize(
    ("content", "path", "message"),
    [
        (json.dumps({f"k{i}": 0 for i in range(70_000)}), "/api/predict", "and 69997 more"),
        (json.dumps({"image": GOOD, "x" * 500_000: 1}), "/api/predict", "unknown field(s) 'xx"),
        (None, "/api/samples?count=" + "9" * 5000, "count: Unable to parse"),
    ],
)
def test_error_bodies_are_capped(client, content, path, message):
    """issue 13, item 8: 70,000 unknown keys (or one 500 kB key, or a 5000-digit count) are
    not echoed back: the answer stays under 1 kB (before: 700 kB)."""
    if content is None:
        answer = client.get(path)
    else:
        headers = {"Content-Type": "application/json"}
        answer = client.post(path, content=content.encode(), headers=headers)
    assert answer.status_code == 422
    assert message in answer.json()["detail"]
    assert len(answer.content) <= ServeLimits().max_error_chars + 100


@pytest.mark.parametrize(
    "path", ["/static/..%2Fapp.py", "/static/..%2F..%2Fserve%2Fapp.py", "/static/%2e%2e/app.py"]
)
def test_static_files_stay_in_their_folder(client, path):
    """docs/security.md: a path out of static/ is not served."""
    answer = client.get(path)
    assert answer.status_code == 404
    assert "build_app" not in answer.text


# ---------------------------------------------------------------- issue 14: no data


def test_start_says_browsing_is_off_and_how_to_turn_it_on(small_run, tmp_path):
    """issue 14: ``serve`` without the dataset says at start that browsing is off and how to
    turn it on; the API says the same in one short line, without the loader's internals."""
    env = {"LOGLOSS_DATA": "", "XDG_CACHE_HOME": str(tmp_path / "cache")}
    flags = ("--checkpoint", str(small_run), "--data-dir", str(tmp_path / "empty"))
    with cli_server(*flags, env=env) as (_, base, lines):
        answer = httpx.get(f"{base}/api/samples", timeout=30)
    assert lines[1].startswith("logloss serve: browsing samples is off"), lines
    for hint in ("--data-dir", "LOGLOSS_DATA", "logloss data fetch mnist"):
        assert hint in lines[1]
    assert answer.status_code == 503
    detail = answer.json()["detail"]
    assert detail == lines[1].removeprefix("logloss serve: ").strip()
    assert "download=False" not in detail
    assert len(detail) < 300


# ---------------------------------------------------------------- docs/security.md


def test_security_doc_states_every_limit():
    """docs/security.md names every limit with its value (a changed default fails here)."""
    text = (DOCS / "security.md").read_text(encoding="utf-8")
    for field in fields(ServeLimits):
        value = getattr(ServeLimits(), field.name)
        assert f"`{field.name}`" in text, field.name
        row = next(line for line in text.splitlines() if line.startswith(f"| `{field.name}`"))
        assert (str(value) if isinstance(value, int) else f"{value:g}") in row, (field.name, row)
