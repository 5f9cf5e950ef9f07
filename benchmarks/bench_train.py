"""Time to 98% MNIST test accuracy: the PyTorch-tutorial loop vs ``logloss train``, over seeds.

One command, one process, one machine::

    .venv/bin/python benchmarks/bench_train.py [--seeds 0 1 2] [--skip-best] [--cap-epochs 20]
        [--command-repeats 3] [--quick]

(a) the loop a PyTorch tutorial teaches: a DataLoader (batch 64, shuffle) over a TensorDataset
    of the 60,000 training images as float tensors in [0, 1] (what ``ToTensor`` gives), Adam at
    lr 1e-3, the same 784-256-256-10 network, the test set evaluated after every epoch, until
    98.0% test accuracy or ``--cap-epochs``;
(b) ``logloss.training.train`` with the default options (in this process, data loading,
    validation, test evaluation and checkpoints included);
both once per seed of ``--seeds`` (at least 3): a noisy loop's epoch of crossing 98% moves with
the seed (5 to 12 epochs for the tutorial loop), so the table gives the median and the range of
epochs and of time to 98%, the range of the per-seed speed-ups, and the ratio of training
samples per second, which does not depend on when 98% is crossed.  Also (c) the whole
``logloss train`` command in a fresh process (start-up included), ``--command-repeats`` times
(median kept, with the load average before and after, since the CPU may be shared), and (d) the
``best`` preset (skip with ``--skip-best``: it takes minutes).  The CPU is named in the results.

``--quick`` checks the script in a minute: one epoch of each loop per seed, one fresh command,
no best preset; it writes ``train-quick.json`` and ``train-quick.md`` instead.

Both loops start after a warm-up that imports what ``torch.optim`` imports on first use, so
neither pays it.  Results: ``benchmarks/results/train.json`` and ``train.md`` (a table quoted by
``docs/training.md``), written atomically.
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
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from logloss._atomic import write_text_atomic
from logloss.data import load_dataset
from logloss.training import TrainConfig, train

RESULTS = Path(__file__).resolve().parent / "results"
TARGET = 0.98


def tutorial_network() -> nn.Module:
    """The same network as logloss's default: 784-256-256-10, ReLU."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(784, 256),
        nn.ReLU(),
        nn.Linear(256, 256),
        nn.ReLU(),
        nn.Linear(256, 10),
    )


def run_tutorial(data_dir: str | None, cap_epochs: int, seed: int) -> dict:
    """The tutorial's loop, timed from building the dataset to reaching the target."""
    torch.manual_seed(seed)
    started = time.perf_counter()
    images, labels = load_dataset("mnist", "train", data_dir=data_dir)
    test_images, test_labels = load_dataset("mnist", "test", data_dir=data_dir)
    train_set = TensorDataset(
        torch.from_numpy(images).float().div(255).unsqueeze(1),
        torch.from_numpy(labels.astype(np.int64)),
    )
    test_set = TensorDataset(
        torch.from_numpy(test_images).float().div(255).unsqueeze(1),
        torch.from_numpy(test_labels.astype(np.int64)),
    )
    train_loader = DataLoader(train_set, batch_size=64, shuffle=True)
    test_loader = DataLoader(test_set, batch_size=1000)
    model = tutorial_network()
    loss_fn = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    epochs, accuracy, train_seconds = [], 0.0, 0.0
    for epoch in range(1, cap_epochs + 1):
        model.train()
        epoch_started = time.perf_counter()
        for x, y in train_loader:
            loss = loss_fn(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        epoch_seconds = time.perf_counter() - epoch_started
        train_seconds += epoch_seconds
        model.eval()
        correct = 0
        with torch.no_grad():
            for x, y in test_loader:
                correct += (model(x).argmax(1) == y).sum().item()
        accuracy = correct / len(test_set)
        epochs.append(
            {
                "epoch": epoch,
                "test_accuracy": accuracy,
                "seconds": epoch_seconds,
                "wall": time.perf_counter() - started,
            }
        )
        print(f"  tutorial epoch {epoch}: test accuracy {accuracy:.2%}", flush=True)
        if accuracy >= TARGET:
            break
    return {
        "reached": accuracy >= TARGET,
        "wall_seconds": time.perf_counter() - started,
        "epochs": len(epochs),
        "test_accuracy": accuracy,
        "samples_per_second": len(train_set) * len(epochs) / train_seconds,
        "per_epoch": epochs,
    }


def run_logloss(config: TrainConfig, data_dir: str | None) -> dict:
    """``train(config)`` timed as a whole: data, training, validation, test, checkpoints."""
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        history = train(config, out_dir=Path(folder) / "run", data_dir=data_dir)
        wall = time.perf_counter() - started
    return {
        "reached": history.test["accuracy"] >= TARGET,
        "wall_seconds": wall,
        "train_seconds": history.elapsed,
        "epochs": len(history.records),
        "test_accuracy": history.test["accuracy"],
        "best_epoch_test_accuracy": history.test["best_accuracy"],
        "samples_per_second": statistics.median(r.samples_per_second for r in history.records),
        "per_epoch": [
            {"epoch": r.epoch, "val_accuracy": r.val_accuracy, "elapsed": r.elapsed}
            for r in history.records
        ],
    }


def run_command_once(data_dir: str | None, epochs: int) -> dict:
    """The whole ``logloss train`` command in a fresh process, start-up included."""
    with tempfile.TemporaryDirectory() as folder:
        command = [sys.executable, "-m", "logloss", "train", "--out", f"{folder}/run", "--json"]
        command += ["--epochs", str(epochs)]
        if data_dir:
            command += ["--data-dir", data_dir]
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=1800)
        wall = time.perf_counter() - started
    summary = json.loads(done.stdout)
    return {"wall_seconds": wall, "test_accuracy": summary["test"]["accuracy"]}


