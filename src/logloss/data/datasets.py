"""Load a dataset split as uint8 arrays, and carve a seeded validation set from a training set."""

from __future__ import annotations

import importlib.resources
import numbers
import os
from pathlib import Path

import numpy as np

from logloss.data.download import download_dataset
from logloss.data.errors import DataError, DatasetNotFoundError, IDXFormatError
from logloss.data.idx import read_idx
from logloss.data.locations import ENV_VAR, download_root, find_dataset, search_path
from logloss.data.registry import SPLITS, DatasetInfo, get_dataset

__all__ = ["DIGITS_TEST_SIZE", "load_dataset", "split_train_validation"]

# digits: the last 360 of the 1797 samples (20%) are the test split, the first 1437 the training
# split.  The samples are stored writer by writer, so a contiguous cut keeps most writers on one
# side, as MNIST's writer-disjoint split does.
DIGITS_TEST_SIZE = 360
_DIGITS_FILES = ("digits-images-idx3-ubyte.gz", "digits-labels-idx1-ubyte.gz")


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")


def _load_digits(split: str) -> tuple[np.ndarray, np.ndarray]:
    # Bundled as IDX with the original 0..16 counts of "on" pixels per 4x4 block; rescaled to
    # 0..255 (round half up) so that every dataset has MNIST's value range.
    folder = importlib.resources.files("logloss.data") / "bundled" / "digits"
    arrays = []
    for name in _DIGITS_FILES:
        with importlib.resources.as_file(folder / name) as path:
            arrays.append(read_idx(path))
    counts, labels = arrays
    images = ((counts.astype(np.uint16) * 255 + 8) // 16).astype(np.uint8)
    cut = len(labels) - DIGITS_TEST_SIZE
    part = slice(None, cut) if split == "train" else slice(cut, None)
    return images[part].copy(), labels[part].copy()


def _validated(
    info: DatasetInfo, images: np.ndarray, labels: np.ndarray, files: tuple[Path, Path]
) -> tuple[np.ndarray, np.ndarray]:
    # Files found locally are not checksummed, so check they hold what the dataset promises.
    image_file, label_file = files
    expected = (len(labels), *info.image_shape)
    if images.dtype != np.uint8 or images.shape != expected:
        raise IDXFormatError(
            f"{image_file}: expected uint8 images of shape {expected} (one per label in "
            f"{label_file.name}), found {images.dtype} {images.shape}"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise IDXFormatError(
            f"{label_file}: expected a 1-D uint8 array of labels, found {labels.dtype} "
            f"{labels.shape}"
        )
    if labels.size and labels.max() >= len(info.classes):
        raise IDXFormatError(
            f"{label_file}: label {labels.max()} is outside 0..{len(info.classes) - 1}"
        )
    return images, labels


def _not_found(
    name: str, split: str, data_dir: str | os.PathLike[str] | None, failure: DataError | None
) -> DatasetNotFoundError:
    """One line saying what is missing and what to do; ``details``: every place looked in, and
    every download attempt when ``failure`` (the download's error) is given."""
    info = get_dataset(name)
    wanted = " and ".join(f.name for f in info.files[split])
    places = [f"looked for {wanted} in:"]
    misplaced = None  # a common slip: naming the dataset's own folder
    for location in search_path(data_dir):
        place = f"{location.root / name} (missing)" if location.root else "(not set)"
        places.append(f"  {location.source}: {place}")
        if location.root and (location.root / info.files[split][0].name).is_file():
            misplaced = misplaced or location.root
    if failure is None:
        problem = "not found (downloading was off)"
    else:
        problem = (
            f"not found, and downloading into {download_root(data_dir) / name} failed: {failure}"
        )
    if misplaced is not None:
        fix = f"{misplaced} itself holds the files: name the folder above it ({misplaced.parent})"
    else:
        fix = (
            f"run `logloss data fetch {name}`, or put the original .gz files in DIR/{name}/ and "
            f"pass --data-dir DIR (data_dir=DIR in Python) or set {ENV_VAR}=DIR"
        )
    if failure is not None and failure.details:
        places.append(failure.details)
    return DatasetNotFoundError(
        f"dataset {name!r} ({split} split) {problem}; {fix} (--verbose, or .details in Python, "
        "lists the places tried)",
        details="\n".join(places),
    )


def load_dataset(
    name: str,
    split: str,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Load one split of a dataset as ``(images, labels)``.

    Looks in ``data_dir``, then ``$LOGLOSS_DATA``, then the user cache; if the split's files are in
    none of them and ``download`` is true, downloads them (verified against their published
    SHA-256) into ``data_dir`` or, without one, the user cache.  Files found locally are read
    as they are (no checksum), then checked for shape and label range.

    Args:
        name: ``"mnist"``, ``"fashion-mnist"``, ``"kmnist"`` (28x28) or ``"digits"`` (8x8,
            bundled, offline: the first 1437 samples are ``train``, the last 360 ``test``).
        split: ``"train"`` or ``"test"``.
        data_dir: a data folder holding ``<name>/`` with the original ``.gz`` files.
        download: whether to download missing files.

    Returns:
        images: uint8 (N, H, W), values 0..255 (for ``digits`` the 0..16 counts scaled by 255/16).
        labels: uint8 (N,), class indices 0..9.

    Raises:
        ValueError: an unknown name or split.
        DatasetNotFoundError: not found (and not downloaded); one line saying how to point logloss
            at local files, its ``details`` every place looked in and every download attempt.
        IDXFormatError: a file is corrupt, holds the wrong shapes, or is larger than the split's
            published file (checked before it is decompressed).

    >>> images, labels = load_dataset("digits", "test")
    >>> images.shape, images.dtype, labels.shape, int(images.max())
    ((360, 8, 8), dtype('uint8'), (360,), 255)
    """
    info = get_dataset(name)
    _check_split(split)
    if info.bundled:
        return _load_digits(split)
    found = find_dataset(name, split, data_dir)
    if found is not None:
        folder = found[1]
    elif not download:
        raise _not_found(name, split, data_dir, None)
    else:
        try:
            folder = download_dataset(name, data_dir, splits=(split,))
        except DataError as error:
            raise _not_found(name, split, data_dir, error) from None
    image_file, label_file = (folder / f.name for f in info.files[split])
    image_bytes, label_bytes = info.idx_sizes(split)  # no file of the split is larger
    images = read_idx(image_file, max_bytes=image_bytes)
    labels = read_idx(label_file, max_bytes=label_bytes)
    return _validated(info, images, labels, (image_file, label_file))


def split_train_validation(
    images: np.ndarray, labels: np.ndarray, *, validation_size: int | float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Carve a validation set out of a training set with a seeded random choice of samples.

    The samples chosen are the first ``k`` of ``numpy.random.default_rng(seed).permutation(N)``,
    so the split is the same on every machine; both parts keep the original order of samples.

    Args:
        images: (N, ...) training images.
        labels: (N,) training labels.
        validation_size: a count ``k`` (0 <= k < N) or a fraction ``f`` with 0 < f < 1, giving
            ``k = round(f * N)``.
        seed: the random seed.

    Returns:
        ``(train_images, train_labels, validation_images, validation_labels)`` with N - k and k
        samples, new arrays (not views of the inputs).

    >>> x, y = np.arange(10).reshape(5, 2), np.arange(5)
    >>> tx, ty, vx, vy = split_train_validation(x, y, validation_size=0.4, seed=0)
    >>> len(ty), len(vy), sorted(np.concatenate([ty, vy]).tolist())
    (3, 2, [0, 1, 2, 3, 4])
    """
    images, labels = np.asarray(images), np.asarray(labels)
    if images.ndim == 0 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(
            f"images and labels must hold one sample per label: got images of shape "
            f"{images.shape} and labels of shape {labels.shape}"
        )
    n = len(labels)
    if isinstance(validation_size, bool) or not isinstance(validation_size, numbers.Real):
        raise ValueError(f"validation_size must be a count or a fraction, got {validation_size!r}")
    if isinstance(validation_size, numbers.Integral):
        count = int(validation_size)
        if not 0 <= count < n:
            raise ValueError(
                f"validation_size={count} must leave at least one training sample: "
                f"use 0 <= validation_size < {n} (the number of samples)"
            )
    else:
        if not 0.0 < validation_size < 1.0:
            raise ValueError(
                f"validation_size={validation_size} as a fraction must be strictly between 0 "
                "and 1; pass an integer for a count"
            )
        count = round(validation_size * n)
        if count >= n:
            raise ValueError(
                f"validation_size={validation_size} of {n} samples leaves no training sample"
            )
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    chosen = np.zeros(n, dtype=bool)
    chosen[np.random.default_rng(int(seed)).permutation(n)[:count]] = True
    return images[~chosen], labels[~chosen], images[chosen], labels[chosen]
