"""Several processes for real: ``python -m logloss train`` as torchrun starts it, gloo on 127.0.0.1.

Each test starts its ranks either with torchrun itself, or as torchrun would (the same command in
each process, with ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``... set), which lets a test stop or
kill one rank.  Every wait has a deadline (:data:`LIMIT`); every process a test started is ended
when it ends, with its children (torchrun's workers run in their own sessions); ports come from
the kernel (bound to port 0, then handed over).  ``GLOO_SOCKET_IFNAME=lo`` keeps the traffic on
the loopback interface.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import logloss
from logloss.cli import main
from logloss.training import TrainConfig, run_folder, train
from logloss.training.devices import threads_per_process

LIMIT = 120.0  # seconds any launched process may run before the test fails
SOURCE = str(Path(logloss.__file__).resolve().parents[1])  # the logloss under test
RANK_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR")
# MNIST with 55,001 of its 60,000 training images held out: 4,999 train, 20 steps of 256 an
# epoch, the last one of 135 samples split 68 + 67 over two ranks.
MNIST = {"hidden": (64,), "epochs": 2, "validation_size": 55_001, "device": "cpu"}
# scikit-learn's digits (offline, 8x8): 1,317 train, 21 steps of 64 an epoch (the last of 37).
DIGITS = {"dataset": "digits", "hidden": (32,), "batch_size": 64, "device": "cpu"}


def flags(options: dict) -> list[str]:
    """Command-line flags of ``logloss train`` for TrainConfig ``options``."""
    argv = []
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            argv.append(flag)
        else:
            argv += [flag, ",".join(map(str, value)) if isinstance(value, tuple) else str(value)]
    return argv


def free_port() -> int:
    """A port on 127.0.0.1 that the kernel reports free (bound to port 0, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def descendants(pid: int) -> list[int]:
    """The processes below ``pid`` (children, grandchildren...), from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


@dataclass
class Launched:
    """A started process, its output going to two files."""

    process: subprocess.Popen
    out: Path
    err: Path

    def wait(self, limit: float = LIMIT) -> int:
        try:
            return self.process.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{self.process.args} still running after {limit} s:\n{self.text()}")

    def wait_for(self, line_start: str, limit: float = LIMIT) -> None:
        """Wait until a line of its output starts with ``line_start``."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if any(line.startswith(line_start) for line in self.stdout().splitlines()):
                return
            if self.process.poll() is not None:
                pytest.fail(f"exited before printing {line_start!r}:\n{self.text()}")
            time.sleep(0.02)
        pytest.fail(f"no line {line_start!r} within {limit} s:\n{self.text()}")

    def stdout(self) -> str:
        return self.out.read_text(encoding="utf-8", errors="replace")

    def stderr(self) -> str:
        return self.err.read_text(encoding="utf-8", errors="replace")

    def text(self) -> str:
        return f"--- stdout\n{self.stdout()[-3000:]}\n--- stderr\n{self.stderr()[-3000:]}"


class Launcher:
    """Starts processes for one test, and ends those still running (with their children)."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.started = folder, []

    def start(self, argv: Sequence[str], env: dict[str, str]) -> Launched:
        name = f"process-{len(self.started)}"
        out, err = self.folder / f"{name}.out", self.folder / f"{name}.err"
        with out.open("wb") as stdout, err.open("wb") as stderr:
            process = subprocess.Popen(
                [sys.executable, *argv], env=env, stdout=stdout, stderr=stderr
            )
        self.started.append(Launched(process, out, err))
        return self.started[-1]

    def ranks(self, argv: Sequence[str], world_size: int = 2, **by_rank: list[str]) -> list:
        """``python -m logloss ARGV`` once per rank, with torchrun's variables set;
        ``by_rank={"rank1": [...]}`` adds flags to one rank's command."""
        port = free_port()
        launched = []
        for rank in range(world_size):
            variables = {
                "RANK": str(rank),
                "WORLD_SIZE": str(world_size),
                "LOCAL_RANK": str(rank),
                "LOCAL_WORLD_SIZE": str(world_size),
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(port),
            }
            extra = by_rank.get(f"rank{rank}", [])
            launched.append(self.start(["-m", "logloss", *argv, *extra], env(variables)))
        return launched

    def close(self) -> None:
        for launched in self.started:
            if launched.process.poll() is None:
                for pid in [*descendants(launched.process.pid), launched.process.pid]:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                launched.process.wait(timeout=30)


def env(variables: dict[str, str] | None = None) -> dict[str, str]:
    """This environment without torchrun's variables, plus ``variables``; the logloss under
    test first on the path; loopback only; output unbuffered (tests wait for lines)."""
    base = {k: v for k, v in os.environ.items() if k not in (*RANK_VARIABLES, "MASTER_PORT")}
    path = os.pathsep.join(p for p in (SOURCE, base.get("PYTHONPATH")) if p)
    return {
        **base,
        "PYTHONPATH": path,
        "GLOO_SOCKET_IFNAME": "lo",
        "PYTHONUNBUFFERED": "1",
        **(variables or {}),
    }


def running_with(text: str) -> list[int]:
    """The processes whose command line mentions ``text`` (a test's folder), from /proc."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text.encode() in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
        except OSError:
            continue
    return found


@pytest.fixture
def launcher(tmp_path):
    """A test's :class:`Launcher`; at the end no process may still run with the test's folder
    in its command line (torchrun's workers included): any left is killed, and the test fails."""
    started = Launcher(tmp_path)
    yield started
    started.close()
    left = running_with(str(tmp_path))
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert left == [], f"processes left running: {left}"


def torchrun_standalone(launcher: Launcher, argv: Sequence[str], processes: int = 2) -> Launched:
    command = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes)]
    return launcher.start([*command, "-m", "logloss", *argv], env())


