"""Benchmark: loading all of MNIST (60k + 10k images and labels, from gzip) with load_dataset.

Run: ``flock /tmp/logloss-measure.lock .venv/bin/python benchmarks/bench_data.py [--data-dir DIR]
[--repeats N]``.  Writes ``benchmarks/results/data.json`` and ``benchmarks/results/data.md``
(atomically).

Measured side by side in one process, round-robin, each the median of N runs (the machine is
shared, so medians and ratios are what to quote):

- ``load_dataset``: ``load_dataset("mnist", "train")`` + ``load_dataset("mnist", "test")``.
- ``read_idx``: the four files through ``read_idx`` alone.
- ``gzip.decompress``: only the stdlib decompression of the four files (a floor: no parsing).
- ``gzip.open + np.frombuffer + copy``: the usual tutorial loader, for comparison.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from logloss._atomic import atomic_write
from logloss.data import load_dataset, read_idx, resolve_data_dir

RESULTS = Path(__file__).resolve().parent / "results"
FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


def _interleaved_times(
    methods: dict[str, Callable[[], object]], repeats: int
) -> dict[str, list[float]]:
    """Run the methods round-robin (order rotated each round) so that they share the machine's
    load alike; returns each method's run times in seconds."""
    for function in methods.values():
        function()  # warm the page cache and imports
    names = list(methods)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(repeats):
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            start = time.perf_counter()
            methods[name]()
            times[name].append(time.perf_counter() - start)
    return times


def _tutorial_loader(folder: Path) -> list[np.ndarray]:
    out = []
    for name in FILES:
        with gzip.open(folder / name, "rb") as handle:
            data = handle.read()
        offset = 16 if "images" in name else 8
        out.append(np.frombuffer(data, np.uint8, offset=offset).copy())
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="data folder holding mnist/ (default: search)"
    )
    parser.add_argument("--repeats", type=int, default=9, help="timed runs per method (default 9)")
    args = parser.parse_args()
    root = resolve_data_dir(args.data_dir, dataset="mnist")
    folder = root / "mnist"

    def full_load() -> None:
        load_dataset("mnist", "train", data_dir=root, download=False)
        load_dataset("mnist", "test", data_dir=root, download=False)

    methods = {
        "load_dataset": full_load,
        "read_idx": lambda: [read_idx(folder / name) for name in FILES],
        "gzip.decompress": lambda: [gzip.decompress((folder / n).read_bytes()) for n in FILES],
        "gzip.open + np.frombuffer + copy": lambda: _tutorial_loader(folder),
    }
    results = {}
    for name, times in _interleaved_times(methods, args.repeats).items():
        median = statistics.median(times)
        results[name] = {"median_s": median, "runs_s": times}
        print(f"{name:34s} median {median * 1000:7.1f} ms  (min {min(times) * 1000:.1f})")
    baseline = results["gzip.decompress"]["median_s"]
    for entry in results.values():
        entry["ratio_to_gzip_decompress"] = entry["median_s"] / baseline

    report = {
        "benchmark": "full MNIST load (60k + 10k images and labels from gzip IDX files)",
        "data_dir": str(root),
        "repeats": args.repeats,
        "results": results,
        "machine": {
            "python": sys.version.split()[0],
            "numpy": np.__version__,
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        },
    }
    lines = [
        "| method | median (ms) | min (ms) | ratio to gzip.decompress |",
        "|---|---:|---:|---:|",
        *(
            f"| {name} | {entry['median_s'] * 1000:.0f} | {min(entry['runs_s']) * 1000:.0f} "
            f"| {entry['ratio_to_gzip_decompress']:.2f} |"
            for name, entry in results.items()
        ),
    ]
    RESULTS.mkdir(parents=True, exist_ok=True)
    with atomic_write(RESULTS / "data.json") as handle:
        handle.write((json.dumps(report, indent=2) + "\n").encode())
    with atomic_write(RESULTS / "data.md") as handle:
        handle.write(("\n".join(lines) + "\n").encode())
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
