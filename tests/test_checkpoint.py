"""Checkpoints: exact round trips, atomic writes, clear errors, and `logloss predict`."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from logloss._atomic import write_text_atomic
from logloss.training import run_folder, state_file
from logloss.training.checkpoint import load_checkpoint
from logloss.training.model import Architecture, DenseNet

SOURCES = Path(__file__).resolve().parents[1] / "src" / "logloss"


@pytest.fixture(scope="module")
def test_set(data_dir):
    from logloss.data import load_dataset

    return load_dataset("mnist", "test", data_dir=data_dir)


# --- states -----------------------------------------------------------------------------------


def test_optimizer_state_round_trips_exactly(tmp_path):
    torch.manual_seed(0)
    model = DenseNet(Architecture(hidden=(8,)))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95))
    for _ in range(2):
        model(torch.randn(4, 28, 28)).square().mean().backward()
        optimizer.step()
    state = {"optimizer": optimizer.state_dict(), "nan": math.nan, "nested": [(1, "a"), None]}
    run_folder.save_state(tmp_path / "state.safetensors", state)
    loaded = run_folder.load_state(tmp_path / "state.safetensors")

    original = state["optimizer"]
    again = loaded["optimizer"]
    assert again["param_groups"] == original["param_groups"]  # betas stay a tuple
    assert again["state"].keys() == original["state"].keys()  # int keys stay int
    for index, values in original["state"].items():
        for name, tensor in values.items():
            assert torch.equal(again["state"][index][name], tensor)
    assert math.isnan(loaded["nan"])
    assert loaded["nested"] == [(1, "a"), None]

    fresh = torch.optim.AdamW(DenseNet(Architecture(hidden=(8,))).parameters())
    fresh.load_state_dict(again)  # torch accepts it as its own


def test_weights_round_trip_exactly(tmp_path):
    model = DenseNet(Architecture(hidden=(16, 8), dropout=0.5))
    run_folder.save_weights(
        tmp_path / "w.safetensors", model, {"architecture": {"hidden": [16, 8]}}
    )
    weights, info = run_folder.load_weights(tmp_path / "w.safetensors")
    assert info == {"architecture": {"hidden": [16, 8]}}
    for name, tensor in model.state_dict().items():
        assert torch.equal(weights[name], tensor)
    # Plain safetensors under the state-dict names: any tool can read the weights.
    assert load_file(tmp_path / "w.safetensors").keys() == model.state_dict().keys()


def test_unsupported_values_are_refused():
    with pytest.raises(TypeError, match=r"cannot store set at 'x'"):
        state_file.split_tensors({"x": {1, 2}})


def test_writes_are_atomic(tmp_path, monkeypatch):
    path = tmp_path / "file.json"
    write_text_atomic(path, "old")

    def fail(source, target):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_text_atomic(path, "new")
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.json"]  # no temporary left


def test_unreadable_files_are_clear_errors(tmp_path):
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x80\x04not safetensors at all")
    with pytest.raises(ValueError, match="is not a readable safetensors checkpoint"):
        run_folder.load_state(garbage)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, foreign)
    with pytest.raises(ValueError, match="was not written by logloss"):
        run_folder.load_state(foreign)
    with pytest.raises(ValueError, match="not a logloss checkpoint directory"):
        load_checkpoint(tmp_path)


def test_nothing_is_unpickled():
    for path in SOURCES.rglob("*.py"):
        text = path.read_text()
        assert "torch.load(" not in text, path
        assert "allow_pickle" not in text, path  # np.load(..., allow_pickle=True)
        assert "pickle" not in text.replace("unpickl", ""), path  # import pickle, cPickle, ...


def _copy_run(source: Path, target: Path, names=("checkpoint.json", "best.safetensors")) -> Path:
    target.mkdir()
    for name in names:
        (target / name).write_bytes((source / name).read_bytes())
    return target


def test_a_damaged_checkpoint_json_is_a_clear_error(small_run, tmp_path):
    broken = _copy_run(small_run, tmp_path / "truncated")
    text = (broken / "checkpoint.json").read_text()
    (broken / "checkpoint.json").write_text(text[: len(text) // 2])
    with pytest.raises(ValueError, match=r"checkpoint\.json is damaged: not valid JSON"):
        load_checkpoint(broken)

    for name, change in [
        ("no-config", lambda m: m.pop("config")),
        ("config-list", lambda m: m.update(config=[1, 2])),
        ("architecture-string", lambda m: m.update(architecture="dense")),
        ("normalization-extra", lambda m: m["normalization"].update(scale=2.0)),
        ("normalization-text", lambda m: m["normalization"].update(std="wide")),
        ("classes-short", lambda m: m.update(classes=["0", "1"])),
    ]:
        damaged = json.loads(text)
        change(damaged)
        folder = _copy_run(small_run, tmp_path / name)
        (folder / "checkpoint.json").write_text(json.dumps(damaged))
        with pytest.raises(ValueError, match=r"checkpoint\.json is damaged: .*train again"):
            load_checkpoint(folder)
    intact = load_checkpoint(_copy_run(small_run, tmp_path / "intact"))
    assert intact.config.hidden == (32,)  # the copies themselves are fine


def _with_header(path: Path, target: Path, value: str) -> Path:
    """A copy of a safetensors file whose logloss metadata is replaced by ``value``."""
    tensors = load_file(path)
    save_file(tensors, target, metadata={"logloss": value})
    return target


def test_a_damaged_header_is_a_clear_error(small_run, tmp_path):
    weights = _with_header(small_run / "best.safetensors", tmp_path / "w.safetensors", "{oops")
    with pytest.raises(ValueError, match=r"w\.safetensors is damaged: .* metadata is not JSON"):
        run_folder.load_weights(weights)

    state = {"step": 3, "m": torch.ones(2), "pair": (1, 2)}
    run_folder.save_state(tmp_path / "state.safetensors", state)
    for name, header in [
        ("not-json", '{"step": 3,'),
        ("missing-tensor", '{"m": {"__tensor__": "gone"}}'),
        ("bad-tuple", '{"pair": {"__tuple__": 5}}'),
        ("bad-items", '{"x": {"__items__": [1]}}'),
    ]:
        damaged = _with_header(tmp_path / "state.safetensors", tmp_path / f"{name}.st", header)
        with pytest.raises(ValueError, match=rf"{name}\.st is damaged: .* start a new run"):
            run_folder.load_state(damaged)
    assert run_folder.load_state(tmp_path / "state.safetensors")["pair"] == (1, 2)


def test_non_finite_values_in_checkpoint_json_read_back_old_and_new(small_run, tmp_path):
    folder = _copy_run(small_run, tmp_path / "run")
    metadata = run_folder.read_metadata(folder)
    run_folder.write_metadata(
        folder, {**metadata, "initial_loss": math.inf, "x": [-math.inf, math.nan]}
    )
    raw = json.loads((folder / "checkpoint.json").read_text())  # strict JSON: strings
    assert (raw["initial_loss"], raw["x"]) == ("Infinity", ["-Infinity", "NaN"])
    again = run_folder.read_metadata(folder)
    assert again["initial_loss"] == math.inf
    assert again["x"][0] == -math.inf
    assert math.isnan(again["x"][1])
    # Files written before used str(float): "inf", "-inf", "nan".
    raw.update(initial_loss="inf", x=["-inf", "nan"])
    (folder / "checkpoint.json").write_text(json.dumps(raw))
    old = run_folder.read_metadata(folder)
    assert old["initial_loss"] == math.inf
    assert old["x"][0] == -math.inf
    assert math.isnan(old["x"][1])
    assert old["status"] == metadata["status"]  # other strings are untouched


# --- load_checkpoint --------------------------------------------------------------------------


def test_loaded_checkpoint_reproduces_the_training_metrics(small_run, test_set):
    out = small_run
    images, labels = test_set
    checkpoint = load_checkpoint(out, which="best")
    assert not checkpoint.model.training
    assert (checkpoint.config.hidden, checkpoint.config.batch_size) == ((32,), 512)
    assert checkpoint.model.architecture.hidden == (32,)
    assert checkpoint.classes == list("0123456789")
    logits = checkpoint.logits(images, batch_size=3000)  # uneven batches
    assert logits.shape == (10_000, 10)
    assert logits.dtype == np.float32
    accuracy = float((logits.argmax(1) == labels).mean())
    assert accuracy == checkpoint.metadata["test"]["best_accuracy"]
    # Independent normalisation, in float64: (pixel / 255 - mean) / std.
    norm = checkpoint.metadata["normalization"]
    x = (images[:50].reshape(50, -1) / 255.0 - norm["mean"]) / norm["std"]
    with torch.no_grad():
        reference = checkpoint.model.double()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(logits[:50], reference, rtol=1e-4, atol=1e-4)


def test_initial_weights_differ_from_trained_ones(small_run):
    out = small_run
    initial = load_checkpoint(out, which="initial").model.state_dict()
    last = load_checkpoint(out, which="last").model.state_dict()
    assert not torch.equal(initial["layers.1.weight"], last["layers.1.weight"])


def test_architecture_mismatch_is_a_clear_error(small_run, tmp_path):
    out = small_run
    broken = _copy_run(out, tmp_path / "broken")
    metadata = json.loads((broken / "checkpoint.json").read_text())
    metadata["architecture"]["hidden"] = [128]
    (broken / "checkpoint.json").write_text(json.dumps(metadata))
    with pytest.raises(ValueError, match="the folder mixes two runs"):
        load_checkpoint(broken)
    with pytest.raises(ValueError, match="run has no 'last' weights yet"):
        load_checkpoint(broken, which="last")
    with pytest.raises(ValueError, match="which must be one of"):
        load_checkpoint(out, which="final")


def test_logits_reject_wrong_image_shapes(small_run):
    checkpoint = load_checkpoint(small_run)
    with pytest.raises(ValueError, match=r"images must have shape \(N, 28, 28\)"):
        checkpoint.logits(np.zeros((2, 8, 8), dtype=np.uint8))


# --- logloss predict --------------------------------------------------------------------------


def _paper_picture(digit: np.ndarray) -> Image.Image:
    """An MNIST digit as a user might draw it: dark ink on white paper, 4x larger, off-centre."""
    paper = np.full((140, 120), 255, dtype=np.uint8)
    big = np.asarray(Image.fromarray(255 - digit).resize((112, 112), Image.Resampling.BILINEAR))
    paper[20:132, 4:116] = big
    return Image.fromarray(paper)


def test_predict_reads_png_and_jpeg(small_run, test_set, tmp_path, capsys):
    from logloss.cli import main

    out = small_run
    images, labels = test_set
    checkpoint = load_checkpoint(out)
    direct = checkpoint.logits(images[:40]).argmax(1)
    chosen = [i for i in range(40) if direct[i] == labels[i]][:10]  # digits it gets right
    paths = []
    for i in chosen:
        for suffix in (".png", ".jpg"):
            path = tmp_path / f"digit{i}{suffix}"
            _paper_picture(images[i]).save(path)
            paths.append(path)
    assert main(["predict", "--checkpoint", str(out), "--json", *map(str, paths)]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["file"] for r in results] == [str(p) for p in paths]
    for result in results:
        assert sum(result["probabilities"]) == pytest.approx(1.0, abs=1e-9)
        assert result["predicted"] == int(np.argmax(result["logits"]))
    expected = [int(labels[i]) for i in chosen for _ in (".png", ".jpg")]
    agree = sum(r["predicted"] == e for r, e in zip(results, expected, strict=True))
    assert agree >= 0.8 * len(paths)

    assert main(["predict", "--checkpoint", str(out), str(paths[0])]) == 0
    text = capsys.readouterr().out
    assert f"{paths[0]}: {results[0]['label']} (p = " in text
    assert "<- predicted" in text


def test_predict_rejects_non_images(small_run, tmp_path, capsys):
    from logloss.cli import main

    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    assert main(["predict", "--checkpoint", str(small_run), str(notes)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("logloss: error: ")
    assert "is not an image that Pillow can read" in error
    assert main(["predict", "--checkpoint", str(tmp_path), str(notes)]) == 2
    assert "not a logloss checkpoint directory" in capsys.readouterr().err
