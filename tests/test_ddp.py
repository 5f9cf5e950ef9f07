"""Several processes, the parts that need no second process: torchrun's environment, the batch
split, the backend, shards, the signals, a process group of one, the command's early errors.

The real multi-process runs (gloo on 127.0.0.1) are in ``test_ddp_processes.py``.
"""

from __future__ import annotations

import signal
import socket

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from safetensors.torch import load_file
from sklearn.metrics import accuracy_score, log_loss

from logloss.cli import main
from logloss.training import TrainConfig, run_folder, train
from logloss.training.augment import augment
from logloss.training.ddp import World
from logloss.training.devices import process_device
from logloss.training.evaluation import evaluate_model, score_sums
from logloss.training.interrupt import LAUNCHER_SIGNALS, stop_on_interrupt
from logloss.training.launch import Launch, check_batch_split, pick_backend

TORCHRUN = {  # what torchrun sets for rank 1 of 2 on one machine
    "RANK": "1",
    "WORLD_SIZE": "2",
    "LOCAL_RANK": "1",
    "LOCAL_WORLD_SIZE": "2",
    "MASTER_ADDR": "127.0.0.1",
    "MASTER_PORT": "29500",
}
DIGITS = {"dataset": "digits", "hidden": (32,), "epochs": 2, "batch_size": 64, "device": "cpu"}


def free_port() -> int:
    """A port on 127.0.0.1 that the kernel reports free (bound to port 0, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def torchrun_env(monkeypatch):
    """Set torchrun's variables in this process: call with the rank, world size and port."""

    def set_env(rank: int, world_size: int, port: int = 29500) -> None:
        values = {
            **TORCHRUN,
            "RANK": str(rank),
            "WORLD_SIZE": str(world_size),
            "LOCAL_RANK": str(rank),
            "LOCAL_WORLD_SIZE": str(world_size),
            "MASTER_PORT": str(port),
        }
        for name, value in values.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")  # traffic on 127.0.0.1 only

    return set_env


# --- torchrun's environment -------------------------------------------------------------------


def test_the_environment_torchrun_sets_describes_the_rank():
    launch = Launch.from_environment(TORCHRUN)
    assert (launch.rank, launch.world_size, launch.local_rank, launch.local_world_size) == (
        1,
        2,
        1,
        2,
    )
    assert launch.master == ("127.0.0.1", 29500)
    assert not launch.is_main
    one = Launch.from_environment({})
    assert (one.rank, one.world_size, one.master, one.is_main) == (0, 1, None, True)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"MASTER_PORT": ""}, "MASTER_PORT is not"),
        ({"LOCAL_RANK": "", "MASTER_ADDR": ""}, "LOCAL_RANK, MASTER_ADDR are not"),
        ({"RANK": "2"}, "RANK=2 is not below WORLD_SIZE=2"),
        ({"LOCAL_WORLD_SIZE": "3"}, "LOCAL_WORLD_SIZE=3 exceeds WORLD_SIZE=2"),
        ({"WORLD_SIZE": "two"}, "WORLD_SIZE must be a whole number >= 0, got 'two'"),
        ({"RANK": "-1"}, "RANK must be a whole number"),
    ],
)
def test_a_broken_environment_is_a_clear_error(changes, message):
    with pytest.raises(ValueError, match=message):
        Launch.from_environment({**TORCHRUN, **changes})


@pytest.mark.parametrize(
    ("batch", "world", "message"),
    [
        (255, 2, r"must be a multiple of 2 \(255 = 127 x 2 \+ 1\); pass --batch-size 254 or 256"),
        (100, 3, r"multiple of 3 \(100 = 33 x 3 \+ 1\); pass --batch-size 99 or 102"),
        (3, 4, r"multiple of 4 \(3 = 0 x 4 \+ 3\); pass --batch-size 4$"),
    ],
)
def test_a_batch_that_does_not_split_names_the_numbers(batch, world, message):
    with pytest.raises(ValueError, match=message):
        check_batch_split(batch, world)
    assert check_batch_split(256, 4) == 64
    assert check_batch_split(7, 1) == 7


def test_the_backend_fits_the_device():
    assert pick_backend(None, "cpu") == "gloo"
    assert pick_backend("gloo", "cpu") == "gloo"
    assert pick_backend(None, "cuda") == "nccl"
    with pytest.raises(ValueError, match="the gloo backend cannot train on cuda: nccl is"):
        pick_backend("gloo", "cuda")
    with pytest.raises(ValueError, match=r"the nccl backend cannot train on cpu.*--device cuda"):
        pick_backend("nccl", "cpu")
    with pytest.raises(ValueError, match="cannot train on mps"):
        pick_backend(None, "mps")
    with pytest.raises(ValueError, match="backend must be one of gloo, nccl; got 'mpi'"):
        pick_backend("mpi", "cpu")


def test_each_process_on_a_machine_takes_its_own_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    two = Launch.from_environment(TORCHRUN)  # local rank 1 of 2
    with pytest.raises(ValueError, match=r"2 processes on this machine but 1 GPU\(s\)"):
        process_device(torch.device("cuda"), two)
    with pytest.raises(ValueError, match="names one GPU for the 2 processes"):
        process_device(torch.device("cuda", 0), two)
    assert process_device(torch.device("cpu"), two) == torch.device("cpu")
    assert process_device(torch.device("cuda"), Launch()) == torch.device("cuda")  # one process


# --- shares and shards ------------------------------------------------------------------------


