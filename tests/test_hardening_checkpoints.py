"""Issue 13: damaged, forged and huge run folders are refused with one clear line.

Each test reproduces one attack of the fault-injection pass (its item number is in the
docstring): the reference is the rule itself (a hand-made damaged file and the message that names
its file and field), hashlib for the SHA-256, and the peak RSS of a fresh process for memory.
The runs are trained on scikit-learn's bundled 8x8 digits, offline, in about a second each.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

import logloss._atomic
from logloss.cli import main
from logloss.training import TrainConfig, train
from logloss.training import run_folder as rf
from logloss.training.checkpoint import load_checkpoint
from logloss.training.resume import saved_state
from logloss.training.state_file import HEADER_KEY

SOURCES = Path(__file__).resolve().parents[1] / "src"
# digits: 1,317 training images, 21 steps of 64 per epoch
DIGITS = {"dataset": "digits", "hidden": (16,), "batch_size": 64, "device": "cpu"}
STEPS_PER_EPOCH = 21


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 1-epoch run: checkpoint.json, initial/last/best weights, resume state."""
    folder = tmp_path_factory.mktemp("hardening") / "finished"
    train(TrainConfig(**DIGITS, epochs=1), out_dir=folder, download=False)
    return folder


PAUSED_CONFIG = TrainConfig(**DIGITS, epochs=3)


@pytest.fixture(scope="module")
def paused_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run stopped in the middle of its second epoch (permutation and running sums saved)."""
    folder = tmp_path_factory.mktemp("hardening") / "paused"
    stop = STEPS_PER_EPOCH + 5
    history = train(PAUSED_CONFIG, out_dir=folder, should_stop=lambda step: step == stop)
    assert history.status == "interrupted"
    return folder


def copy_run(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def edit_metadata(folder: Path, change) -> None:
    """Apply ``change`` to checkpoint.json's dict (as raw JSON, non-finite as strings)."""
    path = folder / rf.METADATA_FILE
    metadata = json.loads(path.read_text())
    change(metadata)
    path.write_text(json.dumps(metadata))


def replace_weights(folder: Path, which: str, tensors: dict[str, torch.Tensor]) -> None:
    """Rewrite a weights file (keeping its info header) and record its SHA-256, as a run that
    produced these tensors would have."""
    path = folder / rf.WEIGHT_FILES[which]
    _, info = rf.load_weights(path)
    save_file(tensors, path, metadata={HEADER_KEY: json.dumps(info)})
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    edit_metadata(folder, lambda m: m["sha256"].update({path.name: digest}))


def cli_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The one line that ``logloss`` prints for a refused command (exit status 2)."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("logloss: error: ")
    assert err.count("\n") == 1, err  # one line, no traceback
    return err


# --- item 2: non-finite weights and normalisation ----------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [("layers.3.bias", float("nan"), "NaN"), ("layers.1.weight", float("inf"), "an infinity")],
)
def test_non_finite_weights_are_refused_naming_the_tensor(
    finished_run, tmp_path, capsys, name, value, says
):
    """issue 13, item 2: a NaN bias or an infinite weight is refused at load, tensor named."""
    folder = copy_run(finished_run, tmp_path / "run")
    tensors, _ = rf.load_weights(folder / "best.safetensors")
    tensors[name].view(-1)[3] = value
    replace_weights(folder, "best", tensors)
    with pytest.raises(ValueError, match=rf"best\.safetensors .*: {name} contains {says}\."):
        load_checkpoint(folder)
    image = tmp_path / "digit.png"
    from PIL import Image

    picture = Image.new("L", (28, 28))  # black paper with a white stroke: a readable "1"
    picture.paste(255, (12, 4, 16, 24))
    picture.save(image)
    err = cli_error(["predict", "--checkpoint", str(folder), "--json", str(image)], capsys)
    assert f"{name} contains {says}" in err
    assert load_checkpoint(folder, which="last").which == "last"  # the other weights still load


