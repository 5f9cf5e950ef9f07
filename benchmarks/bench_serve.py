"""Load check for ``logloss serve``: 200 concurrent prediction requests from a local client.

Run: ``.venv/bin/python benchmarks/bench_serve.py [--quick] [--checkpoint DIR] [--data-dir DIR]``.
Writes ``benchmarks/results/serve.json`` and ``benchmarks/results/serve.md`` (atomically;
``--quick``, one round of each kind instead of three, writes ``serve-quick.*``).

The server is the real command, ``logloss serve --port 0``, in its own process (so the client's
work does not share its interpreter); the client is one ``httpx.AsyncClient`` that opens
``--concurrency`` connections and sends all requests at once.  Two kinds of request:

- ``json``: ``{"image": <a 28x28 MNIST test image>, "target": <its label>}``;
- ``png``: the same digit drawn dark on white at 280x280, as the page's canvas sends it
  (preprocessed by the server with ``to_mnist``).

Every answer is checked: status 200, logits equal to ``Checkpoint.logits`` on the image the
server says it saw (float32 rounding allowed), loss equal to PyTorch's cross-entropy.  Latency is
per request, from sending to the whole answer read; each round's p50/p95/max, and the median of
the rounds' p95 is the headline.  Without ``--checkpoint`` a small model is trained first (about
a minute: one epoch of the fast preset with 32 hidden units).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch
from PIL import Image

from logloss._atomic import write_bytes_atomic
from logloss.data import load_dataset
from logloss.training.checkpoint import load_checkpoint

RESULTS = Path(__file__).resolve().parent / "results"


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation, as numpy.percentile."""
    return float(np.percentile(np.asarray(values), q))


def png_canvas(image: np.ndarray) -> bytes:
    """A 28x28 MNIST digit as the page's canvas would send it: dark ink on white, 280x280."""
    big = 255 - np.kron(image, np.ones((10, 10), dtype=np.uint8))
    buffer = io.BytesIO()
    Image.fromarray(big).save(buffer, format="PNG")
    return buffer.getvalue()


