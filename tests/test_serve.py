"""The ``logloss serve`` API, tested against the real server on 127.0.0.1 (uvicorn in a thread).

References are independent of the server: logits from ``Checkpoint.logits`` called directly,
softmax and cross-entropy from PyTorch in float64, the dataset from ``load_dataset``, the
preprocessing from ``logloss.data.preprocess.to_mnist``.
"""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from logloss.data import load_dataset
from logloss.data.preprocess import to_mnist
from logloss.serve import ServeLimits, create_app, running_server
from logloss.training.checkpoint import load_checkpoint

WHICH = "best"  # conftest.small_run trains one full epoch, so it has "best" weights


@pytest.fixture(scope="session")
def checkpoint_dir(small_run: Path) -> Path:
    return small_run


@pytest.fixture(scope="module")
def checkpoint(checkpoint_dir: Path):
    return load_checkpoint(checkpoint_dir, which=WHICH)


@pytest.fixture(scope="module")
def test_split(data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    return load_dataset("mnist", "test", data_dir=data_dir, download=False)


@pytest.fixture(scope="module")
def url(checkpoint_dir: Path, data_dir: Path):
    with running_server(create_app(checkpoint_dir, which=WHICH, data_dir=data_dir)) as base:
        yield base


@pytest.fixture(scope="module")
def client(url: str):
    with httpx.Client(base_url=url, timeout=30) as session:
        yield session


def reference(logits: np.ndarray, target: int) -> tuple[np.ndarray, float]:
    """softmax and cross-entropy of one sample from PyTorch, float64."""
    z = torch.from_numpy(np.asarray(logits, dtype=np.float64))[None]
    probabilities = torch.softmax(z, dim=1)[0].numpy()
    loss = torch.nn.functional.cross_entropy(z, torch.tensor([target])).item()
    return probabilities, loss


def assert_loss_close(loss: float, logits: np.ndarray, target: int) -> None:
    """``loss`` is PyTorch's float64 cross-entropy of ``logits`` for ``target``.

    To 1e-12 relative, or to the rounding of ``logsumexp(z) - z[target]``: that difference of two
    numbers of size ``max|z|`` is off by a few ulps of ``max|z|`` in any float64 evaluation (ours
    or PyTorch's), which exceeds 1e-12 relative when a confident right answer has a loss ~1e-4.
    """
    expected = reference(logits, target)[1]
    ulps = 4 * np.finfo(np.float64).eps * max(1.0, float(np.max(np.abs(logits))))
    assert math.isclose(loss, expected, rel_tol=1e-12, abs_tol=ulps), (loss, expected, ulps)


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


# ---------------------------------------------------------------- correct answers


def test_predict_json_matches_checkpoint_and_torch(client, checkpoint, test_split):
    images, labels = test_split
    for index in (0, 1, 2, 1234, 9999):
        image, label = images[index], int(labels[index])
        answer = client.post("/api/predict", json={"image": image.tolist(), "target": label})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        expected_logits = checkpoint.logits(image[None])[0]
        # float32 logits survive JSON exactly (repr of the float64 they widen to).
        np.testing.assert_array_equal(np.float32(body["logits"]), expected_logits)
        probabilities, _ = reference(expected_logits, label)
        np.testing.assert_allclose(body["probabilities"], probabilities, rtol=1e-12, atol=1e-15)
        assert math.isclose(sum(body["probabilities"]), 1.0, rel_tol=1e-12)
        assert body["predicted"] == int(np.argmax(expected_logits))
        assert body["target"] == label
        assert math.isclose(body["p_target"], probabilities[label], rel_tol=1e-12)
        assert_loss_close(body["loss"], expected_logits, label)
        assert math.isclose(body["loss"], -math.log(body["p_target"]), rel_tol=1e-9)
        np.testing.assert_allclose(body["losses"], -np.log(probabilities), rtol=1e-9)
        assert math.isclose(body["uniform_loss"], math.log(10), rel_tol=1e-15)
        assert body["input"] == image.tolist()


def test_predict_without_target_has_no_loss(client, checkpoint, test_split):
    image = test_split[0][7]
    body = client.post("/api/predict", json={"image": image.tolist()}).json()
    assert body["target"] is None
    assert body["p_target"] is None
    assert body["loss"] is None
    assert body["predicted"] == int(np.argmax(checkpoint.logits(image[None])[0]))


def test_predict_png_is_preprocessed_like_mnist(client, checkpoint, test_split):
    # A dark digit on white paper at 10x size, like the page's canvas.
    digit = 255 - np.kron(test_split[0][3], np.ones((10, 10), dtype=np.uint8))
    answer = client.post(
        "/api/predict?target=0", content=png_bytes(digit), headers={"Content-Type": "image/png"}
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    seen = to_mnist(digit)
    assert body["input"] == seen.tolist()
    assert (seen > 0).any()
    np.testing.assert_array_equal(np.float32(body["logits"]), checkpoint.logits(seen[None])[0])
    assert_loss_close(body["loss"], np.float32(body["logits"]), 0)


def test_transparent_png_is_ink_on_white(client):
    # The canvas may send black ink on transparent pixels: that must read as ink on white paper.
    ink = np.zeros((120, 120, 4), dtype=np.uint8)
    ink[20:100, 55:65, 3] = 255  # an opaque black bar ("1"); the rest is transparent black
    on_white = np.full((120, 120), 255, dtype=np.uint8)
    on_white[20:100, 55:65] = 0
    transparent = client.post(
        "/api/predict", content=png_bytes(ink), headers={"Content-Type": "image/png"}
    ).json()
    assert transparent["input"] == to_mnist(on_white).tolist()


def test_json_preprocess_flag_applies_to_mnist(client):
    off_centre = np.zeros((28, 28), dtype=np.uint8)
    off_centre[2:8, 2:5] = 200  # a small blob in the corner
    body = client.post(
        "/api/predict", json={"image": off_centre.tolist(), "preprocess": True}
    ).json()
    assert body["input"] == to_mnist(off_centre).tolist()
    assert body["input"] != off_centre.tolist()


def test_sample_endpoint_uses_dataset_label(client, checkpoint, test_split):
    images, labels = test_split
    for split, index in (("test", 0), ("test", 9999)):
        body = client.get(f"/api/sample/{split}/{index}").json()
        assert body["split"] == split
        assert body["index"] == index
        assert body["label"] == body["target"] == int(labels[index])
        assert body["input"] == images[index].tolist()
        logits = checkpoint.logits(images[index][None])[0]
        np.testing.assert_array_equal(np.float32(body["logits"]), logits)
        assert_loss_close(body["loss"], logits, int(labels[index]))


def test_sample_lists_follow_the_losses(client, checkpoint, test_split):
    images, labels = test_split
    logits = torch.from_numpy(checkpoint.logits(images).astype(np.float64))
    target = torch.from_numpy(labels.astype(np.int64))
    losses = torch.nn.functional.cross_entropy(logits, target, reduction="none").numpy()
    probabilities = torch.softmax(logits, dim=1).numpy()
    predicted = probabilities.argmax(axis=1)

    # 40 is past logloss.diagnostics' default top_k (16): the server must keep longer rankings.
    hardest = client.get("/api/samples", params={"kind": "hardest", "count": 40}).json()
    got = [item["index"] for item in hardest["items"]]
    assert hardest["size"] == len(images)
    assert got == np.argsort(-losses, kind="stable")[:40].tolist()
    for item in hardest["items"]:
        assert math.isclose(item["loss"], losses[item["index"]], rel_tol=1e-9)
        assert item["label"] == labels[item["index"]]
        assert item["input"] == images[item["index"]].tolist()

    mistakes = client.get("/api/samples", params={"kind": "confident_mistakes", "count": 40}).json()
    wrong = np.flatnonzero(predicted != labels)
    confidence = probabilities[wrong, predicted[wrong]]
    expected = wrong[np.argsort(-confidence, kind="stable")][:40]
    assert [item["index"] for item in mistakes["items"]] == expected.tolist()
    for item in mistakes["items"]:
        assert item["predicted"] != item["label"]
        assert item["predicted"] == predicted[item["index"]]
        assert math.isclose(
            item["p_predicted"], probabilities[item["index"], item["predicted"]], rel_tol=1e-9
        )


def test_random_samples_are_distinct_and_seeded(client, test_split):
    first = client.get("/api/samples", params={"kind": "random", "count": 30, "seed": 5}).json()
    again = client.get("/api/samples", params={"kind": "random", "count": 30, "seed": 5}).json()
    other = client.get("/api/samples", params={"kind": "random", "count": 30, "seed": 6}).json()
    indices = [item["index"] for item in first["items"]]
    assert len(set(indices)) == 30
    assert all(0 <= i < len(test_split[0]) for i in indices)
    assert indices == [item["index"] for item in again["items"]]
    assert indices != [item["index"] for item in other["items"]]
    for item in first["items"]:
        assert item["label"] == test_split[1][item["index"]]


def test_random_seeds_beyond_64_bits_are_fine(client, test_split):
    # NumPy seeds are any integer >= 0; the same seed gives the same draw as NumPy itself.
    seed = 2**64 + 7
    answer = client.get("/api/samples", params={"kind": "random", "count": 5, "seed": seed})
    assert answer.status_code == 200, answer.text
    expected = np.random.default_rng(seed).choice(len(test_split[0]), size=5, replace=False)
    assert [item["index"] for item in answer.json()["items"]] == expected.tolist()


def test_concurrent_requests_are_answered_correctly(url, checkpoint, test_split):
    images = test_split[0][:40]
    # One image at a time, as the server runs them (a batched matmul may round differently).
    expected = np.stack([checkpoint.logits(image[None])[0] for image in images])
    results: dict[int, list[float]] = {}

    def ask(k: int) -> None:
        with httpx.Client(base_url=url, timeout=60) as session:
            results[k] = session.post("/api/predict", json={"image": images[k].tolist()}).json()[
                "logits"
            ]

    threads = [threading.Thread(target=ask, args=(k,)) for k in range(len(images))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == list(range(len(images)))
    np.testing.assert_array_equal(np.float32([results[k] for k in range(len(images))]), expected)


# ---------------------------------------------------------------- bad input: 4xx, never 500

ROW = [0] * 28
GOOD = [ROW] * 28


def bad_image(i: int, j: int, value: object) -> list[list[object]]:
    image: list[list[object]] = [list(ROW) for _ in range(28)]
    image[i][j] = value
    return image


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"image": [ROW] * 27}, 422, "got 27 rows"),
        ({"image": [ROW] * 28 + [ROW]}, 422, "got 29 rows"),
        ({"image": [*[ROW] * 27, [0] * 30]}, 422, "row 27 must have 28 gray levels; got 30"),
        ({"image": "pixels"}, 422, "got str"),
        ({"image": bad_image(3, 4, 256)}, 422, "image[3][4] = 256 is not a gray level"),
        ({"image": bad_image(0, 0, -1)}, 422, "image[0][0] = -1 is not a gray level"),
        ({"image": bad_image(5, 6, 0.5)}, 422, "image[5][6] = 0.5 is not a gray level"),
        ({"image": bad_image(1, 1, True)}, 422, "image[1][1] = True is not a number"),
        ({"image": bad_image(2, 2, "7")}, 422, "image[2][2] = '7' is not a number"),
        ({"image": bad_image(2, 2, None)}, 422, "is not a number"),
        # JSON integers are unbounded: 10**400 must not reach float arithmetic (OverflowError).
        ({"image": bad_image(4, 5, 10**400)}, 422, "image[4][5] = 1000000000"),
        ({"image": bad_image(4, 5, -(10**400))}, 422, "image[4][5] = -1000000000"),
        ({"image": bad_image(0, 1, 1e308)}, 422, "image[0][1] = 1e+308 is not a gray level"),
        ({"image": GOOD, "target": 10**400}, 422, "target = 1000000000"),
        ({"image": GOOD, "target": 10}, 422, "target = 10 is not a class; use an integer 0-9"),
        ({"image": GOOD, "target": -1}, 422, "target = -1 is not a class"),
        ({"image": GOOD, "target": "3"}, 422, "target = '3' is not a class"),
        ({"image": GOOD, "target": 2.0}, 422, "target = 2.0 is not a class"),
        ({"image": GOOD, "preprocess": "yes"}, 422, "preprocess = 'yes'; use true or false"),
        ({"image": GOOD, "preprocess": True}, 422, "cannot preprocess the image: no digit found"),
        (
            {"pixels": GOOD},
            422,
            "unknown field(s) 'pixels'; allowed: ['image', 'preprocess', 'target']",
        ),
        ({}, 422, 'needs "image"'),
        ([1, 2], 422, "must be an object, got list"),
    ],
)
def test_bad_json_gets_422_with_a_clear_message(client, body, status, message):
    answer = client.post("/api/predict", json=body)
    assert answer.status_code == status
    assert message in answer.json()["detail"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"image": NaN}', "contains NaN"),
        (b'{"image": [[Infinity]]}', "contains Infinity"),
        (b'{"image": [[-Infinity]]}', "contains -Infinity"),
        (b'{"image": [[0, 0]', "not valid JSON"),
        (b"\xff\xfe\x00", "not valid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),  # nesting past the recursion limit
        (b'{"image": [[' + b"9" * 5000 + b"]]}", "not valid JSON"),  # past int's digit limit
        (
            json.dumps({"image": bad_image(0, 0, 12345)}).replace("12345", "1e400").encode(),
            "image[0][0] = inf is not a gray level",  # 1e400 overflows to inf, no NaN token
        ),
    ],
)
def test_nan_and_broken_json_get_422(client, content, message):
    answer = client.post(
        "/api/predict", content=content, headers={"Content-Type": "application/json"}
    )
    assert answer.status_code == 422
    assert message in answer.json()["detail"]


