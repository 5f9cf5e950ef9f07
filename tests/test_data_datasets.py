"""load_dataset on the real MNIST, the bundled digits, data folder resolution and the split."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from logloss.data import (
    DATASETS,
    DatasetNotFoundError,
    IDXFormatError,
    find_dataset,
    load_dataset,
    resolve_data_dir,
    sha256_file,
    split_train_validation,
    user_cache_dir,
    write_idx,
)

# Published per-class counts of MNIST (e.g. torchvision's and TFDS's dataset statistics).
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
# md5 sums of the official files as torchvision publishes them (and ../shared/data/mnist/README.md).
MNIST_MD5 = {
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
}


@pytest.fixture
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No LOGLOSS_DATA, an empty user cache under tmp_path; returns the cache's data folder."""
    monkeypatch.delenv("LOGLOSS_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "logloss"


# ---- the real MNIST ----


def test_mnist_test_split(data_dir: Path) -> None:
    images, labels = load_dataset("mnist", "test", data_dir=data_dir, download=False)
    assert images.shape == (10000, 28, 28)
    assert images.dtype == labels.dtype == np.uint8
    assert labels.shape == (10000,)
    assert np.bincount(labels, minlength=10).tolist() == MNIST_TEST_COUNTS
    assert images.min() == 0
    assert images.max() == 255


def test_mnist_train_split(data_dir: Path) -> None:
    images, labels = load_dataset("mnist", "train", data_dir=data_dir, download=False)
    assert images.shape == (60000, 28, 28)
    assert np.bincount(labels, minlength=10).tolist() == MNIST_TRAIN_COUNTS
    assert images.flags.writeable
    assert labels.flags.writeable


@pytest.mark.parametrize("name", sorted(MNIST_MD5))
def test_official_mnist_files_match_both_published_checksums(data_dir: Path, name: str) -> None:
    # The shared files are the official bytes: their md5 (torchvision) and SHA-256 (TFDS, in our
    # registry) must both match, which cross-checks the registry against an independent source.
    path = data_dir / "mnist" / name
    assert hashlib.md5(path.read_bytes()).hexdigest() == MNIST_MD5[name]
    published = {f.name: f for f in DATASETS["mnist"].all_files}[name]
    assert sha256_file(path) == published.sha256
    assert path.stat().st_size == published.size


def test_mnist_is_read_through_the_environment_variable(
    data_dir: Path, isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOGLOSS_DATA", str(data_dir))
    images, _ = load_dataset("mnist", "test", download=False)
    assert images.shape == (10000, 28, 28)
    assert find_dataset("mnist", "test")[0].source == "LOGLOSS_DATA"
    assert resolve_data_dir(dataset="mnist") == data_dir.absolute()


# ---- resolution order and the offline message ----


def _fake_dataset(root: Path, name: str = "mnist", n: int = 3, fill: int = 7) -> None:
    info = DATASETS[name]
    (root / name).mkdir(parents=True)
    for split in ("train", "test"):
        image_file, label_file = info.files[split]
        write_idx(root / name / image_file.name, np.full((n, 28, 28), fill, np.uint8))
        write_idx(root / name / label_file.name, np.arange(n, dtype=np.uint8))


def test_resolution_order(isolated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    explicit, env = tmp_path / "explicit", tmp_path / "env"
    _fake_dataset(explicit, fill=1)
    _fake_dataset(env, fill=2)
    _fake_dataset(isolated, fill=3)
    monkeypatch.setenv("LOGLOSS_DATA", str(env))

    def fill(**kwargs) -> int:
        return int(load_dataset("mnist", "test", download=False, **kwargs)[0][0, 0, 0])

    assert fill(data_dir=explicit) == 1
    assert fill() == 2
    monkeypatch.delenv("LOGLOSS_DATA")
    assert fill() == 3
    assert fill(data_dir=tmp_path / "empty") == 3  # falls through to the cache
    assert resolve_data_dir(str(explicit)) == explicit


def test_user_cache_honours_xdg(isolated: Path) -> None:
    assert user_cache_dir() == isolated


def test_offline_with_no_data_says_where_it_looked(isolated: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as caught:
        load_dataset("fashion-mnist", "test", data_dir=tmp_path / "mine", download=False)
    # issue 14: one line saying what to do; the places tried are in .details (--verbose).
    assert str(caught.value) == (
        "dataset 'fashion-mnist' (test split) not found (downloading was off); run `logloss "
        "data fetch fashion-mnist`, or put the original .gz files in DIR/fashion-mnist/ and pass "
        "--data-dir DIR (data_dir=DIR in Python) or set LOGLOSS_DATA=DIR (--verbose, or .details "
        "in Python, lists the places tried)"
    )
    assert caught.value.details.splitlines() == [
        "looked for t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz in:",
        f"  --data-dir: {tmp_path / 'mine' / 'fashion-mnist'} (missing)",
        "  LOGLOSS_DATA: (not set)",
        f"  user cache: {isolated / 'fashion-mnist'} (missing)",
    ]
    assert isinstance(caught.value, ValueError)
    assert not isolated.exists()  # looking created nothing


def test_wrong_contents_are_reported_with_the_file(isolated: Path, tmp_path: Path) -> None:
    _fake_dataset(tmp_path)
    images = tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz"
    write_idx(images, np.zeros((3, 8, 8), np.uint8))
    with pytest.raises(IDXFormatError, match=r"t10k-images-idx3-ubyte\.gz: expected uint8 images"):
        load_dataset("mnist", "test", data_dir=tmp_path)
    write_idx(images, np.zeros((3, 28, 28), np.uint8))
    write_idx(tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz", np.array([0, 10, 1], np.uint8))
    with pytest.raises(IDXFormatError, match=r"label 10 is outside 0\.\.9"):
        load_dataset("mnist", "test", data_dir=tmp_path)


@pytest.mark.parametrize(
    ("name", "split", "message"),
    [
        ("cifar10", "test", "unknown dataset 'cifar10'; choose one of: mnist"),
        ("mnist", "validation", "unknown split 'validation'; choose one of: train, test"),
    ],
)
def test_bad_names(name: str, split: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_dataset(name, split)


# ---- the bundled, offline digits ----


def test_digits_match_scikit_learn_offline(isolated: Path) -> None:
    from sklearn.datasets import load_digits

    reference = load_digits()
    train_x, train_y = load_dataset("digits", "train", download=False)
    test_x, test_y = load_dataset("digits", "test", download=False)
    assert train_x.shape == (1437, 8, 8)
    assert test_x.shape == (360, 8, 8)
    # 0..16 counts scaled to 0..255, rounding half up: e.g. 8 -> 127.5 -> 128, 16 -> 255.
    expected = np.floor(reference.images * 255 / 16 + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(np.concatenate([train_x, test_x]), expected)
    np.testing.assert_array_equal(np.concatenate([train_y, test_y]), reference.target)
    assert train_x.dtype == train_y.dtype == np.uint8
    assert not isolated.exists()


# ---- split_train_validation ----


def test_split_partitions_the_training_set() -> None:
    images = np.arange(100 * 4).reshape(100, 2, 2)
    labels = np.arange(100) % 10
    tx, ty, vx, vy = split_train_validation(images, labels, validation_size=0.2, seed=7)
    assert (len(tx), len(vx)) == (80, 20)
    ids = np.concatenate([tx[:, 0, 0], vx[:, 0, 0]]) // 4
    assert sorted(ids.tolist()) == list(range(100))  # a partition: nothing lost or repeated
    np.testing.assert_array_equal(ty, labels[tx[:, 0, 0] // 4])  # images stay with labels
    np.testing.assert_array_equal(vy, labels[vx[:, 0, 0] // 4])
    assert np.all(np.diff(tx[:, 0, 0]) > 0)  # original order kept
    # The chosen samples are the first k of default_rng(seed).permutation(N), computed here.
    chosen = np.random.default_rng(7).permutation(100)[:20]
    assert sorted((vx[:, 0, 0] // 4).tolist()) == sorted(chosen.tolist())


def test_split_is_deterministic_and_seed_dependent() -> None:
    x, y = np.arange(50), np.arange(50)
    a = split_train_validation(x, y, validation_size=10, seed=1)
    b = split_train_validation(x, y, validation_size=10, seed=1)
    c = split_train_validation(x, y, validation_size=10, seed=2)
    for left, right in zip(a, b, strict=True):
        np.testing.assert_array_equal(left, right)
    assert not np.array_equal(a[2], c[2])
    assert not np.shares_memory(a[0], x)


@pytest.mark.parametrize(
    ("size", "message"),
    [
        (50, "must leave at least one training sample"),
        (-1, "must leave at least one training sample"),
        (1.0, "strictly between 0 and 1"),
        (0.0, "strictly between 0 and 1"),
        (0.999, "leaves no training sample"),
        (True, "a count or a fraction"),
        ("0.1", "a count or a fraction"),
    ],
)
def test_split_rejects_bad_sizes(size, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        split_train_validation(np.arange(50), np.arange(50), validation_size=size, seed=0)


def test_split_rejects_mismatched_inputs() -> None:
    with pytest.raises(ValueError, match=r"images of shape \(5,\) and labels of shape \(4,\)"):
        split_train_validation(np.arange(5), np.arange(4), validation_size=1, seed=0)
    with pytest.raises(ValueError, match="seed must be an integer"):
        split_train_validation(np.arange(5), np.arange(5), validation_size=1, seed=1.5)


def test_paths_may_be_strings(data_dir: Path) -> None:
    images, _ = load_dataset("mnist", "test", data_dir=os.fspath(data_dir), download=False)
    assert images.shape == (10000, 28, 28)


def test_naming_the_dataset_folder_itself_gets_a_hint(
    isolated: Path, data_dir: Path, tmp_path: Path
) -> None:
    with pytest.raises(DatasetNotFoundError) as caught:
        load_dataset("mnist", "test", data_dir=data_dir / "mnist", download=False)
    assert f"name the folder above it ({data_dir.absolute()})" in str(caught.value)


def test_unwritable_download_folder_is_a_clear_error(isolated: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")  # a file where the data folder should be: mkdir fails
    with pytest.raises(DatasetNotFoundError, match=r"cannot create the folder .*file/mnist"):
        load_dataset("mnist", "test", data_dir=blocker)
