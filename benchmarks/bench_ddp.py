"""Several processes on one machine: what DistributedDataParallel (gloo) costs, and what it gains.

Run::

    .venv/bin/python benchmarks/bench_ddp.py [--quick] [--repeats 3] [--data-dir DIR]
    .venv/bin/python benchmarks/bench_ddp.py --gpu-check

For the default network (784-256-256-10) and ``--hidden 1024,1024``, the whole ``logloss train``
command (fresh processes, ``--json``) is run as (a) one process using every core (2 threads on a
2-core machine) and (b) ``torchrun --standalone --nproc-per-node 2``, two ranks of one thread
each (the default share: cores / processes), round-robin ``--repeats`` times; the medians of
the training time (the epochs' own time: start-up, data, evaluation and checkpoints excluded)
give the ratio (b) / (a).  Goal (issue 16): within 1.3x for the default network, below 1x for
1024,1024.  Then torchrun starts this script's ``--all-reduce-worker`` on two ranks, which times
``all_reduce`` of as many float32 numbers as each network has parameters: what DDP sends every
step (one bucket), compared with the time of a 2-rank step.

Results: ``benchmarks/results/ddp.json`` and ``ddp.md`` (``--quick``, one short epoch and one
repeat to check the script: ``ddp-quick.*``), written atomically.

``--gpu-check``: one short run (the bundled digits, nothing to fetch) on CUDA under torchrun with
the NCCL backend, world size 1; prints one line and exits non-zero when it fails (for the GPU
check script).
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist

from logloss._atomic import write_text_atomic
from logloss._json import dumps
from logloss.training.devices import usable_cores

RESULTS = Path(__file__).resolve().parent / "results"
NETWORKS = {"default": (256, 256), "1024,1024": (1024, 1024)}
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
LOGLOSS = ["-m", "logloss", "train"]
COMMAND_LIMIT = 1800  # seconds for one training command


def parameters(hidden: tuple[int, ...], inputs: int = 784, classes: int = 10) -> int:
    """Weights and biases of the dense network inputs-hidden...-classes.

    >>> parameters((256, 256))
    269322
    """
    widths = [inputs, *hidden, classes]
    return sum(a * b + b for a, b in itertools.pairwise(widths))


def train_command(ranks: int, hidden: tuple[int, ...], options: list[str], out: Path) -> list:
    """``logloss train`` in one process (ranks=0) or under torchrun with ``ranks`` processes."""
    argv = [*LOGLOSS, "--hidden", ",".join(map(str, hidden)), *options, "--out", str(out)]
    if ranks == 0:
        return [sys.executable, *argv, "--json"]
    return [*TORCHRUN, "--nproc-per-node", str(ranks), *argv, "--json"]


def run_train(command: list[str], out: Path) -> dict:
    """Run one ``logloss train --json`` command writing ``out``: its training time, optimiser
    steps, samples/s, test accuracy, wall time, and the load average before it."""
    load = os.getloadavg()[0]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=COMMAND_LIMIT)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(command)}\n{done.stderr[-3000:]}")
    summary = json.loads(done.stdout)
    train_size = json.loads((out / "checkpoint.json").read_text())["sizes"]["train"]
    batch = summary["config"]["batch_size"]
    return {
        "train_seconds": summary["train_seconds"],
        "steps": len(summary["epochs"]) * -(-train_size // batch),
        "samples_per_second": statistics.median(e["samples_per_second"] for e in summary["epochs"]),
        "test_accuracy": summary["test"]["accuracy"],
        "wall_seconds": wall,
        "loadavg_before": load,
    }


def bench_network(hidden: tuple[int, ...], options: list[str], repeats: int) -> dict:
    """One process vs two ranks, round-robin, medians of the training time."""
    runs: dict[str, list[dict]] = {"one": [], "two": []}
    with tempfile.TemporaryDirectory() as folder:
        for repeat in range(repeats):
            for name, ranks in (("one", 0), ("two", 2)):
                out = Path(folder) / f"{name}-{repeat}"
                runs[name].append(run_train(train_command(ranks, hidden, options, out), out))
                print(f"  {name}: {runs[name][-1]['train_seconds']:.2f} s", flush=True)
    median = {
        name: statistics.median(r["train_seconds"] for r in results)
        for name, results in runs.items()
    }
    return {
        "hidden": list(hidden),
        "parameters": parameters(hidden),
        "runs": runs,
        "median_train_seconds": median,
        "ratio": median["two"] / median["one"],
    }


def all_reduce_worker(sizes: list[int], repeats: int) -> None:
    """Under torchrun: time ``all_reduce`` of float32 tensors of ``sizes``; rank 0 prints JSON."""
    torch.set_num_threads(max(1, usable_cores() // 2))  # as each of two ranks trains
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=120))
    timings = {}
    for size in sizes:
        tensor = torch.ones(size)
        for _ in range(5):  # warm-up: connections, buffers
            dist.all_reduce(tensor)
        seconds = []
        for _ in range(repeats):
            dist.barrier()
            started = time.perf_counter()
            dist.all_reduce(tensor)
            seconds.append(time.perf_counter() - started)
        timings[str(size)] = statistics.median(seconds)
    if dist.get_rank() == 0:
        print(json.dumps(timings))
    dist.destroy_process_group()


def bench_all_reduce(sizes: list[int], repeats: int) -> dict[str, float]:
    """Median seconds of one all_reduce between two ranks, per tensor size."""
    command = [*TORCHRUN, "--nproc-per-node", "2", __file__, "--all-reduce-worker"]
    command += ["--sizes", ",".join(map(str, sizes)), "--repeats", str(repeats)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _threads(count: int) -> str:
    return f"{count} thread{'s' if count > 1 else ''}"


def markdown(report: dict) -> str:
    rows = [
        f"| network | 1 process x {_threads(report['cores'])} | 2 processes x "
        f"{_threads(max(1, report['cores'] // 2))} (gloo) | ratio | "
        "all-reduce of the gradients, per step |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, result in report["networks"].items():
        one, two = result["median_train_seconds"]["one"], result["median_train_seconds"]["two"]
        rate = {
            k: statistics.median(r["samples_per_second"] for r in v)
            for k, v in result["runs"].items()
        }
        step = result["two_rank_step_ms"]
        rows.append(
            f"| {name} ({result['parameters']:,} parameters) | {one:.2f} s "
            f"({rate['one']:,.0f} samples/s) | {two:.2f} s ({rate['two']:,.0f} samples/s) | "
            f"**{result['ratio']:.2f}x** | {result['all_reduce_ms']:.2f} ms of a {step:.2f} ms "
            "step |"
        )
    loads = [
        run["loadavg_before"]
        for result in report["networks"].values()
        for runs in result["runs"].values()
        for run in runs
    ]
    rows += [
        "",
        f"Training time of `logloss train {report['options']}` (the epochs only: start-up, data, "
        f"evaluation and checkpoints excluded), median of {report['repeats']} round-robin runs; "
        f"ratio = 2 processes / 1 process (goal: within 1.3x for the default network, below 1x "
        f"for 1024,1024). {report['machine']}, {report['cores']} cores, torch {report['torch']}, "
        f"load average {min(loads):.2f} to {max(loads):.2f} before the runs, {report['date']}.",
    ]
    return "\n".join(rows) + "\n"


def benchmark(args: argparse.Namespace) -> int:
    options = ["--epochs", "1", "--validation-size", "50000"] if args.quick else ["--epochs", "2"]
    options += ["--device", "cpu"] + (["--data-dir", args.data_dir] if args.data_dir else [])
    repeats = 1 if args.quick else args.repeats
    networks = {}
    for name, hidden in NETWORKS.items():
        print(f"{name}: 1 process vs 2 ranks", flush=True)
        networks[name] = bench_network(hidden, options, repeats)
    sizes = [result["parameters"] for result in networks.values()]
    reduced = bench_all_reduce(sizes, 20 if args.quick else 200)
    for result in networks.values():
        steps = result["runs"]["two"][0]["steps"]
        result["two_rank_step_ms"] = result["median_train_seconds"]["two"] / steps * 1e3
        result["all_reduce_ms"] = reduced[str(result["parameters"])] * 1e3
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "cores": usable_cores(),
        "torch": torch.__version__,
        "options": " ".join(o for o in options if o != args.data_dir and o != "--data-dir"),
        "repeats": repeats,
        "quick": args.quick,
        "loadavg": list(os.getloadavg()),
        "networks": networks,
        "note": "the CPU may be shared with other work: compare the ratios of one run",
    }
    stem = "ddp-quick" if args.quick else "ddp"
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_text_atomic(RESULTS / f"{stem}.json", dumps(report) + "\n")
    write_text_atomic(RESULTS / f"{stem}.md", markdown(report))
    print(markdown(report))
    return 0


def gpu_check() -> int:
    """A short run on CUDA under torchrun, NCCL, world size 1, on the bundled digits (no data
    to fetch): one line, exit status 1 when it fails."""
    if not torch.cuda.is_available():
        print("ddp gpu check: FAILED: no CUDA device")
        return 1
    options = ["--dataset", "digits", "--epochs", "5", "--batch-size", "64", "--device", "cuda"]
    options += ["--backend", "nccl", "--dist-timeout", "120"]
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "run"
        command = train_command(1, NETWORKS["default"], options, out)
        started = time.perf_counter()
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        except subprocess.TimeoutExpired:
            print("ddp gpu check: FAILED: no answer within 600 s")
            return 1
        wall = time.perf_counter() - started
        if done.returncode != 0 or not (out / "checkpoint.json").is_file():
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            print(f"ddp gpu check: FAILED (exit {done.returncode}): {last}")
            return 1
        summary = json.loads(done.stdout)
        processes = json.loads((out / "checkpoint.json").read_text())["processes"]
    accuracy = summary["test"]["accuracy"]
    ok = (
        summary["status"] == "finished"
        and accuracy > 0.85  # chance is 0.1; five epochs on one process reach about 0.91
        and processes["backend"] == "nccl"
        and summary["device"].startswith("cuda")
    )
    print(
        f"ddp gpu check: {'ok' if ok else 'FAILED'}: {processes['backend']}, world size "
        f"{processes['world_size']}, {summary['device']} ({torch.cuda.get_device_name(0)}), "
        f"digits, 5 epochs in {summary['train_seconds']:.1f} s of training ({wall:.1f} s in "
        f"all), test accuracy {accuracy:.2%}"
    )
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None, help="folder holding mnist/ (default: search)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each case; median (3)")
    parser.add_argument("--quick", action="store_true", help="one short epoch, one repeat")
    parser.add_argument("--gpu-check", action="store_true", help="one NCCL run on CUDA")
    parser.add_argument("--all-reduce-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--sizes", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.all_reduce_worker:
        all_reduce_worker([int(s) for s in args.sizes.split(",")], args.repeats)
        return 0
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return gpu_check() if args.gpu_check else benchmark(args)


if __name__ == "__main__":
    sys.exit(main())