def start_line(threads: int) -> str:
    """How the first line of a run of two processes says their threads."""
    plural = "s" if threads > 1 else ""
    return f"device: cpu ({threads} CPU thread{plural} in each of 2 processes, gloo)"


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / run_folder.METRICS_FILE).read_text().splitlines()]


def assert_same_weights(run: Path, reference: Path) -> None:
    got, expected = load_file(run / "last.safetensors"), load_file(reference / "last.safetensors")
    assert got.keys() == expected.keys()
    for name in expected:
        assert torch.equal(got[name], expected[name]), f"{run.name}: {name} differs"


# --- the same steps as one process --------------------------------------------------------------


def test_two_machines_compute_what_one_process_computes(launcher, tmp_path, data_dir, capsys):
    """Two torchrun invocations on 127.0.0.1 act as two machines of one process each."""
    port = free_port()
    argv = ["train", *flags(MNIST), "--data-dir", str(data_dir), "--out", str(tmp_path / "two")]
    nodes = [
        launcher.start(
            [
                *("-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(node)),
                *("--nproc-per-node", "1", "--rdzv-backend", "c10d", "--rdzv-id", "test"),
                *("--rdzv-endpoint", f"127.0.0.1:{port}", "-m", "logloss", *argv, "--json"),
            ],
            env(),
        )
        for node in (0, 1)
    ]
    assert [node.wait() for node in nodes] == [0, 0], [node.text() for node in nodes]
    outputs = [node.stdout() for node in nodes]
    assert sorted(bool(out.strip()) for out in outputs) == [False, True]  # rank 0's JSON only
    summary = json.loads(next(out for out in outputs if out.strip()))
    # One process on each "machine": each uses all the cores.
    assert start_line(threads_per_process(1)) in "".join(n.stderr() for n in nodes)

    one = train(TrainConfig(**MNIST), out_dir=tmp_path / "one", data_dir=data_dir)
    for two, alone in zip(summary["epochs"], one.records, strict=True):
        assert two["train_loss"] == pytest.approx(alone.train_loss, rel=1e-5)
        assert two["val_loss"] == pytest.approx(alone.val_loss, rel=1e-5)
        assert abs(two["val_accuracy"] - alone.val_accuracy) <= 2 / 55_001  # a sample or two
    assert abs(summary["test"]["accuracy"] - one.test["accuracy"]) <= 0.005

    # An ordinary run folder: evaluate reads it, and finds the accuracy training reported.
    metadata = run_folder.read_metadata(tmp_path / "two")
    assert metadata["processes"] == {"world_size": 2, "backend": "gloo", "rank_seeds": [0, 1]}
    capsys.readouterr()
    evaluate = ["evaluate", "--checkpoint", str(tmp_path / "two"), "--data-dir", str(data_dir)]
    assert main([*evaluate, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == summary["test"]["best_accuracy"]


# --- stopping, and resuming with the same or another number of processes -----------------------


def test_sigterm_to_torchrun_saves_once_and_the_run_resumes_bit_for_bit(launcher, tmp_path):
    """Dropout (one stream per rank), augmentation and the fused loss, stopped by SIGTERM to the
    launcher, resumed on two ranks: the same weights as two ranks that were never stopped."""
    options = {**DIGITS, "epochs": 12, "dropout": 0.1, "augment": True, "loss": "fused"}
    argv = ["train", *flags(options)]
    stopped = torchrun_standalone(launcher, [*argv, "--out", str(tmp_path / "stopped")])
    stopped.wait_for("epoch 1/12")
    stopped.process.send_signal(signal.SIGTERM)
    stopped.wait()
    assert stopped.stdout().count("interrupted: state saved in") == 1, stopped.text()
    assert stopped.stdout().count("device: cpu") == 1  # only rank 0 prints
    assert start_line(threads_per_process(2)) in stopped.stdout()  # cores / 2 each
    assert run_folder.read_metadata(tmp_path / "stopped")["status"] == "interrupted"
    saved = run_folder.load_state(tmp_path / "stopped" / run_folder.RESUME_FILE)
    assert saved["rank_rng"]["torch"].shape[0] == 2
    assert not torch.equal(*saved["rank_rng"]["torch"])  # two dropout streams

    resumed = launcher.ranks([*argv, "--out", str(tmp_path / "stopped"), "--resume"])
    whole = launcher.ranks([*argv, "--out", str(tmp_path / "whole")])
    assert [r.wait() for r in (*resumed, *whole)] == [0] * 4
    assert_same_weights(tmp_path / "stopped", tmp_path / "whole")
    for a, b in zip(records(tmp_path / "stopped"), records(tmp_path / "whole"), strict=True):
        assert (a["val_loss"], a["val_accuracy"]) == (b["val_loss"], b["val_accuracy"])
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-6)  # sums saved once


def test_a_run_of_one_process_resumes_on_two(launcher, tmp_path):
    """Augmentation is drawn for the whole global batch, so 1 then 2 processes compute what one
    process computes alone, up to the order of additions."""
    options = {**DIGITS, "epochs": 3, "augment": True, "loss": "torch"}
    config = TrainConfig(**options)
    first = train(config, out_dir=tmp_path / "run", should_stop=lambda step: step == 30)
    assert (first.status, len(first.records)) == ("interrupted", 1)  # mid-epoch 2
    ranks = launcher.ranks(["train", *flags(options), "--out", str(tmp_path / "run"), "--resume"])
    assert [r.wait() for r in ranks] == [0, 0], ranks[0].text()
    assert "resuming at epoch 2, step 9" in ranks[0].stdout()

    alone = train(config, out_dir=tmp_path / "alone")
    metadata = run_folder.read_metadata(tmp_path / "run")
    assert metadata["status"] == "finished"
    assert metadata["processes"]["world_size"] == 2
    for a, b in zip(records(tmp_path / "run"), alone.records, strict=True):
        assert a["val_loss"] == pytest.approx(b.val_loss, rel=1e-5)
    assert abs(metadata["test"]["accuracy"] - alone.test["accuracy"]) <= 0.005


# --- faults ---------------------------------------------------------------------------------------


def test_a_killed_rank_stops_the_other_and_the_run_resumes_in_one_process(launcher, tmp_path):
    options = {**DIGITS, "epochs": 12}
    argv = ["train", *flags(options), "--out", str(tmp_path / "run"), "--dist-timeout", "60"]
    rank0, rank1 = launcher.ranks(argv)
    rank0.wait_for("epoch 1/12")
    rank1.process.kill()
    started = time.monotonic()
    assert rank0.wait(limit=30) == 1  # at once: the dead rank's sockets are closed
    assert time.monotonic() - started < 30
    (line,) = rank0.stderr().splitlines()
    assert line.startswith("logloss: error: rank 0: lost contact with the run's other processes")
    assert f"continue with: torchrun ... -m logloss train --out {tmp_path / 'run'}" in line

    resumed = train(TrainConfig(**options), out_dir=tmp_path / "run", resume=True)
    assert resumed.status == "finished"
    assert len(resumed.records) == 12


def test_a_rank_that_stops_answering_fails_the_other_after_the_timeout(launcher, tmp_path):
    argv = ["train", *flags({**DIGITS, "epochs": 12}), "--out", str(tmp_path / "run")]
    rank0, rank1 = launcher.ranks([*argv, "--dist-timeout", "3"])
    rank0.wait_for("epoch 1/12")
    rank1.process.send_signal(signal.SIGSTOP)
    started = time.monotonic()
    assert rank0.wait(limit=3 + 30) == 1
    assert time.monotonic() - started >= 2.5  # it waited for the timeout, not less
    (line,) = rank0.stderr().splitlines()
    assert "lost contact with the run's other processes" in line
    assert "did not answer within 3 s" in line
    rank1.process.kill()
    rank1.wait()


# --- bad input ------------------------------------------------------------------------------------


def test_ranks_started_with_different_options_stop_with_one_line_from_rank_0(launcher, tmp_path):
    argv = ["train", *flags({**DIGITS, "epochs": 1}), "--out", str(tmp_path / "run")]
    ranks = launcher.ranks(argv, rank1=["--lr", "0.01"])
    assert [r.wait() for r in ranks] == [2, 2]
    (line,) = ranks[0].stderr().splitlines()
    assert line.startswith(
        "logloss: error: rank(s) 1 of 2 were started with options that differ from rank 0's"
    )
    assert (ranks[1].stdout(), ranks[1].stderr()) == ("", "")
    assert not (tmp_path / "run").exists()


def test_an_error_on_one_rank_stops_every_rank_and_rank_0_says_it(launcher, tmp_path):
    taken = tmp_path / "taken"  # rank 1 alone is pointed at a folder that holds a run
    taken.mkdir()
    (taken / run_folder.METADATA_FILE).write_text("{}")
    argv = ["train", *flags({**DIGITS, "epochs": 1}), "--out", str(tmp_path / "run")]
    ranks = launcher.ranks(argv, rank1=["--out", str(taken)])
    assert [r.wait() for r in ranks] == [2, 2]
    (line,) = ranks[0].stderr().splitlines()
    assert line == (
        f"logloss: error: rank 1: {taken} already holds a training run: pass --resume to "
        "continue it, or choose another --out folder"
    )
    assert (ranks[1].stdout(), ranks[1].stderr()) == ("", "")
    assert not (tmp_path / "run").exists()