@pytest.mark.parametrize(
    ("field", "value", "rule"),
    [
        ("divide_by", 0, "divide_by must be a finite number > 0, got 0"),
        ("mean", "NaN", "mean must be a finite number, got nan"),
        ("std", "Infinity", "std must be a finite number > 0, got inf"),
        ("std", -0.3, "std must be a finite number > 0, got -0.3"),
        ("mean", True, "must be a number, got 'True'"),
    ],
)
def test_non_finite_normalisation_is_refused(finished_run, tmp_path, field, value, rule):
    """issue 13, items 2 and 3: divide_by 0, mean "NaN", std "Infinity" are refused."""
    folder = copy_run(finished_run, tmp_path / "run")
    edit_metadata(folder, lambda m: m["normalization"].update({field: value}))
    message = rf"checkpoint\.json is damaged: normalization: {rule}; restore it"
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        load_checkpoint(folder)


# --- item 3: checkpoint.json, every field ------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda m: m["architecture"].update(hidden=["Infinity", 256]),
            r"architecture: hidden layer widths must be whole numbers from 1 to 16,384, got "
            r"\[inf, 256\]",
        ),
        (
            lambda m: m["config"].update(hidden=["Infinity", 256]),
            r"config: hidden layer widths must be whole numbers .* got \[inf, 256\]",
        ),
        (lambda m: m["architecture"].update(hidden=[256.7]), r"got \[256\.7\]"),
        (lambda m: m["config"].update(hidden=256), "config: hidden must be a list"),
        (lambda m: m["architecture"].update(num_classes="10"), "num_classes must be at least"),
        (lambda m: m["config"].update(seed=10**30), r"seed must be an integer >= 0 and <= "),
        (lambda m: m["config"].update(lr="Infinity"), r"lr must be a number in \(0\.0, inf\)"),
        (lambda m: m.update(classes=[["0"]] * 10), "classes: must list 10 names"),
        (lambda m: m.update(status="paused"), "status: must be one of running, interrupted"),
        (lambda m: m.update(sha256={"best.safetensors": "00"}), "must be 64 hexadecimal"),
        (lambda m: m.update(sha256={"../x": "0" * 64}), r"names an unknown file '\.\./x'"),
        (lambda m: m.update(sizes={"train": -1}), "sizes: must be counts"),
        (lambda m: m.update(best={"epoch": 1.5}), "best: epoch must be a whole number"),
        (lambda m: m.update(test={"accuracy": "high"}), "test: must be a number, got 'high'"),
        (lambda m: m.update(initial_loss=[2.3]), r"initial_loss: must be a number"),
    ],
)
def test_every_field_of_checkpoint_json_is_checked(finished_run, tmp_path, change, message):
    """issue 13, item 3: wrong types and ranges are clear errors (no OverflowError, no
    rounding of 256.7, no int8 weights)."""
    folder = copy_run(finished_run, tmp_path / "run")
    edit_metadata(folder, change)
    with pytest.raises(ValueError, match=rf"checkpoint\.json is damaged: .*{message}"):
        load_checkpoint(folder)


def test_int8_weights_are_refused(finished_run, tmp_path):
    """issue 13, item 3: the weights must be float32, the dtype of the model's parameters."""
    folder = copy_run(finished_run, tmp_path / "run")
    tensors, _ = rf.load_weights(folder / "best.safetensors")
    replace_weights(folder, "best", {k: v.to(torch.int8) for k, v in tensors.items()})
    with pytest.raises(ValueError, match=r"layers\.\d\.\w+ holds I8 numbers; .* float32 \(F32\)"):
        load_checkpoint(folder)


@pytest.mark.parametrize("depth", [17, 200_000])
def test_deeply_nested_json_is_refused_before_parsing(finished_run, tmp_path, depth):
    """issue 13, item 3: JSON nested 200,000 deep is a clear error, not a RecursionError."""
    folder = copy_run(finished_run, tmp_path / "run")
    nested = "[" * depth + "]" * depth
    text = (folder / rf.METADATA_FILE).read_text()
    (folder / rf.METADATA_FILE).write_text(text[:-2] + f', "x": {nested}}}')
    with pytest.raises(ValueError, match=rf"not valid JSON \(JSON nested {depth + 1:,} deep"):
        load_checkpoint(folder)
    (folder / rf.METADATA_FILE).write_text(text)
    (folder / rf.METRICS_FILE).write_text(nested + "\n")
    with pytest.raises(ValueError, match="line 1 is not JSON: JSON nested"):
        rf.read_metrics(folder)
    weights = folder / "best.safetensors"
    tensors, _ = rf.load_weights(weights)
    save_file(tensors, weights, metadata={HEADER_KEY: nested})
    with pytest.raises(ValueError, match=r"metadata is not JSON \(JSON nested"):
        rf.load_weights(weights)