def run_command(data_dir: str | None, repeats: int, epochs: int) -> dict:
    """``repeats`` fresh-process runs of ``logloss train``: the median one, all walls, the load.

    ``os.getloadavg()`` (1, 5 and 15-minute load averages) is recorded before the first and
    after the last run: a load above the core count means the timings were shared.
    """
    load_before = list(os.getloadavg())
    runs = [run_command_once(data_dir, epochs) for _ in range(repeats)]
    load_after = list(os.getloadavg())
    median = sorted(runs, key=lambda r: r["wall_seconds"])[len(runs) // 2]
    return {
        **median,
        "repeats": repeats,
        "runs_wall_seconds": [r["wall_seconds"] for r in runs],
        "median_wall_seconds": statistics.median(r["wall_seconds"] for r in runs),
        "loadavg_before": load_before,
        "loadavg_after": load_after,
        "cpu_count": os.cpu_count(),
    }


def warm_up() -> None:
    """Import what torch.optim imports on its first step (torch._dynamo), outside the timings."""
    model = nn.Linear(2, 2)
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.zeros(1, 2)).sum().backward()
    optimizer.step()


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), else what ``platform`` says."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def spread(values: list[float]) -> dict:
    """Median, minimum, maximum and the values themselves."""
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "values": values,
    }


def summarize(tutorial: list[dict], fast: list[dict]) -> dict:
    """Per-seed runs of both loops -> epochs, time to 98%, speed-ups and samples/s ratio."""

    def to_target(runs: list[dict], key: str) -> dict | None:
        reached = [run[key] for run in runs if run["reached"]]
        return spread(reached) if reached else None

    speedups = [
        t["wall_seconds"] / f["wall_seconds"]
        for t, f in zip(tutorial, fast, strict=True)
        if t["reached"] and f["reached"]
    ]
    tutorial_rate = statistics.median(t["samples_per_second"] for t in tutorial)
    logloss_rate = statistics.median(f["samples_per_second"] for f in fast)
    return {
        "seeds_reaching_target": {
            "tutorial": sum(t["reached"] for t in tutorial),
            "logloss": sum(f["reached"] for f in fast),
        },
        "tutorial_epochs": to_target(tutorial, "epochs"),
        "tutorial_seconds": to_target(tutorial, "wall_seconds"),
        "logloss_epochs": to_target(fast, "epochs"),
        "logloss_seconds": to_target(fast, "wall_seconds"),
        "speedup": spread(speedups) if speedups else None,
        "samples_per_second": {"tutorial": tutorial_rate, "logloss": logloss_rate},
        "samples_per_second_ratio": logloss_rate / tutorial_rate,
    }


def _range(values: dict | None, unit: str = "", digits: int = 1) -> str:
    """ "median (min-max)" of a :func:`spread`, e.g. "24.7 s (12.3-30.1)"."""
    if values is None:
        return "not reached"
    median, low, high = (f"{values[k]:.{digits}f}" for k in ("median", "min", "max"))
    return f"{median}{unit} ({low}-{high})"


