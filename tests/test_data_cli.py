"""``logloss data list|fetch|show`` and the shared ``--data-dir``/``--dataset`` options."""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from logloss.cli import main
from logloss.cli.data import DATASET_NAMES, add_data_arguments
from logloss.data import DATASETS


@pytest.fixture
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.delenv("LOGLOSS_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "logloss"


def _raw_test_set(data_dir: Path) -> tuple[bytes, bytes]:
    """MNIST's test images and labels decoded by hand: 16- and 8-byte headers, then pixels."""
    folder = data_dir / "mnist"
    images = gzip.decompress((folder / "t10k-images-idx3-ubyte.gz").read_bytes())[16:]
    labels = gzip.decompress((folder / "t10k-labels-idx1-ubyte.gz").read_bytes())[8:]
    return images, labels


def test_dataset_names_match_the_registry() -> None:
    assert tuple(DATASETS) == DATASET_NAMES


def test_add_data_arguments() -> None:
    parser = argparse.ArgumentParser()
    add_data_arguments(parser, default_dataset="digits")
    args = parser.parse_args([])
    assert (args.data_dir, args.dataset) == (None, "digits")
    args = parser.parse_args(["--data-dir", "/x", "--dataset", "kmnist"])
    assert (args.data_dir, args.dataset) == (Path("/x"), "kmnist")
    with pytest.raises(SystemExit):
        parser.parse_args(["--dataset", "cifar10"])
    only_dir = argparse.ArgumentParser()
    add_data_arguments(only_dir, dataset=False)
    assert not hasattr(only_dir.parse_args([]), "dataset")


def test_list_json(data_dir: Path, isolated: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "list", "--json", "--data-dir", str(data_dir)]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert list(rows) == list(DATASET_NAMES)
    assert rows["mnist"]["source"] == "--data-dir"
    assert rows["mnist"]["path"] == str(data_dir.absolute() / "mnist")
    assert rows["mnist"]["cached"] is False
    assert rows["kmnist"]["found"] is False
    assert rows["kmnist"]["download_to"] == str(data_dir.absolute() / "kmnist")
    assert rows["digits"]["source"] == "bundled"
    assert main(["data", "list", "--json"]) == 0  # without --data-dir: downloads go to the cache
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["kmnist"]["download_to"] == str(isolated / "kmnist")
    assert rows["mnist"]["found"] is False


def test_list_table(data_dir: Path, isolated: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "list", "--data-dir", str(data_dir)]) == 0
    out = capsys.readouterr().out
    for name in DATASET_NAMES:
        assert name in out
    assert "bundled" in out
    assert "not found" in out