def test_an_oversized_checkpoint_json_is_refused_unread(finished_run, tmp_path):
    """issue 13, item 3: the size is bounded before the text is read."""
    folder = copy_run(finished_run, tmp_path / "run")
    with (folder / rf.METADATA_FILE).open("r+b") as file:
        file.truncate(rf.MAX_METADATA_BYTES + 1)  # sparse: a megabyte of zeros
    with pytest.raises(
        ValueError, match=r"checkpoint\.json is damaged: 1,048,577 bytes, more than the 1,048,576"
    ):
        load_checkpoint(folder)


# --- item 4: memory before validation ----------------------------------------------------------


def _sparse_safetensors(path: Path, tensors: dict[str, tuple[str, list[int]]], total: int) -> None:
    """A valid safetensors header describing ``tensors`` (dtype, shape), then a sparse data
    region of ``total`` bytes: no disk and no memory used."""
    header, offset = {"__metadata__": {HEADER_KEY: "{}"}}, 0
    for name, (dtype, shape) in tensors.items():
        size = {"F32": 4, "I64": 8}[dtype] * int(torch.tensor(shape).prod())
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    assert offset == total
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with path.open("wb") as file:
        file.write(len(text).to_bytes(8, "little") + text)
        file.truncate(8 + len(text) + total)


