"""Training on the real MNIST: loss falls from ln 10, runs are reproducible and resumable."""

from __future__ import annotations

import json
import math
import signal

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from sklearn.metrics import accuracy_score, log_loss

from logloss.insight.explain import explain
from logloss.training import (
    PRESETS,
    Reporter,
    TrainConfig,
    evaluate_model,
    make_loss,
    parse_hidden,
    pixel_normalization,
    run_folder,
    train,
)
from logloss.training.augment import augment
from logloss.training.checkpoint import load_checkpoint

# 5,000 training samples (the other 55,000 validate): one epoch is 20 steps of 256.
TINY = {"hidden": (64,), "epochs": 1, "validation_size": 55_000, "device": "cpu"}


class Recorder(Reporter):
    def __init__(self) -> None:
        self.samples: dict[str, object] = {}
        self.warnings: list[str] = []
        self.progress: list[tuple] = []

    def on_sample(self, stage, view):
        self.samples[stage] = explain(view.logits, view.target)

    def on_warning(self, message):
        self.warnings.append(message)

    def on_progress(self, step, loss, accuracy, samples_per_s):
        self.progress.append((step, loss, accuracy))


# --- options ----------------------------------------------------------------------------------


def test_config_round_trips_and_rejects_unknown_options():
    config = TrainConfig(hidden=(32, 16), lr=0.01, augment=True, target_accuracy=0.9)
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError, match=r"unknown training option\(s\) \['lrate'\]"):
        TrainConfig.from_dict({"lrate": 0.1})


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"epochs": 0}, "epochs must be an integer >= 1, got 0"),
        ({"batch_size": 2.5}, "batch_size must be an integer"),
        ({"lr": 0.0}, r"lr must be a number in \(0.0, inf\)"),
        ({"lr": math.nan}, "lr must be a number"),
        ({"optimizer": "adam"}, "optimizer must be one of adamw, sgd; got 'adam'"),
        ({"schedule": "step"}, "schedule must be one of onecycle, cosine, constant"),
        ({"loss": "mse"}, "loss must be one of logloss, torch, fused"),
        ({"dropout": 1.0}, r"dropout must be a number in \[0.0, 1.0\)"),
        ({"target_accuracy": 98.0}, r"target_accuracy must be a number in \(0.0, 1.0\]"),
        ({"hidden": "a,b"}, "comma-separated layer widths"),
        ({"validation_size": 0}, r"validation_size must be a count .* or a fraction in \(0, 1\)"),
        ({"validation_size": 1.0}, "validation_size must be a count"),
        ({"validation_size": True}, "validation_size must be a count"),
    ],
)
def test_bad_options_are_clear_errors(changes, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**changes)


def test_presets():
    assert TrainConfig.preset("default") == TrainConfig()
    best = TrainConfig.preset("best", epochs=3)
    assert best.epochs == 3
    assert best.hidden == PRESETS["best"]["hidden"]
    assert best.augment
    with pytest.raises(ValueError, match="unknown preset 'fast'"):
        TrainConfig.preset("fast")
    assert parse_hidden("1024, 512") == (1024, 512)


def test_the_default_validation_size_is_a_twelfth_5000_for_mnist():
    from logloss.data import split_train_validation

    assert TrainConfig().validation_size == pytest.approx(1 / 12, rel=1e-15)
    labels = np.arange(60_000) % 10
    by_fraction = split_train_validation(labels, labels, validation_size=1 / 12, seed=0)
    by_count = split_train_validation(labels, labels, validation_size=5000, seed=0)
    assert len(by_fraction[3]) == 5000
    np.testing.assert_array_equal(by_fraction[3], by_count[3])  # the very same samples
    config = TrainConfig(validation_size=0.2)
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_cli_validation_size_takes_a_count_or_a_fraction():
    from logloss.training.config import parse_validation_size

    assert parse_validation_size("5000") == 5000
    assert isinstance(parse_validation_size("5000"), int)
    assert parse_validation_size("0.25") == 0.25
    with pytest.raises(ValueError, match=r"a count such as 5000 or a fraction such as 0\.1"):
        parse_validation_size("many")
    with pytest.raises(ValueError, match="fraction in"):
        parse_validation_size("1.5")