def test_not_an_image_gets_415(client):
    jpeg = io.BytesIO()
    Image.new("L", (28, 28)).save(jpeg, format="JPEG")
    for content in (b"definitely not a png", png_bytes(np.zeros((28, 28), np.uint8))[:40]):
        answer = client.post("/api/predict", content=content, headers={"Content-Type": "image/png"})
        assert answer.status_code == 415
        assert "not a readable PNG image" in answer.json()["detail"]
    # Only Pillow's PNG reader looks at the body: a JPEG is not read as one.
    answer = client.post(
        "/api/predict", content=jpeg.getvalue(), headers={"Content-Type": "image/png"}
    )
    assert answer.status_code == 415
    assert "not a readable PNG image" in answer.json()["detail"]
    answer = client.post("/api/predict", content=b"1,2", headers={"Content-Type": "text/csv"})
    assert answer.status_code == 415
    assert "Content-Type 'text/csv' is not supported" in answer.json()["detail"]


def test_png_with_a_huge_target_gets_422(client, test_split):
    digit = 255 - np.kron(test_split[0][3], np.ones((10, 10), dtype=np.uint8))
    for target in (10**21, -1, 10):
        answer = client.post(
            f"/api/predict?target={target}",
            content=png_bytes(digit),
            headers={"Content-Type": "image/png"},
        )
        assert answer.status_code == 422
        assert f"target = {target} is not a class" in answer.json()["detail"]


