"""Benchmark: ``logloss evaluate --predictions`` at any size (issue 12).

Run: ``python benchmarks/bench_predictions.py [--quick] [--work DIR] [--repeats N]``.  Writes
``benchmarks/results/predictions.json`` and ``predictions.md`` (``predictions-quick.*`` with
``--quick``), atomically.

Data: float32 logits of a noisy classifier (right about 70% of the time) and int64 labels, as
``.npy`` files written in blocks: 1M and 10M rows x 10 classes, 1M rows x 1000 classes
(``--quick``: 100k and 1M x 10, 20k x 1000).  Each measurement runs in a fresh process, so its
peak resident memory (``ru_maxrss`` of that child) is its own:

- ``evaluate``: the whole command, ``logloss evaluate --predictions Z --labels Y --json``
  (wall time, start-up included) and its in-process time (``timings.total``: reading the file
  and every diagnostic);
- ``floor``: one pass over the same memory-mapped file, a float64 ``logsumexp`` per row
  (``max``, ``exp``, ``sum``, ``log``) in blocks of the same size: the least any evaluation
  must do;
- ``baseline``: reading the arrays, then the same figures from scikit-learn (``log_loss``,
  ``brier_score_loss``, ``confusion_matrix``, on ``softmax`` probabilities) plus torchmetrics
  (``MulticlassCalibrationError``, 15 bins), on the arrays loaded into memory; at 1000 classes
  on the first 100k rows only (scikit-learn's one-hot labels would need 8 GB for 1M), with
  ``evaluate`` timed on those same rows.

Goals: peak RSS at 10M rows at most 100 MB above 1M rows; ``evaluate`` at least 5x faster than
the baseline; ``evaluate`` within 3x of the floor.  Medians of ``--repeats`` runs, round-robin.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from logloss._atomic import write_text_atomic

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
FULL = [(1_000_000, 10), (10_000_000, 10), (1_000_000, 1000)]
QUICK = [(100_000, 10), (1_000_000, 10), (20_000, 1000)]
BASELINE_ROWS = 100_000  # at 1000 classes: the rows the baseline can hold in memory
RSS_GOAL_MB, SPEEDUP_GOAL, FLOOR_GOAL = 100.0, 5.0, 3.0

FLOOR = """
import sys, time, numpy as np
from logloss.insight.blocks import MappedNpy, block_rows
from pathlib import Path
started = time.perf_counter()
mapped = MappedNpy(Path(sys.argv[1]))
z = mapped.array
size = block_rows(z.shape[1])
total = 0.0
for start in range(0, len(z), size):
    x = np.asarray(z[start:start + size], dtype=np.float64)
    top = x.max(axis=1)
    total += float((np.log(np.exp(x - top[:, None]).sum(axis=1)) + top).sum())
    mapped.release(start + len(x))