# --- pieces -----------------------------------------------------------------------------------


def test_evaluate_model_matches_scikit_learn():
    torch.manual_seed(0)
    model = torch.nn.Linear(6, 4)
    inputs, labels = torch.randn(300, 6), torch.randint(0, 4, (300,))
    result = evaluate_model(model, inputs, labels, batch_size=64)  # 5 uneven batches
    with torch.no_grad():
        probabilities = torch.softmax(model(inputs).double(), dim=1).numpy()
    assert result.accuracy == accuracy_score(labels.numpy(), probabilities.argmax(1))
    assert result.loss == pytest.approx(log_loss(labels.numpy(), probabilities), rel=1e-6)
    accuracy, loss = result  # unpacks as a tuple
    assert (accuracy, loss) == (result.accuracy, result.loss)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pixel_normalization_matches_numpy(seed):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(50, 7, 9), dtype=np.uint8)
    images[:10] = 0  # plenty of blank paper, as in MNIST
    normalization = pixel_normalization(images)
    pixels = images.astype(np.float64) / 255.0
    assert normalization.mean == pytest.approx(np.mean(pixels), rel=1e-12)
    assert normalization.std == pytest.approx(np.std(pixels), rel=1e-12)
    assert normalization.divide_by == 255.0


def test_pixel_normalization_extremes_and_bad_input():
    assert pixel_normalization(np.zeros((3, 3), dtype=np.uint8))[:2] == (0.0, 0.0)
    assert pixel_normalization(np.full(5, 255, dtype=np.uint8))[:2] == (1.0, 0.0)
    with pytest.raises(ValueError, match="need uint8 pixels"):
        pixel_normalization(np.zeros((2, 2), dtype=np.float32))
    with pytest.raises(ValueError, match="at least one"):
        pixel_normalization(np.zeros((0, 28, 28), dtype=np.uint8))


def test_losses_agree_with_torch():
    logits, target = torch.randn(64, 10), torch.randint(0, 10, (64,))
    expected = torch.nn.functional.cross_entropy(logits, target, label_smoothing=0.1)
    for name in ("logloss", "torch", "fused"):
        got = make_loss(name, 0.1)(logits, target)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="loss must be one of logloss, torch, fused"):
        make_loss("mine", 0.1)


def test_augment_with_zero_magnitudes_is_the_identity():
    config = TrainConfig(
        augment_rotation=0.0, augment_scale=0.0, augment_shift=0.0, augment_elastic=0.0
    )
    x = torch.rand(8, 28 * 28)
    out = augment(x, (28, 28), -0.4, config, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, x, rtol=0, atol=1e-5)


def test_augment_moves_ink_a_little_and_keeps_blank_paper_blank():
    config = TrainConfig(augment_elastic=0.0, augment_rotation=0.0, augment_scale=0.0)
    background = -0.42
    x = torch.full((16, 28, 28), background)
    x[:, 10:18, 10:18] = 2.0
    out = augment(x.view(16, -1), (28, 28), background, config, torch.Generator().manual_seed(1))
    out = out.view(16, 28, 28)
    assert torch.allclose(out[:, :3, :], torch.tensor(background), atol=1e-6)  # far corner
    ink = (out - background).clamp(min=0)
    rows = (ink.sum(2) * torch.arange(28)).sum(1) / ink.sum((1, 2))
    assert ((rows - 13.5).abs() <= config.augment_shift + 1e-4).all()  # shift <= 2 pixels
    assert (rows - 13.5).abs().max() > 0.1  # and it did move
    again = augment(x.view(16, -1), (28, 28), background, config, torch.Generator().manual_seed(1))
    torch.testing.assert_close(again.view(16, 28, 28), out, rtol=0, atol=0)  # seeded