def test_blank_png_gets_422(client):
    blank = np.full((280, 280), 255, dtype=np.uint8)
    answer = client.post(
        "/api/predict", content=png_bytes(blank), headers={"Content-Type": "image/png"}
    )
    assert answer.status_code == 422
    assert "no digit found" in answer.json()["detail"]


def test_png_with_huge_dimensions_is_refused_before_decoding(client):
    # 8000x8000 of one colour compresses to a few kB but would decode to 64 MB.
    buffer = io.BytesIO()
    Image.new("L", (8000, 8000), 255).save(buffer, format="PNG", optimize=True)
    assert len(buffer.getvalue()) < 1 << 20
    answer = client.post(
        "/api/predict", content=buffer.getvalue(), headers={"Content-Type": "image/png"}
    )
    assert answer.status_code == 413
    assert "8000x8000 pixels" in answer.json()["detail"]


def test_huge_body_gets_413_by_length_and_by_streaming(client):
    big = b"0" * ((1 << 20) + 1)
    answer = client.post("/api/predict", content=big, headers={"Content-Type": "image/png"})
    assert answer.status_code == 413
    assert "over 1048576 bytes" in answer.json()["detail"]

    def chunks():  # no Content-Length: chunked transfer, counted as it arrives
        for _ in range(20):
            yield b"0" * 65536

    answer = client.post("/api/predict", content=chunks(), headers={"Content-Type": "image/png"})
    assert answer.status_code == 413
    assert "over 1048576 bytes" in answer.json()["detail"]