print(time.perf_counter() - started)
"""

BASELINE = """
import sys, time, numpy as np
started = time.perf_counter()
import torch
from scipy.special import softmax
from sklearn.metrics import brier_score_loss, confusion_matrix, log_loss
from torchmetrics.classification import MulticlassCalibrationError
imported = time.perf_counter()
z = np.load(sys.argv[1])[: int(sys.argv[3])]  # read into memory, as the evaluation reads it once
y = np.load(sys.argv[2])[: int(sys.argv[3])]
labels = np.arange(z.shape[1])
p = softmax(z.astype(np.float64), axis=1)
log_loss(y, p, labels=labels)
brier_score_loss(y, p, labels=labels, scale_by_half=False)
confusion_matrix(y, p.argmax(axis=1), labels=labels)
ece = MulticlassCalibrationError(num_classes=z.shape[1], n_bins=15, norm="l1")
ece.update(torch.from_numpy(p), torch.from_numpy(y))
ece.compute()
print(time.perf_counter() - imported, imported - started)
"""


def write_data(folder: Path, rows: int, classes: int, seed: int = 0) -> tuple[Path, Path]:
    """``z.npy`` (rows, classes) float32 and ``y.npy`` (rows,) int64, written in blocks."""
    z_path = folder / f"z-{rows}x{classes}.npy"
    y_path = folder / f"y-{rows}x{classes}.npy"
    if z_path.exists() and y_path.exists():
        return z_path, y_path
    rng = np.random.default_rng(seed)
    z = np.lib.format.open_memmap(z_path, mode="w+", dtype=np.float32, shape=(rows, classes))
    y = np.lib.format.open_memmap(y_path, mode="w+", dtype=np.int64, shape=(rows,))
    step = max(1, 4_000_000 // classes)
    for start in range(0, rows, step):
        n = min(step, rows - start)
        labels = rng.integers(0, classes, size=n)
        block = rng.normal(scale=2.0, size=(n, classes)).astype(np.float32)
        block[np.arange(n), labels] += 3.0
        z[start : start + n], y[start : start + n] = block, labels
    z.flush()
    y.flush()
    del z, y
    return z_path, y_path


def run_child(argv: list[str]) -> tuple[float, float, str]:
    """(wall seconds, peak RSS MB, stdout) of ``argv`` in a fresh process (its own rusage)."""
    started = time.perf_counter()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: stdout into the pipe, then exec
        os.close(read)
        os.dup2(write, 1)
        os.execvp(argv[0], argv)
    os.close(write)
    with os.fdopen(read) as pipe:
        stdout = pipe.read()
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(argv)} exited with {os.waitstatus_to_exitcode(status)}")
    return wall, usage.ru_maxrss / 1024, stdout  # ru_maxrss: KiB on Linux


def evaluate_once(z: Path, y: Path) -> dict[str, float]:
    argv = [
        sys.executable,
        "-m",
        "logloss",
        "evaluate",
        "--predictions",
        str(z),
        "--labels",
        str(y),
        "--json",
    ]
    wall, rss, stdout = run_child(argv)
    payload = json.loads(stdout)
    return {
        "wall": wall,
        "rss_mb": rss,
        "in_process": payload["timings"]["total"],
        "loss": payload["loss"],
    }


def floor_once(z: Path) -> dict[str, float]:
    wall, rss, stdout = run_child([sys.executable, "-c", FLOOR, str(z)])
    return {"wall": wall, "rss_mb": rss, "in_process": float(stdout.strip())}


def baseline_once(z: Path, y: Path, rows: int) -> dict[str, float]:
    wall, rss, stdout = run_child([sys.executable, "-c", BASELINE, str(z), str(y), str(rows)])
    compute, imports = (float(v) for v in stdout.split())
    return {"wall": wall, "rss_mb": rss, "in_process": compute, "imports": imports}


def median(runs: list[dict[str, float]], key: str) -> float:
    return float(statistics.median(r[key] for r in runs))


def measure(folder: Path, rows: int, classes: int, repeats: int) -> dict[str, object]:
    """Every measurement of one size, round-robin over ``repeats`` rounds."""
    z, y = write_data(folder, rows, classes)
    base_rows = min(rows, BASELINE_ROWS) if classes > 100 else rows
    zb, yb = (z, y) if base_rows == rows else write_data(folder, base_rows, classes)
    runs: dict[str, list[dict[str, float]]] = {
        "evaluate": [],
        "floor": [],
        "baseline": [],
        "evaluate_baseline_rows": [],
    }
    for _ in range(repeats):
        runs["evaluate"].append(evaluate_once(z, y))
        runs["floor"].append(floor_once(z))
        runs["baseline"].append(baseline_once(zb, yb, base_rows))
        if base_rows != rows:
            runs["evaluate_baseline_rows"].append(evaluate_once(zb, yb))
    same = runs["evaluate_baseline_rows"] or runs["evaluate"]
    return {
        "rows": rows,
        "classes": classes,
        "file_mb": z.stat().st_size / 2**20,
        "baseline_rows": base_rows,
        "evaluate_s": median(runs["evaluate"], "in_process"),
        "evaluate_command_s": median(runs["evaluate"], "wall"),
        "evaluate_rss_mb": median(runs["evaluate"], "rss_mb"),
        "floor_s": median(runs["floor"], "in_process"),
        "baseline_s": median(runs["baseline"], "in_process"),
        "baseline_rss_mb": median(runs["baseline"], "rss_mb"),
        "evaluate_on_baseline_rows_s": median(same, "in_process"),
        "runs": runs,
    }


def summarize(sizes: list[dict[str, object]], quick: bool) -> dict[str, object]:
    """The three goals, from the measured sizes."""
    tens = sorted((s for s in sizes if s["classes"] == 10), key=lambda s: s["rows"])
    rss_growth = tens[-1]["evaluate_rss_mb"] - tens[0]["evaluate_rss_mb"]
    speedups = {
        f"{s['baseline_rows']}x{s['classes']}": s["baseline_s"] / s["evaluate_on_baseline_rows_s"]
        for s in sizes
    }
    floors = {f"{s['rows']}x{s['classes']}": s["evaluate_s"] / s["floor_s"] for s in sizes}
    return {
        "rss_growth_mb": rss_growth,
        "rss_goal_met": rss_growth <= RSS_GOAL_MB,
        "speedup": speedups,
        "speedup_goal_met": min(speedups.values()) >= SPEEDUP_GOAL,
        "floor_ratio": floors,
        "floor_goal_met": max(floors.values()) <= FLOOR_GOAL,
        "quick": quick,
    }


def markdown(sizes: list[dict[str, object]], goals: dict[str, object], machine: str) -> str:
    lines = [
        f"`logloss evaluate --predictions` on float32 logits (.npy), {machine}; medians of "
        "fresh processes (`benchmarks/bench_predictions.py"
        f"{' --quick' if goals['quick'] else ''}`).",
        "",
        "| rows x classes | file MB | evaluate s | command s | peak RSS MB | floor s | "
        "evaluate / floor | baseline rows | scikit-learn + torchmetrics s | speed-up |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in sizes:
        key = f"{s['baseline_rows']}x{s['classes']}"
        lines.append(
            f"| {s['rows']:,} x {s['classes']} | {s['file_mb']:.0f} | {s['evaluate_s']:.2f} | "
            f"{s['evaluate_command_s']:.2f} | {s['evaluate_rss_mb']:.0f} | {s['floor_s']:.2f} | "
            f"{s['evaluate_s'] / s['floor_s']:.2f}x | {s['baseline_rows']:,} | "
            f"{s['baseline_s']:.2f} | {goals['speedup'][key]:.1f}x |"
        )
    verdict = {True: "met", False: "NOT met"}
    lines += [
        "",
        f"- Peak RSS grows by {goals['rss_growth_mb']:.0f} MB from the smallest to the largest "
        f"10-class file (goal: at most {RSS_GOAL_MB:.0f} MB): {verdict[goals['rss_goal_met']]}.",
        f"- Speed-up over scikit-learn + torchmetrics on the same rows: at least "
        f"{min(goals['speedup'].values()):.1f}x (goal: {SPEEDUP_GOAL:.0f}x): "
        f"{verdict[goals['speedup_goal_met']]}.",
        f"- `evaluate` / floor (one memory-mapped pass + logsumexp): at most "
        f"{max(goals['floor_ratio'].values()):.2f}x (goal: {FLOOR_GOAL:.0f}x): "
        f"{verdict[goals['floor_goal_met']]}.",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, to check the script")
    parser.add_argument(
        "--work",
        type=Path,
        default=None,
        help="folder for the data files (default: a temporary folder, removed at the end)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="rounds (default: 3)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="logloss-bench-") as temporary:
        folder = args.work or Path(temporary)
        folder.mkdir(parents=True, exist_ok=True)
        sizes = [
            measure(folder, rows, classes, args.repeats)
            for rows, classes in (QUICK if args.quick else FULL)
        ]
    goals = summarize(sizes, args.quick)
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
    name = "predictions-quick" if args.quick else "predictions"
    payload = {
        "sizes": sizes,
        "goals": goals,
        "machine": machine,
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    write_text_atomic(RESULTS / f"{name}.json", json.dumps(payload, indent=2) + "\n")
    write_text_atomic(RESULTS / f"{name}.md", markdown(sizes, goals, machine))
    print(markdown(sizes, goals, machine))
    return 0


if __name__ == "__main__":
    sys.exit(main())