def test_huge_and_sparse_files_cost_no_memory(finished_run, paused_run, tmp_path):
    """issue 13, item 4: hidden [20000, 20000] and [10^9], a sparse 6 GB weights file and a
    sparse 6 GB resume file are refused from their headers; the process's peak RSS (measured
    in a fresh process, after a legitimate load) grows by less than 64 MB."""
    six_gb = 6 * 2**30
    wide = copy_run(finished_run, tmp_path / "wide")
    edit_metadata(wide, lambda m: m["architecture"].update(hidden=[20000, 20000]))
    huge = copy_run(finished_run, tmp_path / "huge")
    edit_metadata(huge, lambda m: m["architecture"].update(hidden=[10**9]))
    sparse = copy_run(finished_run, tmp_path / "sparse")
    n = six_gb // 4 // 16
    shapes = {"layers.1.weight": [16, n], "layers.1.bias": [16], "layers.3.weight": [10, 16]}
    shapes |= {"layers.3.bias": [10]}
    _sparse_safetensors(
        sparse / "best.safetensors",
        {k: ("F32", v) for k, v in shapes.items()},
        4 * (16 * n + 16 + 160 + 10),
    )
    resume = copy_run(paused_run, tmp_path / "resume")
    _sparse_safetensors(resume / rf.RESUME_FILE, {"permutation": ("I64", [six_gb // 8])}, six_gb)
    script = f"""
        import resource, torch
        from pathlib import Path
        from logloss.training import TrainConfig
        from logloss.training.checkpoint import load_checkpoint
        from logloss.training.resume import saved_state
        load_checkpoint({str(finished_run)!r})
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        errors = []
        for folder in {[str(wide), str(huge), str(sparse)]!r}:
            try:
                load_checkpoint(folder)
            except ValueError as error:
                errors.append(str(error))
        try:
            saved_state(TrainConfig(**{PAUSED_CONFIG.to_dict()!r}), Path({str(resume)!r}))
        except ValueError as error:
            errors.append(str(error))
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        print(repr((errors, grown)))
        """
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(SOURCES), "PATH": "/usr/bin:/bin"},
        check=True,
    )
    errors, grown_kib = eval(done.stdout.strip().splitlines()[-1])  # our own repr: a tuple
    assert len(errors) == 4, errors
    assert "hidden layer widths must be whole numbers from 1 to 16,384" in errors[0]
    assert "got [1000000000]" in errors[1]
    assert "best.safetensors is damaged: its tensors take 6,442,451,688 bytes" in errors[2]
    assert "its tensors take 6,442,450,944 bytes, more than the" in errors[3]
    assert grown_kib < 64 * 1024, f"peak RSS grew by {grown_kib / 1024:.0f} MB"


def test_the_parameter_cap_is_checked_before_the_model_is_built(finished_run, tmp_path):
    """issue 13, item 4: 16,384 x 16,384 is within the width cap but over 50 million
    parameters: refused by the architecture, before torch allocates 1 GB."""
    folder = copy_run(finished_run, tmp_path / "run")
    edit_metadata(folder, lambda m: m["architecture"].update(hidden=[16384, 16384]))
    with pytest.raises(
        ValueError, match=r"has 269,\d{3},\d{3} parameters, more than the 50,000,000"
    ):
        load_checkpoint(folder)


def test_a_huge_header_length_is_refused_before_reading(finished_run, tmp_path):
    """issue 13, item 4: the 8-byte header length is checked before the header is read."""
    folder = copy_run(finished_run, tmp_path / "run")
    path = folder / "best.safetensors"
    data = bytearray(path.read_bytes())
    data[:8] = (2**60).to_bytes(8, "little")
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="its header claims 1,152,921,504,606,846,976 bytes"):
        load_checkpoint(folder)


# --- item 5: a damaged resume.safetensors ------------------------------------------------------


def _damage_resume(source: Path, target: Path, change) -> Path:
    """A copy of ``source`` whose resume state is ``change(state)`` (or what it returns)."""
    folder = copy_run(source, target)
    state = rf.load_state(folder / rf.RESUME_FILE)
    changed = change(state)
    rf.save_state(folder / rf.RESUME_FILE, state if changed is None else changed)
    return folder


def _header_resume(source: Path, target: Path, header: str) -> Path:
    folder = copy_run(source, target)
    save_file({"x": torch.zeros(1)}, folder / rf.RESUME_FILE, metadata={HEADER_KEY: header})
    return folder


DAMAGES = [
    ("empty", lambda s: {}, "it has no 'config', 'epoch'"),
    ("missing-model", lambda s: s.pop("model") and None, "it has no 'model' entry"),
    ("epoch-string", lambda s: s.update(epoch="1"), "epoch must be a whole number from 0 to 3"),
    ("epoch-huge", lambda s: s.update(epoch=10**9), "epoch must be a whole number from 0 to 3"),
    ("step-huge", lambda s: s.update(step=10**9), r"step \(in an epoch\) must be .* 1 to 20"),
    ("running-null", lambda s: s.update(running=None), "both be null or both be set"),
    (
        "permutation-out-of-range",
        lambda s: s["permutation"].__setitem__(0, 10**9),
        r"permutation must hold each of 0\.\.1316 once",
    ),
    (
        "permutation-short",
        lambda s: s.update(permutation=s["permutation"][:100]),
        r"permutation must be a torch.int64 tensor of shape \[1317\], got .* \[100\]",
    ),
    (
        "running-seen",
        lambda s: s["running"].update(seen=7),
        r"running seen must be a whole number from 320 to 320",
    ),
    (
        "model-shape",
        lambda s: s["model"].update({"layers.1.weight": torch.zeros(3, 64)}),
        r"layers\.1\.weight has shape \[3, 64\], the architecture needs \[16, 64\]",
    ),
    (
        "model-dtype",
        lambda s: s["model"].update({"layers.1.bias": torch.zeros(16, dtype=torch.int8)}),
        r"model layers\.1\.bias must be a torch\.float32 tensor",
    ),
    (
        "rng-size",
        lambda s: s["rng"].update(torch=torch.zeros(10, dtype=torch.uint8)),
        r"rng torch must be a torch\.uint8 tensor of shape \[5056\]",
    ),
    (
        "rng-garbage",
        lambda s: s["rng"].update(shuffle=torch.zeros(5056, dtype=torch.uint8)),
        r"rng shuffle is not a generator's state \(Invalid mt19937 state\)",
    ),
    ("records-bad", lambda s: s.update(records=[{"epoch": "x"}]), "record 1 must hold epoch"),
    ("records-short", lambda s: s.update(records=[]), "records must list the 1 finished epochs"),
    (
        "best-epoch",
        lambda s: s.update(best_epoch=2),
        "best_epoch must be a whole number from 1 to 1",
    ),
    (
        "best-accuracy",
        lambda s: s.update(best_accuracy=1.0),
        "best_accuracy must be the best epoch's validation accuracy",
    ),
    ("elapsed", lambda s: s.update(elapsed=float("inf")), "elapsed must be a finite number"),
    (
        "scheduler-steps",
        lambda s: s["scheduler"].update(total_steps=5),
        r"scheduler total_steps is 5, not 63",
    ),
    (
        "scheduler-position",
        lambda s: s["scheduler"].update(last_epoch=10**9),
        r"scheduler last_epoch is 1000000000, not 26",
    ),
    (
        "scheduler-bogus",
        lambda s: s.update(scheduler={"x": 1}),
        "scheduler must hold _anneal_func_type, .*, use_beta1;",
    ),
    (
        "optimizer-lr",
        lambda s: s["optimizer"]["param_groups"][0].update(lr=float("nan")),
        "optimizer lr must be finite, got nan",
    ),
    (
        "optimizer-decay",
        lambda s: s["optimizer"]["param_groups"][0].update(weight_decay=0.5),
        "optimizer weight_decay is 0.5, not 0.01",
    ),
    (
        "optimizer-steps",
        lambda s: s["optimizer"]["state"][0].update(step=torch.tensor(3.0)),
        "optimizer state 0 counts 3.0 steps, not 26",
    ),
    (
        "optimizer-moment",
        lambda s: s["optimizer"]["state"][1].update(exp_avg=torch.zeros(2)),
        r"optimizer state 1 exp_avg must be a torch\.float32 tensor of shape \[16\]",
    ),
]


@pytest.mark.parametrize(("name", "change", "message"), DAMAGES, ids=[d[0] for d in DAMAGES])
def test_a_damaged_resume_state_is_refused(paused_run, tmp_path, name, change, message):
    """issue 13, item 5: metadata {}, a missing model, wrong shapes or RNG state, bad records,
    running: null, a permutation out of range or short, an epoch as a string, epoch or step
    10^9, a bogus scheduler state: each is refused before any of it is used."""
    folder = _damage_resume(paused_run, tmp_path / name, change)
    path = folder / rf.RESUME_FILE
    with pytest.raises(ValueError, match=rf"{path} is damaged: .*{message}.*start a new run"):
        saved_state(PAUSED_CONFIG, folder)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m.pop("sizes"), "it has no 'sizes' entry"),
        (lambda m: m["sizes"].pop("train"), "sizes has no training set size"),
        (lambda m: m["architecture"].update(hidden=[8]), "is not that of its config"),
    ],
)
def test_resume_needs_a_consistent_checkpoint_json(paused_run, tmp_path, change, message):
    """issue 13, item 5: the sizes and the architecture the state is checked against come from
    checkpoint.json: they must be there and agree with its options."""
    folder = copy_run(paused_run, tmp_path / "run")
    edit_metadata(folder, change)
    with pytest.raises(ValueError, match=rf"checkpoint\.json is damaged: .*{message}"):
        saved_state(PAUSED_CONFIG, folder)


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("[1, 2]", "is damaged: it holds a list, not a run's state"),
        ("[" * 20_000, "is damaged: .*JSON nested 20,000 deep, deeper than the 16 allowed"),
        (
            "[" * 200_000,
            "is not a readable .* header claims 200,088 bytes, more than the 68,608 allowed",
        ),
    ],
)
def test_a_resume_state_that_is_not_an_object_is_refused(paused_run, tmp_path, header, message):
    """issue 13, item 5: a list, or deep nesting, in the resume state's metadata (200,000 deep
    is too long for a run of 3 epochs before its depth is even looked at)."""
    folder = _header_resume(paused_run, tmp_path / "run", header)
    with pytest.raises(ValueError, match=rf"resume\.safetensors {message}"):
        saved_state(PAUSED_CONFIG, folder)