def test_body_limit_is_configurable(checkpoint_dir, data_dir):
    limits = ServeLimits(max_body_bytes=1000)
    app = create_app(checkpoint_dir, which=WHICH, data_dir=data_dir, limits=limits)
    with running_server(app) as base, httpx.Client(base_url=base) as session:
        answer = session.post("/api/predict", json={"image": GOOD})  # ~1.6 kB of JSON
        assert answer.status_code == 413
        assert "over 1000 bytes" in answer.json()["detail"]


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("/api/sample/test/10000", 404, "index 10000 is out of range: the test split has 10000"),
        ("/api/sample/test/-1", 404, "index -1 is out of range"),
        ("/api/sample/validation/3", 404, "unknown split 'validation'; use one of"),
        ("/api/sample/test/three", 422, "valid integer"),
        ("/api/samples?kind=easiest", 422, "'random', 'hardest' or 'confident_mistakes'"),
        ("/api/samples?count=0", 422, "count"),
        ("/api/samples?count=201", 422, "count"),
        ("/api/samples?split=dev", 404, "unknown split 'dev'"),
        ("/api/samples?split=%00", 404, "unknown split '\\x00'"),
        (
            "/api/samples?kind=random&seed=-1",
            422,
            "seed: Input should be greater than or equal to 0",
        ),
        ("/api/samples?seed=1.5", 422, "seed: Input should be a valid integer"),
        ("/api/samples?count=-5", 422, "count: Input should be greater than or equal to 1"),
        (f"/api/samples?count={10**30}", 422, "count: Input should be less than or equal to 200"),
        ("/api/samples?count=" + "9" * 5000, 422, "count: Unable to parse input string"),
        (f"/api/sample/test/{10**30}", 404, f"index {10**30} is out of range"),
        (f"/api/sample/test/-{10**30}", 404, f"index -{10**30} is out of range"),
        ("/api/sample/test/1e3", 422, "index: Input should be a valid integer"),
        ("/api/sample/..%2F..%2Fetc/0", 404, "Not Found"),
        ("/api/nothing", 404, "Not Found"),
    ],
)
def test_bad_sample_requests_get_4xx(client, path, status, message):
    answer = client.get(path)
    assert answer.status_code == status
    assert message in answer.json()["detail"]