# --- real training ----------------------------------------------------------------------------


def test_a_short_run_lowers_the_loss_from_ln_10_and_beats_chance(tmp_path, data_dir):
    recorder = Recorder()
    history = train(
        TrainConfig(**TINY), out_dir=tmp_path / "run", data_dir=data_dir, reporter=recorder
    )
    assert history.status == "finished"
    assert history.initial_loss == pytest.approx(math.log(10), abs=0.15)
    assert recorder.warnings == []
    before, after = recorder.samples["before"], recorder.samples["after"]
    assert np.allclose(before.probabilities, 0.1, atol=0.05)
    assert before.loss == pytest.approx(math.log(10), abs=0.5)
    assert after.target == before.target
    (record,) = history.records
    assert record.val_loss < 0.6 * math.log(10)
    assert record.val_accuracy > 0.8  # chance is 0.1
    assert history.test["accuracy"] > 0.8
    # The progress reports a running train loss that falls during the epoch.
    assert recorder.progress[-1][1] < recorder.progress[0][1]

    run = tmp_path / "run"
    lines = (run / run_folder.METRICS_FILE).read_text().splitlines()
    assert [json.loads(line)["val_accuracy"] for line in lines] == [record.val_accuracy]
    assert set(json.loads(lines[0])) >= {"train_loss", "val_loss", "lr", "elapsed", "epoch"}
    metadata = run_folder.read_metadata(run)
    assert metadata["status"] == "finished"
    assert metadata["config"] == TrainConfig(**TINY).to_dict()
    assert metadata["test"]["accuracy"] == history.test["accuracy"]
    assert 0 < metadata["normalization"]["mean"] < 1
    # The initial weights are the untrained ones: their validation loss is near ln 10.
    initial = load_checkpoint(run, which="initial")
    best = load_checkpoint(run, which="best")
    from logloss.data import load_dataset

    images, labels = load_dataset("mnist", "test", data_dir=data_dir)
    assert initial.evaluate(images, labels).loss == pytest.approx(math.log(10), abs=0.15)
    predicted = best.logits(images).argmax(1)
    assert accuracy_score(labels, predicted) == history.test["best_accuracy"]

    with pytest.raises(ValueError, match="already holds a training run"):
        train(TrainConfig(**TINY), out_dir=run, data_dir=data_dir)
    with pytest.raises(ValueError, match=r"complete \(status: finished\): nothing to resume"):
        train(TrainConfig(**TINY), out_dir=run, data_dir=data_dir, resume=True)