def markdown(results: dict) -> str:
    summary = results["summary"]
    seeds = len(results["seeds"])
    rate = summary["samples_per_second"]
    reached = summary["seeds_reaching_target"]
    rows = [
        f"| run (each over seeds {', '.join(map(str, results['seeds']))}) | epochs to 98.0% test, "
        "median (range) | wall time to 98.0%, median (range) | training samples/s (median) |",
        "|---|---:|---:|---:|",
        f"| PyTorch tutorial loop (DataLoader, batch 64, Adam 1e-3); reached 98.0% with "
        f"{reached['tutorial']} of {seeds} seeds | {_range(summary['tutorial_epochs'], '', 0)} | "
        f"{_range(summary['tutorial_seconds'], ' s')} | {rate['tutorial']:,.0f} |",
        f"| `logloss train` (defaults; data, validation, checkpoints included); reached 98.0% "
        f"with {reached['logloss']} of {seeds} seeds | "
        f"{_range(summary['logloss_epochs'], '', 0)} | {_range(summary['logloss_seconds'], ' s')} "
        f"| {rate['logloss']:,.0f} |",
    ]
    command = results["command"]
    load = command["loadavg_before"][0]
    rows.append(
        f"| the whole `logloss train` command (fresh process, start-up included, seed "
        f"{results['seeds'][0]}; median of {command['repeats']}, load average {load:.2f}) | "
        f"{results['logloss_runs'][0]['epochs']} | {command['median_wall_seconds']:.1f} s | |"
    )
    if "best" in results:
        best = results["best"]
        rows.append(
            f"| `logloss train --preset best` (to its end, not to 98%; seed {results['seeds'][0]}"
            f"{'; measured ' + best['measured'] if 'measured' in best else ''}) "
            f"| {best['epochs']} (test accuracy {best['test_accuracy']:.2%}) | "
            f"{best['wall_seconds']:.0f} s | {best['samples_per_second']:,.0f} |"
        )
    speedup = summary["speedup"]
    faster = (
        f"logloss reached 98.0% **{speedup['min']:.1f}x to {speedup['max']:.1f}x** faster than "
        f"the tutorial loop (median {speedup['median']:.1f}x over {len(speedup['values'])} seeds)"
        if speedup
        else "98.0% was not reached by both loops with any seed (a --quick run)"
    )
    rows += [
        "",
        f"{faster}; it trains {summary['samples_per_second_ratio']:.1f}x as many samples per "
        f"second ({results['cpu']}, {results['cpu_count']} cores, torch {results['torch']}, "
        f"{results['threads']} threads, {results['date']}).",
    ]
    return "\n".join(rows) + "\n"


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None, help="folder holding mnist/ (default: search)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="(0 1 2)")
    parser.add_argument("--cap-epochs", type=int, default=20, help="tutorial epoch cap (20)")
    parser.add_argument(
        "--command-repeats",
        type=int,
        default=3,
        help="fresh-process `logloss train` runs; median kept (3)",
    )
    parser.add_argument("--skip-best", action="store_true", help="skip the best preset")
    parser.add_argument(
        "--quick", action="store_true", help="one epoch per loop and seed; train-quick.*"
    )
    args = parser.parse_args(argv)
    if len(set(args.seeds)) < 3:
        parser.error("--seeds needs at least 3 different seeds: one seed's 98% epoch is noise")
    if args.command_repeats < 1 or args.cap_epochs < 1:
        parser.error("--command-repeats and --cap-epochs must be at least 1")
    if args.quick:
        args.cap_epochs, args.command_repeats, args.skip_best = 1, 1, True
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    warm_up()
    epochs = 1 if args.quick else TrainConfig().epochs
    print(f"logloss train (whole command, fresh process) x{args.command_repeats} ...", flush=True)
    command = run_command(args.data_dir, args.command_repeats, epochs)
    print(f"  median {command['median_wall_seconds']:.1f} s", flush=True)
    tutorial, fast = [], []
    for seed in args.seeds:
        print(f"seed {seed}: PyTorch tutorial loop ...", flush=True)
        tutorial.append(run_tutorial(args.data_dir, args.cap_epochs, seed))
        print(f"seed {seed}: logloss train (in process) ...", flush=True)
        fast.append(run_logloss(TrainConfig(seed=seed, epochs=epochs), args.data_dir))
        print(f"  {fast[-1]['wall_seconds']:.1f} s, test {fast[-1]['test_accuracy']:.2%}")

    results = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "loadavg": list(os.getloadavg()),  # 1, 5, 15 minutes, when the results were written
        "target_accuracy": TARGET,
        "seeds": args.seeds,
        "quick": args.quick,
        "tutorial_runs": tutorial,
        "logloss_runs": fast,
        "summary": summarize(tutorial, fast),
        "command": command,
        "note": "the CPU may be shared with other work: compare ratios from one run",
    }
    name = "train-quick" if args.quick else "train"
    if not args.skip_best:
        print("logloss train --preset best ...", flush=True)
        best = TrainConfig.preset("best", seed=args.seeds[0])
        results["best"] = run_logloss(best, args.data_dir)
    elif not args.quick and (RESULTS / "train.json").is_file():  # keep the last measured best
        previous = json.loads((RESULTS / "train.json").read_text())
        if "best" in previous:
            results["best"] = {**previous["best"], "measured": previous["date"]}

    table = markdown(results)
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_text_atomic(RESULTS / f"{name}.json", json.dumps(results, indent=2) + "\n")
    write_text_atomic(RESULTS / f"{name}.md", table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
