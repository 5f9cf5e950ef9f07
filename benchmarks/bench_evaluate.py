"""Benchmark: ``logloss evaluate`` (all diagnostics) and ``logloss report`` on MNIST test.

Run: ``.venv/bin/python benchmarks/bench_evaluate.py [--checkpoint DIR] [--data-dir DIR]
[--repeats N]``.  Writes ``benchmarks/results/evaluate.json`` and ``evaluate.md`` (atomically).

Targets (issue 5): evaluating the 10k test images with all diagnostics under 2 s for the default
model, the report under 10 s.  Without ``--checkpoint`` the default model (784-256-256-10, the
trainer's defaults) is trained for one epoch: evaluation time depends on the architecture and the
data, not on how long the weights were trained.

Measured in one process, round-robin, medians of N runs (the machine is shared):

- ``evaluate_checkpoint``: load the checkpoint, read the test split and the validation split,
  one forward pass over each, all diagnostics (what ``logloss evaluate`` computes);
- its stages: ``forward`` (the test split's logits), ``diagnostics`` (:func:`evaluate_logits`
  on the test logits with temperature scaling on the validation logits);
- ``accuracy + loss only``: ``Checkpoint.evaluate`` (the trainer's minimal evaluation), the
  floor that all the extra diagnostics are compared with;
- ``scikit-learn``: ``log_loss`` + ``brier_score_loss`` + ``confusion_matrix`` on the same
  probabilities, for comparison with our one-pass diagnostics;
- ``build_report``: the whole HTML page (12 figures), in process.

and once each, as a user runs them, the whole commands in a fresh process (Python start-up and
imports included): ``logloss evaluate --json`` and ``logloss report``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from logloss._atomic import atomic_write
from logloss.insight.diagnostics import evaluate_logits
from logloss.insight.report import build_report
from logloss.insight.run_evaluation import evaluate_checkpoint
from logloss.training.checkpoint import load_checkpoint
from logloss.training.splits import run_arrays

RESULTS = Path(__file__).resolve().parent / "results"
EVALUATE_TARGET_S = 2.0
REPORT_TARGET_S = 10.0


def interleaved(methods: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Run the methods round-robin (order rotated each round) so they share the machine's load
    alike; each method's times in seconds (after one warm-up call each)."""
    for function in methods.values():
        function()
    names = list(methods)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(repeats):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            methods[name]()
            times[name].append(time.perf_counter() - start)
    return times


def default_checkpoint(data_dir: str | None, folder: Path) -> Path:
    """Train the default architecture for one epoch into ``folder``."""
    from logloss.training import TrainConfig, train

    config = TrainConfig(epochs=1, device="cpu")
    train(config, out_dir=folder, data_dir=data_dir)
    return folder


def timed_command(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True, timeout=600)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=None, help="run folder (default: train)")
    parser.add_argument("--data-dir", default=None, help="data folder holding mnist/")
    parser.add_argument("--repeats", type=int, default=7, help="rounds for the medians (default 7)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        folder = args.checkpoint or default_checkpoint(args.data_dir, Path(scratch) / "run")
        checkpoint = load_checkpoint(folder)
        architecture = checkpoint.model.architecture
        arrays = run_arrays(checkpoint.config, ("test", "validation"), data_dir=args.data_dir)
        (images, labels), (val_images, val_labels) = arrays["test"], arrays["validation"]
        target, val_target = labels.astype(np.int64), val_labels.astype(np.int64)
        logits, val_logits = checkpoint.logits(images), checkpoint.logits(val_images)
        probabilities = torch.softmax(torch.from_numpy(logits).double(), dim=1).numpy()

        def sklearn_metrics() -> None:
            from sklearn import metrics

            classes = list(range(logits.shape[1]))
            metrics.log_loss(target, probabilities, labels=classes)
            metrics.brier_score_loss(target, probabilities, labels=classes, scale_by_half=False)
            metrics.confusion_matrix(target, probabilities.argmax(axis=1), labels=classes)

        methods: dict[str, Callable[[], object]] = {
            "evaluate_checkpoint (all diagnostics)": lambda: evaluate_checkpoint(
                folder, data_dir=args.data_dir
            ),
            "forward pass, 10k test images": lambda: checkpoint.logits(images),
            "diagnostics from the logits": lambda: evaluate_logits(
                logits, target, validation_logits=val_logits, validation_target=val_target
            ),
            "accuracy + loss only (Checkpoint.evaluate)": lambda: checkpoint.evaluate(
                images, labels
            ),
            "scikit-learn log_loss + brier + confusion": sklearn_metrics,
            "build_report (in process)": lambda: build_report(folder, data_dir=args.data_dir),
        }
        times = interleaved(methods, args.repeats)
        stages = evaluate_checkpoint(folder, data_dir=args.data_dir).timings

        data_flag = ["--data-dir", args.data_dir] if args.data_dir else []
        command = [sys.executable, "-m", "logloss"]
        evaluate_command = timed_command(
            [*command, "evaluate", "--checkpoint", str(folder), "--json", *data_flag]
        )
        report_command = timed_command(
            [
                *command,
                "report",
                "--checkpoint",
                str(folder),
                "--out",
                str(Path(scratch) / "report.html"),
                *data_flag,
            ]
        )

    medians = {name: statistics.median(values) for name, values in times.items()}
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
        },
        "model": {
            "architecture": f"{architecture.input_size}-"
            + "-".join(map(str, architecture.hidden))
            + f"-{architecture.num_classes}",
            "checkpoint": str(args.checkpoint) if args.checkpoint else "default, 1 epoch",
        },
        "repeats": args.repeats,
        "median_seconds": medians,
        "all_seconds": times,
        "stages_of_one_evaluate_checkpoint": stages,
        "commands_seconds": {
            "logloss evaluate --json": evaluate_command,
            "logloss report": report_command,
        },
        "ratios": {
            "diagnostics / accuracy+loss only": medians["diagnostics from the logits"]
            / medians["accuracy + loss only (Checkpoint.evaluate)"],
            "diagnostics / scikit-learn three metrics": medians["diagnostics from the logits"]
            / medians["scikit-learn log_loss + brier + confusion"],
        },
        "targets": {
            "evaluate_s": EVALUATE_TARGET_S,
            "evaluate_met": medians["evaluate_checkpoint (all diagnostics)"] < EVALUATE_TARGET_S,
            "report_s": REPORT_TARGET_S,
            "report_met": medians["build_report (in process)"] < REPORT_TARGET_S,
        },
    }
    rows = [f"| {name} | {value:.3f} |" for name, value in medians.items()]
    rows += [
        f"| command: `{name}` (fresh process) | {value:.3f} |"
        for name, value in (result["commands_seconds"].items())
    ]
    table = "\n".join(
        [
            f"Model {result['model']['architecture']}, MNIST test (10,000 images), "
            f"{platform.machine()} CPU x{os.cpu_count()}, torch {torch.__version__}; "
            f"median of {args.repeats} interleaved runs; {result['date']}.",
            "",
            "| what | seconds |",
            "|---|---:|",
            *rows,
            "",
        ]
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    with atomic_write(RESULTS / "evaluate.json") as file:
        file.write((json.dumps(result, indent=2) + "\n").encode())
    with atomic_write(RESULTS / "evaluate.md") as file:
        file.write(table.encode())
    print(table)
    print(json.dumps(result["ratios"], indent=2))
    print(json.dumps(result["targets"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