HOSTILE = [None, [], {}, "1", "NaN", 10**30, -1, True, 2.5, [[[]]], {"a": 1}]
HOSTILE_TENSORS = [torch.zeros(3), torch.zeros((), dtype=torch.int64), torch.tensor(float("nan"))]


def _paths(value, prefix=()):
    """Every place in a nested state of dicts and lists (tensors and tuples are leaves)."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*prefix, index))


def _put(state, path, value):
    for key in path[:-1]:
        state = state[key]
    state[path[-1]] = value


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_no_change_to_a_resume_state_gives_a_traceback(paused_run, data):
    """issue 13, item 5: any value (JSON or tensor) anywhere in the state is used as saved or
    refused with a ValueError, never another exception."""
    state = rf.load_state(paused_run / rf.RESUME_FILE)
    path = data.draw(st.sampled_from(list(_paths(state))[1:]), label="path")
    value = data.draw(st.sampled_from(HOSTILE + HOSTILE_TENSORS), label="value")
    _put(state, path, value)
    with tempfile.TemporaryDirectory() as temporary:
        folder = copy_run(paused_run, Path(temporary) / "run")
        rf.save_state(folder / rf.RESUME_FILE, state)
        with contextlib.suppress(ValueError):
            saved_state(PAUSED_CONFIG, folder)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_no_change_to_checkpoint_json_gives_a_traceback(finished_run, data):
    """issue 13, item 3: any value anywhere in checkpoint.json is accepted or refused with a
    ValueError, by every reader."""
    metadata = json.loads((finished_run / rf.METADATA_FILE).read_text())
    path = data.draw(st.sampled_from(list(_paths(metadata))[1:]), label="path")
    _put(metadata, path, data.draw(st.sampled_from(HOSTILE), label="value"))
    with tempfile.TemporaryDirectory() as temporary:
        folder = copy_run(finished_run, Path(temporary) / "run")
        (folder / rf.METADATA_FILE).write_text(json.dumps(metadata))
        for read in (load_checkpoint, rf.read_metrics, lambda f: saved_state(PAUSED_CONFIG, f)):
            with contextlib.suppress(ValueError):
                read(folder)


def test_train_resume_prints_one_line_for_a_damaged_state(paused_run, tmp_path, capsys):
    """issue 13, item 5: through the command line, one line and exit status 2."""
    folder = _damage_resume(paused_run, tmp_path / "run", lambda s: s.update(epoch=10**9))
    err = cli_error(["train", "--out", str(folder), "--resume"], capsys)
    assert "resume.safetensors is damaged: epoch must be a whole number from 0 to 3" in err
    assert rf.read_metadata(folder)["status"] == "interrupted"  # the run was left as it was


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"optimizer": "sgd", "schedule": "cosine", "dropout": 0.1},
        {"optimizer": "sgd", "momentum": 0.0, "schedule": "constant"},
    ],
)
def test_legitimate_states_pass_and_resume(tmp_path, options):
    """The validation accepts every state a run saves (each optimiser and schedule), at an
    epoch boundary and mid-epoch, and the run then resumes to its end."""
    config = TrainConfig(**{**DIGITS, "epochs": 2, **options})
    for stop in (STEPS_PER_EPOCH, STEPS_PER_EPOCH + 4):
        folder = tmp_path / f"stop-{stop}"
        train(config, out_dir=folder, should_stop=lambda step, stop=stop: step == stop)
        assert saved_state(config, folder)["step"] == stop - STEPS_PER_EPOCH
        assert train(config, out_dir=folder, resume=True).status == "finished"


# --- item 10: no dead-end run folder -----------------------------------------------------------


class Killed(BaseException):
    """Stands for kill -9: nothing after it runs, no handler catches it."""


def _kill_at_write(monkeypatch: pytest.MonkeyPatch, number: int) -> list[str]:
    """Make the ``number``-th atomic write (0-based) never happen, and the process stop there."""
    real, written = logloss._atomic.atomic_write, []

    @contextlib.contextmanager
    def dying(path):
        if len(written) == number:
            raise Killed(path)
        written.append(Path(path).name)
        with real(path) as handle:
            yield handle

    monkeypatch.setattr(logloss._atomic, "atomic_write", dying)
    return written


@pytest.mark.parametrize("killed_at", [0, 1, 2, 3])
def test_a_run_killed_while_starting_can_be_continued(tmp_path, monkeypatch, capsys, killed_at):
    """issue 13, item 10: killed at each write of a run's start (initial weights, resume state,
    checkpoint.json, the first epoch's weights), the folder is never a dead end: `train` starts
    it again, or `train --resume` continues it, and the other command says which to use."""
    folder = tmp_path / "run"
    argv = ["train", "--dataset", "digits", "--hidden", "16", "--epochs", "1", "--out", str(folder)]
    with monkeypatch.context() as patch:
        written = _kill_at_write(patch, killed_at)
        with pytest.raises(Killed):
            main(argv)
    started = (folder / rf.METADATA_FILE).exists()
    assert written == ["initial.safetensors", "resume.safetensors", "checkpoint.json"][:killed_at]
    assert started == (killed_at == 3)
    capsys.readouterr()
    if started:
        assert "already holds a training run: pass --resume" in cli_error(argv, capsys)
        assert main([*argv, "--resume"]) == 0
    else:
        err = cli_error([*argv, "--resume"], capsys)
        if killed_at == 2:  # a resume state without checkpoint.json: say to start again
            assert "the run there was stopped before its first step" in err
            assert f"start it again with `logloss train --out {folder}` (without --resume)" in err
        assert main(argv) == 0
    assert rf.read_metadata(folder)["status"] == "finished"


def test_a_dead_end_folder_of_earlier_versions_starts_again(finished_run, tmp_path, capsys):
    """issue 13, item 10: a folder with resume.safetensors and initial.safetensors but no
    checkpoint.json (what a run killed in that window left before) is not a run: `train` starts
    over in it."""
    folder = copy_run(finished_run, tmp_path / "run")
    (folder / rf.METADATA_FILE).unlink()
    argv = ["train", "--dataset", "digits", "--hidden", "16", "--epochs", "1", "--out", str(folder)]
    assert "nothing to resume" in cli_error([*argv, "--resume"], capsys)
    assert main(argv) == 0
    assert rf.read_metadata(folder)["status"] == "finished"


# --- item 11: a full disk, flipped bytes -------------------------------------------------------


class FullDisk:
    """A file handle whose writes fail as on a full disk."""

    def write(self, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_names_the_file(tmp_path, monkeypatch, capsys):
    """issue 13, item 11: ENOSPC while train writes last.safetensors: one line naming the file,
    no temporary file left, and the run resumes once there is space."""
    folder = tmp_path / "run"
    real = logloss._atomic.atomic_write

    @contextlib.contextmanager
    def full_disk_for_last(path):
        with real(path) as handle:
            yield FullDisk() if Path(path).name == "last.safetensors" else handle

    argv = ["train", "--dataset", "digits", "--hidden", "16", "--epochs", "2", "--out", str(folder)]
    with monkeypatch.context() as patch:
        patch.setattr(logloss._atomic, "atomic_write", full_disk_for_last)
        err = cli_error(argv, capsys)
    expected = f"cannot use {folder / 'last.safetensors'}: No space left on device"
    assert expected in err
    assert not list(folder.glob(".*.part"))  # the temporary file was removed
    assert not (folder / "last.safetensors").exists()
    assert main([*argv, "--resume"]) == 0
    assert rf.read_metadata(folder)["status"] == "finished"


def test_a_full_disk_names_the_file_for_every_write(tmp_path, monkeypatch):
    """issue 13, item 11: flush, fsync and rename errors name the target too."""
    monkeypatch.setattr(
        logloss._atomic.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.ENOSPC, "x"))
    )
    with pytest.raises(OSError, match=r"x \(the file was not changed\)") as raised:
        logloss._atomic.write_text_atomic(tmp_path / "a.json", "{}")
    assert (raised.value.errno, raised.value.filename) == (errno.ENOSPC, str(tmp_path / "a.json"))
    assert list(tmp_path.iterdir()) == []


def test_checkpoint_json_records_the_sha256_of_each_weights_file(finished_run, paused_run):
    """issue 13, item 11: the digests equal hashlib's over the files, also mid-run."""
    for folder, names in ((finished_run, ("initial", "last", "best")), (paused_run, ("best",))):
        recorded = rf.read_metadata(folder)["sha256"]
        for which in names:
            path = folder / rf.WEIGHT_FILES[which]
            assert recorded[path.name] == hashlib.sha256(path.read_bytes()).hexdigest()
            load_checkpoint(folder, which=which)


def test_flipped_bytes_in_the_weights_are_detected(finished_run, tmp_path, capsys):
    """issue 13, item 11: one flipped bit in a tensor is a clear error naming the file;
    a checkpoint written before hashes (no sha256 entry) still loads."""
    folder = copy_run(finished_run, tmp_path / "run")
    path = folder / "best.safetensors"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x40  # in the last tensor's data: an exponent bit of a float32
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"best\.safetensors is damaged: its SHA-256 differs"):
        load_checkpoint(folder)
    err = cli_error(["evaluate", "--checkpoint", str(folder)], capsys)
    assert "best.safetensors is damaged: its SHA-256 differs" in err

    old = copy_run(finished_run, tmp_path / "old")
    edit_metadata(old, lambda m: m.pop("sha256"))
    assert load_checkpoint(old).which == "best"