def test_show_text_art_and_label(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    images, labels = _raw_test_set(data_dir)
    index = 1234
    assert main(["data", "show", "mnist", "--index", str(index), "--split", "test",
                 "--data-dir", str(data_dir)]) == 0  # fmt: skip
    lines = capsys.readouterr().out.splitlines()
    pixels = np.frombuffer(images, np.uint8)[index * 784 : (index + 1) * 784].reshape(28, 28)
    art = lines[:28]
    assert all(len(line) == 56 for line in art)
    for row, line in zip(pixels, art, strict=True):
        for value, cell in zip(row, line[::2], strict=True):
            assert cell == " .:-=+*#%@"[int(value) * 10 // 256]
    assert lines[28] == f"mnist test[{index}]  label: {labels[index]}"


def test_show_png_and_json(data_dir: Path, tmp_path: Path, capsys) -> None:
    images, labels = _raw_test_set(data_dir)
    png = tmp_path / "digit.png"
    argv = ["data", "show", "mnist", "--index", "7", "--split", "test", "--png", str(png)]
    assert main([*argv, "--scale", "3", "--json", "--data-dir", str(data_dir)]) == 0
    record = json.loads(capsys.readouterr().out)
    pixels = np.frombuffer(images, np.uint8)[7 * 784 : 8 * 784].reshape(28, 28)
    assert record["label"] == labels[7]
    assert record["image"] == pixels.tolist()
    with Image.open(png) as image:
        assert image.mode == "L"
        written = np.asarray(image)
    assert written.shape == (84, 84)
    np.testing.assert_array_equal(written[::3, ::3], pixels)
    np.testing.assert_array_equal(written[2::3, 1::3], pixels)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digit.png"]  # no temporary left


def test_show_fashion_class_name(tmp_path: Path, isolated: Path, capsys) -> None:
    from logloss.data import write_idx

    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    write_idx(folder / "t10k-images-idx3-ubyte.gz", np.zeros((2, 28, 28), np.uint8))
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.array([0, 9], np.uint8))
    argv = ["data", "show", "fashion-mnist", "--index", "1", "--split", "test"]
    assert main([*argv, "--data-dir", str(tmp_path)]) == 0
    assert "label: 9 (Ankle boot)" in capsys.readouterr().out


def test_show_digits_offline(isolated: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sklearn.datasets import load_digits

    assert main(["data", "show", "digits", "--index", "5"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out[0]) == 16
    assert out[8] == f"digits train[5]  label: {load_digits().target[5]}"


def test_show_index_out_of_range(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["data", "show", "mnist", "--index", "10000", "--split", "test"]
    assert main([*argv, "--data-dir", str(data_dir)]) == 2
    assert capsys.readouterr().err.strip() == (
        "logloss: error: --index 10000 is out of range: the test split of mnist has 10000 "
        "images, numbered 0 to 9999"
    )


def test_show_bad_scale_writes_nothing(isolated: Path, tmp_path: Path, capsys) -> None:
    argv = ["data", "show", "digits", "--index", "0", "--png", str(tmp_path / "a.png")]
    assert main([*argv, "--scale", "0"]) == 2
    assert "scale must be an integer from 1 to 64, got 0" in capsys.readouterr().err
    assert not (tmp_path / "a.png").exists()


def test_missing_dataset_is_one_clear_error(
    isolated: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    from logloss.data import MIRRORS

    monkeypatch.setitem(MIRRORS, "kmnist", ["http://127.0.0.1:1/"])
    argv = ["data", "show", "kmnist", "--index", "0", "--data-dir", str(tmp_path / "d")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("logloss: error: dataset 'kmnist' (train split) not found")
    assert "http://127.0.0.1:1/train-images-idx3-ubyte.gz" in err
    assert "--data-dir DIR" in err
    assert not (tmp_path / "d").exists()


def test_fetch_bundled_and_present(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "fetch", "digits"]) == 0
    assert "ships with logloss" in capsys.readouterr().out
    assert main(["data", "fetch", "mnist", "--data-dir", str(data_dir)]) == 0
    assert f"already present: {data_dir.absolute() / 'mnist'}" in capsys.readouterr().out


# ---- issue 14: one line for a missing dataset, --verbose for the places tried; fetch --json ----


def test_missing_dataset_is_one_line_and_verbose_adds_the_places(
    isolated: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """issue 14: the data-not-found error was 12 lines; now one, and --verbose lists the rest."""
    from logloss.data import MIRRORS

    monkeypatch.delenv("LOGLOSS_MIRRORS", raising=False)
    monkeypatch.setitem(MIRRORS, "kmnist", ["http://127.0.0.1:1/"])
    argv = ["data", "show", "kmnist", "--index", "0", "--data-dir", str(tmp_path / "d")]
    assert main(argv) == 2
    short = capsys.readouterr().err
    assert short.count("\n") == 1
    assert short.startswith(
        f"logloss: error: dataset 'kmnist' (train split) not found, and downloading into "
        f"{tmp_path / 'd' / 'kmnist'} failed: 2 files could not be downloaded "
        "(train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz); could not download a verified "
        "copy of train-images-idx3-ubyte.gz: http://127.0.0.1:1/train-images-idx3-ubyte.gz: "
        "URLError: "
    )
    assert short.rstrip().endswith("(--verbose, or .details in Python, lists the places tried)")
    assert main([*argv, "--verbose"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == short.rstrip()
    assert lines[1:5] == [
        "looked for train-images-idx3-ubyte.gz and train-labels-idx1-ubyte.gz in:",
        f"  --data-dir: {tmp_path / 'd' / 'kmnist'} (missing)",
        "  LOGLOSS_DATA: (not set)",
        f"  user cache: {isolated / 'kmnist'} (missing)",
    ]
    assert lines[5] == "train-images-idx3-ubyte.gz: tried"
    assert lines[6].startswith("  http://127.0.0.1:1/train-images-idx3-ubyte.gz: URLError: ")
    assert lines[7] == "train-labels-idx1-ubyte.gz: tried"
    assert lines[8].startswith("  http://127.0.0.1:1/train-labels-idx1-ubyte.gz: URLError: ")
    assert len(lines) == 9
    assert not (tmp_path / "d").exists()


def test_verbose_is_a_shared_data_argument() -> None:
    parser = argparse.ArgumentParser()
    add_data_arguments(parser, dataset=False)
    assert parser.parse_args([]).verbose is False
    assert parser.parse_args(["--verbose"]).verbose is True


def test_fetch_json_when_present(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """issue 14: `data fetch --json` gives the folder and each file's size and SHA-256."""
    assert main(["data", "fetch", "mnist", "--data-dir", str(data_dir), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    folder = data_dir.absolute() / "mnist"
    assert (record["dataset"], record["folder"], record["status"]) == (
        "mnist",
        str(folder),
        "present",
    )
    published = {f.name: f.sha256 for f in DATASETS["mnist"].all_files}
    assert [f["name"] for f in record["files"]] == list(published)
    for entry in record["files"]:
        content = (folder / entry["name"]).read_bytes()
        assert entry["bytes"] == len(content)
        assert entry["sha256"] == hashlib.sha256(content).hexdigest()
        # The shared training images are a rebuilt copy (see docs/data.md); the rest are official.
        official = entry["name"] != "train-images-idx3-ubyte.gz"
        assert entry["matches_published_sha256"] is official
        assert entry["status"] == "present"


def test_fetch_json_bundled(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "fetch", "digits", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "dataset": "digits",
        "folder": None,
        "status": "bundled",
        "files": [],
    }


def test_fetch_help_documents_the_mirrors_variable_and_the_limits(capsys) -> None:
    """issue 13, item 9: LOGLOSS_MIRRORS is documented in `logloss data fetch --help`, with the
    limits that DownloadLimits really applies."""
    from logloss.cli.data import MIRRORS_ENV_VAR as CLI_MIRRORS_ENV_VAR
    from logloss.data import MIRRORS_ENV_VAR, DownloadLimits

    with pytest.raises(SystemExit):
        main(["data", "fetch", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert CLI_MIRRORS_ENV_VAR == MIRRORS_ENV_VAR == "LOGLOSS_MIRRORS"
    assert "LOGLOSS_MIRRORS replaces the built-in mirrors" in text
    limits = DownloadLimits()
    assert f"slower than {limits.min_rate / 1024:g} KiB/s (over {limits.rate_window:g} s)" in text
    assert f"longer than {limits.deadline / 60:g} minutes" in text


def help_text(command: str) -> str:
    from logloss.cli import build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command")
    return " ".join(subparsers.choices[command].format_help().split())


def test_data_options_say_what_each_command_does():
    # issue 14: serve never downloads and browses only 28x28 datasets; train downloads.
    serve, train = help_text("serve"), help_text("train")
    assert "this command never downloads" in serve
    assert "downloads go here" not in serve
    assert "digits" not in serve.split("--dataset NAME", 1)[1]
    assert "downloads go here when given" in train
    assert "digits is bundled and works offline" in train