def test_missing_dataset_is_explained(checkpoint_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("LOGLOSS_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    app = create_app(checkpoint_dir, which=WHICH, data_dir=tmp_path / "empty")
    with running_server(app) as base, httpx.Client(base_url=base) as session:
        answer = session.get("/api/sample/test/0")
        assert answer.status_code == 503
        assert "--data-dir" in answer.json()["detail"]
        # Drawing still works without the dataset.
        assert session.post("/api/predict", json={"image": GOOD}).status_code == 200


# ---------------------------------------------------------------- the description and the page


def test_openapi_describes_the_api(client):
    spec = client.get("/openapi.json").json()
    assert {"/api/predict", "/api/sample/{split}/{index}", "/api/samples"} <= set(spec["paths"])
    body = spec["paths"]["/api/predict"]["post"]["requestBody"]["content"]
    assert {"application/json", "image/png"} <= set(body)
    assert "image" in body["application/json"]["schema"]["properties"]
    assert "Prediction" in spec["components"]["schemas"]


def test_page_and_its_files_are_local(client):
    page = client.get("/")
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert '<canvas id="pad"' in page.text
    for name in ("app.js", "style.css"):
        answer = client.get(f"/static/{name}")
        assert answer.status_code == 200
        # No CDN, no remote fonts: nothing from the network.
        assert "http://" not in answer.text
        assert "https://" not in answer.text
    assert "http://" not in page.text
    assert "https://" not in page.text


# ---------------------------------------------------------------- the command


def test_cli_defaults_to_loopback():
    from logloss.cli import build_parser

    args = build_parser().parse_args(["serve", "--checkpoint", "run"])
    assert args.host == "127.0.0.1"
    assert args.port == 8000


class Served(Exception):
    """Raised by the stand-in for the blocking server loop, carrying the app it was given."""


@pytest.mark.parametrize(("flags", "dataset"), [([], "mnist"), (["--dataset", "kmnist"], "kmnist")])
def test_cli_dataset_reaches_the_app(checkpoint_dir, data_dir, monkeypatch, flags, dataset):
    # The real create_app builds the app; only the endless serving loop is replaced.
    import logloss.serve
    from logloss.cli import build_parser

    def stop(app, host, port, **kwargs):
        raise Served(app)

    monkeypatch.setattr(logloss.serve, "serve", stop)
    args = build_parser().parse_args(
        ["serve", "--checkpoint", str(checkpoint_dir), "--data-dir", str(data_dir), *flags]
    )
    assert args.dataset == (flags[1] if flags else None)  # None: the checkpoint's own
    with pytest.raises(Served) as served:
        args.handler(args)
    predictor = served.value.args[0].state.predictor
    assert predictor.dataset == dataset
    assert predictor.data_dir == data_dir


def test_cli_refuses_a_dataset_of_other_image_size(checkpoint_dir, capsys):
    from logloss.cli import build_parser
    from logloss.serve import Predictor
    from logloss.training.checkpoint import load_checkpoint

    parser = build_parser()
    # The page draws 28x28 digits: --dataset offers only 28x28 datasets (digits is 8x8).
    for name in ("digits", "cifar"):
        with pytest.raises(SystemExit) as exited:
            parser.parse_args(["serve", "--checkpoint", str(checkpoint_dir), "--dataset", name])
        assert exited.value.code == 2
        assert f"--dataset: invalid choice: '{name}'" in capsys.readouterr().err
    # From Python the same rule holds, with the reason.
    checkpoint = load_checkpoint(checkpoint_dir, which=WHICH)
    with pytest.raises(ValueError, match=r"dataset 'digits' has 8x8 images; .* 28x28 dataset"):
        Predictor(checkpoint, dataset="digits")


def test_cli_serves_and_prints_its_address(checkpoint_dir, data_dir):
    command = [sys.executable, "-m", "logloss", "serve", "--checkpoint", str(checkpoint_dir)]
    command += ["--which", WHICH, "--port", "0", "--data-dir", str(data_dir)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    lines: list[bytes] = []
    reader = threading.Thread(target=lambda: lines.append(process.stdout.readline()), daemon=True)
    reader.start()
    try:
        reader.join(timeout=60)  # loading the checkpoint and binding the port
        line = lines[0].decode() if lines else ""
        assert line.startswith("logloss serve: http://127.0.0.1:"), line
        base = line.split()[2].rstrip("/")
        for _ in range(100):
            try:
                answer = httpx.get(f"{base}/api/samples?kind=random&count=1", timeout=10)
                break
            except httpx.ConnectError:
                threading.Event().wait(0.1)
        assert answer.status_code == 200
        assert len(answer.json()["items"]) == 1
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_cli_rejects_a_missing_checkpoint(tmp_path):
    command = [sys.executable, "-m", "logloss", "serve", "--checkpoint", str(tmp_path / "no")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "is not a directory" in done.stderr


def test_cli_rejects_a_bad_port(tmp_path):
    command = [sys.executable, "-m", "logloss", "serve", "--checkpoint", str(tmp_path)]
    done = subprocess.run([*command, "--port", "70000"], capture_output=True, timeout=60)
    assert done.returncode == 2
    assert b"--port 70000 is not a TCP port" in done.stderr


def test_json_body_of_a_prediction_is_strict_json(client):
    # The page and other clients parse with strict JSON parsers: no NaN/Infinity tokens.
    raw = client.post("/api/predict", json={"image": GOOD, "target": 3}).content
    json.loads(raw, parse_constant=lambda token: pytest.fail(f"non-strict JSON token {token}"))