def test_digits_trains_offline_with_the_default_validation_size(tmp_path, capsys):
    from logloss.cli import main
    from logloss.data import load_dataset

    out = tmp_path / "digits"
    argv = ["train", "--dataset", "digits", "--out", str(out), "--epochs", "1"]
    assert main([*argv, "--batch-size", "64", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["status"] == "finished"
    assert summary["config"]["validation_size"] == pytest.approx(1 / 12, rel=1e-15)
    metadata = run_folder.read_metadata(out)
    assert metadata["sizes"] == {"train": 1317, "validation": 120, "test": 360}  # 1437 = 1317+120
    assert metadata["architecture"]["input_shape"] == [8, 8]
    checkpoint = load_checkpoint(out)
    images, labels = load_dataset("digits", "test", download=False)
    assert images.shape[1:] == (8, 8)
    accuracy = accuracy_score(labels, checkpoint.logits(images).argmax(1))
    assert accuracy == summary["test"]["best_accuracy"]
    assert accuracy > 0.5  # chance is 0.1


def _weights(run) -> dict[str, torch.Tensor]:
    return load_file(run / "last.safetensors")


def test_resume_equals_an_uninterrupted_run(tmp_path, data_dir):
    # Dropout and augmentation too, so that every random generator must be restored.
    config = TrainConfig(**{**TINY, "epochs": 2, "dropout": 0.1, "augment": True})
    steps_per_epoch = 20

    whole = train(config, out_dir=tmp_path / "whole", data_dir=data_dir)

    # Stopped at the end of epoch 1, then resumed for epoch 2.
    first = train(
        config,
        out_dir=tmp_path / "split",
        data_dir=data_dir,
        should_stop=lambda step: step == steps_per_epoch,
    )
    assert first.status == "interrupted"
    assert len(first.records) == 1
    second = train(config, out_dir=tmp_path / "split", data_dir=data_dir, resume=True)

    # Ctrl-C in the middle of epoch 1 (a real SIGINT), then resumed.
    def ctrl_c(step: int) -> bool:
        if step == 7:
            signal.raise_signal(signal.SIGINT)
        return False

    cut = train(config, out_dir=tmp_path / "ctrl-c", data_dir=data_dir, should_stop=ctrl_c)
    assert cut.status == "interrupted"
    assert cut.records == []
    resumed = train(config, out_dir=tmp_path / "ctrl-c", data_dir=data_dir, resume=True)

    expected = _weights(tmp_path / "whole")
    for run, history in ((tmp_path / "split", second), (tmp_path / "ctrl-c", resumed)):
        got = _weights(run)
        assert got.keys() == expected.keys()
        for name in expected:
            assert torch.equal(got[name], expected[name]), f"{run.name}: {name} differs"
        assert history.status == "finished"
        for a, b in zip(history.records, whole.records, strict=True):
            assert (a.train_loss, a.val_loss, a.val_accuracy, a.lr) == (
                b.train_loss,
                b.val_loss,
                b.val_accuracy,
                b.lr,
            )
        assert history.test == whole.test


def test_resume_refuses_changed_options_and_missing_state(tmp_path, data_dir):
    config = TrainConfig(**{**TINY, "epochs": 2})
    train(config, out_dir=tmp_path / "run", data_dir=data_dir, should_stop=lambda step: step == 3)
    changed = TrainConfig(**{**TINY, "epochs": 2, "lr": 0.01})
    with pytest.raises(ValueError, match=r"lr \(saved 0.003, given 0.01\)"):
        train(changed, out_dir=tmp_path / "run", data_dir=data_dir, resume=True)
    with pytest.raises(ValueError, match="not a logloss checkpoint directory"):
        train(config, out_dir=tmp_path / "nothing", data_dir=data_dir, resume=True)


def test_cli_train_json(tmp_path, data_dir, capsys):
    from logloss.cli import main

    out = tmp_path / "cli"
    argv = ["train", "--hidden", "32", "--epochs", "3", "--validation-size", "55000"]
    argv += ["--data-dir", str(data_dir), "--out", str(out), "--json", "--loss", "torch"]
    argv += ["--target-accuracy", "50"]  # percent: stops after the first epoch
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["status"] == "target_reached"
    assert len(summary["epochs"]) == 1
    assert summary["config"]["target_accuracy"] == 0.5
    assert summary["config"]["hidden"] == [32]
    assert summary["config"]["loss"] == "torch"
    assert summary["test"]["accuracy"] > 0.7
    assert (out / "best.safetensors").is_file()
    # Resuming a finished run, and changing an option on resume, are clear errors.
    assert main(["train", "--out", str(out), "--resume", "--data-dir", str(data_dir)]) == 2
    assert "nothing to resume" in capsys.readouterr().err
    assert main(["train", "--resume"]) == 2
    assert "--resume needs --out DIR" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--batch-size", "0"], "--batch-size must be an integer >= 1, got 0"),
        (["--lr", "inf"], "--lr must be a number in (0.0, inf), got inf"),
        (["--target-accuracy", "150"], "--target-accuracy must be in (0, 1] or (1, 100]"),
    ],
)
def test_bad_training_options_name_the_flag(flags, message, tmp_path, capsys):
    from logloss.cli import main

    status = main(["train", "--dataset", "digits", "--out", str(tmp_path / "run"), *flags])
    assert status == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # refused before anything was written