def start_server(checkpoint: Path, which: str, data_dir: Path | None) -> tuple[Any, str]:
    """``logloss serve --port 0`` in a subprocess; returns (process, base URL)."""
    command = [sys.executable, "-m", "logloss", "serve", "--checkpoint", str(checkpoint)]
    command += ["--which", which, "--port", "0"]
    if data_dir is not None:
        command += ["--data-dir", str(data_dir)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, env=os.environ.copy())
    lines: list[bytes] = []
    reader = threading.Thread(target=lambda: lines.append(process.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout=120)
    if not lines or not lines[0].startswith(b"logloss serve: http://"):
        process.kill()
        raise RuntimeError(f"the server did not start: {lines!r}")
    return process, lines[0].decode().split()[2].rstrip("/")


async def one_round(
    url: str, requests: list[dict[str, Any]], concurrency: int
) -> tuple[list[float], list[httpx.Response], float]:
    """Send all requests at once; (latencies in s, responses in order, wall time in s)."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as client:

        async def send(request: dict[str, Any]) -> tuple[float, httpx.Response]:
            start = time.perf_counter()
            response = await client.post("/api/predict", **request)
            return time.perf_counter() - start, response

        await asyncio.gather(*(send(r) for r in requests[:8]))  # open connections, warm up
        start = time.perf_counter()
        results = await asyncio.gather(*(send(r) for r in requests))
        wall = time.perf_counter() - start
    return [t for t, _ in results], [r for _, r in results], wall


def check(responses: list[httpx.Response], labels: np.ndarray, checkpoint: Any) -> int:
    """Number of correct answers: 200, right logits for the input seen, right loss."""
    correct = 0
    for response, label in zip(responses, labels, strict=True):
        if response.status_code != 200:
            continue
        body = response.json()
        seen = np.asarray(body["input"], dtype=np.uint8)
        expected = checkpoint.logits(seen[None])[0]
        z = torch.tensor([expected], dtype=torch.float64)
        loss = torch.nn.functional.cross_entropy(z, torch.tensor([int(label)])).item()
        if (
            np.allclose(np.float32(body["logits"]), expected, rtol=1e-5, atol=1e-6)
            and body["predicted"] == int(np.argmax(body["logits"]))
            and body["target"] == int(label)
            and abs(body["loss"] - loss) <= 1e-5 * max(1.0, loss)
        ):
            correct += 1
    return correct


def train_small(folder: Path, data_dir: Path | None) -> Path:
    from logloss.training import TrainConfig, train

    out = folder / "run"
    train(TrainConfig(hidden=(32,), epochs=1, device="cpu"), out_dir=out, data_dir=data_dir)
    return out


def markdown(results: dict[str, Any]) -> str:
    lines = [
        f"Load check: {results['requests']} concurrent prediction requests "
        f"({results['machine']['cpus']} CPUs, load average "
        f"{results['machine']['load_average_1min_before_after'][0]:.1f} before; "
        f"{results['rounds']} round{'s' if results['rounds'] != 1 else ''} each; client and "
        "server on the same machine).",
        "",
        "| body | answered correctly | p50 latency | p95 latency | max latency | wall time |",
        "|---|---|---|---|---|---|",
    ]
    for kind, summary in results["kinds"].items():
        lines.append(
            f"| {kind} | {summary['correct']}/{summary['sent']} "
            f"| {summary['p50_ms']:.0f} ms | {summary['p95_ms']:.0f} ms "
            f"| {summary['max_ms']:.0f} ms | {summary['wall_ms']:.0f} ms |"
        )
    lines += ["", "Each latency is the median over the rounds of that round's statistic."]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=None, help="run folder to serve")
    parser.add_argument("--which", default="best", help="best, last or initial (default: best)")
    parser.add_argument("--data-dir", type=Path, default=None, help="folder holding mnist/")
    parser.add_argument("--requests", type=int, default=200, help="requests per round")
    parser.add_argument("--concurrency", type=int, default=200, help="connections at once")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per kind of body")
    parser.add_argument("--quick", action="store_true", help="one round per kind (a smoke run)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    args = parser.parse_args()
    if args.quick:
        args.rounds = 1

    images, labels = load_dataset("mnist", "test", data_dir=args.data_dir, download=False)
    rng = np.random.default_rng(0)
    chosen = rng.choice(len(images), size=args.requests, replace=False)
    images, labels = images[chosen], labels[chosen]
    bodies = {
        "json": [
            {"json": {"image": image.tolist(), "target": int(label)}}
            for image, label in zip(images, labels, strict=True)
        ],
        "png": [
            {
                "content": png_canvas(image),
                "headers": {"Content-Type": "image/png"},
                "params": {"target": int(label)},
            }
            for image, label in zip(images, labels, strict=True)
        ],
    }

    load_before = os.getloadavg()  # the machine may be shared: say how busy it was
    with tempfile.TemporaryDirectory() as scratch:
        checkpoint_dir = args.checkpoint or train_small(Path(scratch), args.data_dir)
        checkpoint = load_checkpoint(checkpoint_dir, which=args.which)
        process, url = start_server(checkpoint_dir, args.which, args.data_dir)
        try:
            kinds: dict[str, Any] = {}
            for kind, requests in bodies.items():
                rounds = []
                for _ in range(args.rounds):
                    latencies, responses, wall = asyncio.run(
                        one_round(url, requests, args.concurrency)
                    )
                    rounds.append(
                        {
                            "correct": check(responses, labels, checkpoint),
                            "p50_ms": 1e3 * percentile(latencies, 50),
                            "p95_ms": 1e3 * percentile(latencies, 95),
                            "max_ms": 1e3 * max(latencies),
                            "wall_ms": 1e3 * wall,
                        }
                    )
                    print(f"{kind}: {rounds[-1]}", flush=True)
                kinds[kind] = {
                    "sent": args.requests,
                    "correct": min(r["correct"] for r in rounds),
                    **{
                        key: statistics.median(r[key] for r in rounds)
                        for key in ("p50_ms", "p95_ms", "max_ms", "wall_ms")
                    },
                    "rounds": rounds,
                }
        finally:
            process.terminate()
            process.wait(timeout=30)

    results = {
        "benchmark": "serve",
        "requests": args.requests,
        "concurrency": args.concurrency,
        "rounds": args.rounds,
        "quick": args.quick,
        "kinds": kinds,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "platform": platform.platform(),
            "load_average_1min_before_after": [load_before[0], os.getloadavg()[0]],
        },
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "serve-quick" if args.quick else "serve"
    write_bytes_atomic(args.out / f"{stem}.json", json.dumps(results, indent=2).encode() + b"\n")
    write_bytes_atomic(args.out / f"{stem}.md", markdown(results).encode())
    print(markdown(results))
    all_correct = all(k["correct"] == k["sent"] for k in kinds.values())
    return 0 if all_correct else 1


if __name__ == "__main__":
    sys.exit(main())