@given(n=st.integers(0, 600), world=st.integers(1, 9))
def test_the_shares_of_a_batch_are_numpys_even_split(n, world):
    shares = [
        World(Launch(rank=r, world_size=world), torch.device("cpu")).share(n) for r in range(world)
    ]
    expected = np.array_split(np.arange(n), world)  # the first n mod W parts one longer
    for share, part in zip(shares, expected, strict=True):
        np.testing.assert_array_equal(np.arange(n)[share], part)


@pytest.mark.parametrize("shards", [1, 2, 3, 5])
def test_evaluation_shards_add_up_to_the_whole_split(shards):
    torch.manual_seed(0)
    model = torch.nn.Linear(6, 4)
    inputs, labels = torch.randn(300, 6), torch.randint(0, 4, (300,))
    parts = [
        score_sums(model, inputs, labels, batch_size=64, shard=(k, shards)) for k in range(shards)
    ]
    assert sum(p.count for p in parts) == 300
    whole = evaluate_model(model, inputs, labels, batch_size=64)
    assert sum(p.correct for p in parts) / 300 == whole.accuracy
    assert sum(p.loss for p in parts) / 300 == pytest.approx(whole.loss, rel=1e-12)
    with torch.no_grad():
        probabilities = torch.softmax(model(inputs).double(), dim=1).numpy()
    assert whole.accuracy == accuracy_score(labels.numpy(), probabilities.argmax(1))
    assert sum(p.loss for p in parts) / 300 == pytest.approx(
        log_loss(labels.numpy(), probabilities), rel=1e-6
    )


def test_each_rank_distorts_its_rows_as_one_process_distorts_the_whole_batch():
    config = TrainConfig()
    x = torch.randn(10, 28 * 28)
    whole = augment(x, (28, 28), -0.4, config, torch.Generator().manual_seed(3))
    rows = [slice(0, 4), slice(4, 7), slice(7, 10)]  # three ranks' shares of a batch of 10
    for part in rows:
        mine = augment(
            x[part], (28, 28), -0.4, config, torch.Generator().manual_seed(3), rows=part, batch=10
        )
        torch.testing.assert_close(mine, whole[part], rtol=0, atol=1e-6)


def test_sigterm_stops_like_ctrl_c_under_torchrun():
    with stop_on_interrupt(LAUNCHER_SIGNALS) as flag:
        assert not flag
        signal.raise_signal(signal.SIGTERM)
        assert flag  # the first signal only asks to stop
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)  # a second one interrupts at once
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # handlers put back


# --- a process group of one, in this process ----------------------------------------------------


def test_torchrun_with_one_process_computes_what_one_process_computes(tmp_path, torchrun_env):
    config = TrainConfig(**DIGITS, dropout=0.1, augment=True)
    alone = train(config, out_dir=tmp_path / "alone")
    torchrun_env(0, 1, free_port())
    grouped = train(config, out_dir=tmp_path / "group")
    assert not torch.distributed.is_initialized()  # the group was left
    expected, got = (
        load_file(tmp_path / "alone" / "last.safetensors"),
        load_file(tmp_path / "group" / "last.safetensors"),
    )
    for name in expected:
        assert torch.equal(got[name], expected[name]), name
    for a, g in zip(alone.records, grouped.records, strict=True):
        assert (g.train_loss, g.train_accuracy, g.val_loss, g.val_accuracy, g.lr) == (
            a.train_loss,
            a.train_accuracy,
            a.val_loss,
            a.val_accuracy,
            a.lr,
        )
    assert grouped.test == alone.test
    metadata = run_folder.read_metadata(tmp_path / "group")
    assert metadata["processes"] == {"world_size": 1, "backend": "gloo", "rank_seeds": [0]}
    rank_rng = run_folder.load_state(tmp_path / "group" / run_folder.RESUME_FILE)["rank_rng"]
    assert rank_rng["torch"].shape == (1, torch.get_rng_state().numel())


# --- the command's early errors -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--batch-size", "255"], "the batch size 255 is the global batch, split evenly over"),
        (["--device", "cuda", "--backend", "gloo"], "the gloo backend cannot train on cuda"),
    ],
)
def test_bad_input_under_torchrun_is_one_line_from_rank_0(
    flags, message, tmp_path, capsys, torchrun_env
):
    argv = ["train", "--dataset", "digits", "--out", str(tmp_path / "run"), *flags]
    torchrun_env(0, 2)
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("logloss: error: ")
    assert message in err
    assert err.count("\n") == 1
    torchrun_env(1, 2)
    assert main(argv) == 2
    assert capsys.readouterr() == ("", "")  # rank 1 exits with rank 0's status, silently
    assert not (tmp_path / "run").exists()


def test_backend_without_torchrun_is_refused(tmp_path, capsys):
    argv = ["train", "--dataset", "digits", "--out", str(tmp_path / "run"), "--backend", "gloo"]
    assert main(argv) == 2
    assert "backend 'gloo' is for processes started by torchrun" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_an_unreachable_rendezvous_is_one_line_within_the_timeout(tmp_path, capsys, torchrun_env):
    torchrun_env(1, 2, free_port())  # nothing listens there
    argv = ["train", "--dataset", "digits", "--out", str(tmp_path / "run"), "--dist-timeout", "1"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("logloss: error: rank 1: cannot reach the rendezvous at 127.0.0.1:")
    assert "within 1 s" in err
    assert err.count("\n") == 1
    assert not (tmp_path / "run").exists()
