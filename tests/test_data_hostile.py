"""Damaged and hostile dataset files: one clear error and bounded memory (issue 13, items 3 and 6).

Sizes are chosen for CI: the legitimate file is a test split of 10000 28x28 images (7.84 MB
decompressed, about 2 MB compressed, as MNIST's); the bomb inflates to 300 MB from 0.3 MB.  A 6 GB
bomb is refused the same way, at the size its header declares, so a few hundred MB proves the bound.
Peak memory is measured in a fresh Python process, by tracemalloc (every Python and NumPy
allocation) and by the peak resident set size (``VmHWM``, reset after the imports; Linux), and
compared with loading the legitimate file.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from logloss.cli import main
from logloss.data import IDXFormatError, load_dataset, read_idx, write_idx

IMAGES, LABELS = "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"
SHAPE = (10000, 28, 28)
LIMIT = 16 + 10000 * 28 * 28  # the size of MNIST's decompressed test images file
BOMB_BYTES = 300 << 20


def _header(dims: tuple[int, ...]) -> bytes:
    return bytes([0, 0, 0x08, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)


def _bomb(dims: tuple[int, ...], size: int) -> bytes:
    """gzip data whose IDX header declares ``dims`` but which inflates to ``size`` bytes."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    parts = [packer.compress(_header(dims))]
    zeros = bytes(1 << 20)
    for _ in range(size >> 20):
        parts.append(packer.compress(zeros))
    return b"".join([*parts, packer.flush()])


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Data folders, each with mnist/ holding the test split: ``legit`` and damaged variants."""
    root = tmp_path_factory.mktemp("hostile")
    rng = np.random.default_rng(13)
    # Mostly background, like MNIST, so that it compresses about as well (~4x).
    ink = rng.random(SHAPE) < 0.2
    images = np.where(ink, rng.integers(1, 256, size=SHAPE), 0).astype(np.uint8)
    legit = root / "legit" / "mnist"
    legit.mkdir(parents=True)
    write_idx(legit / IMAGES, images, compresslevel=1)
    write_idx(legit / LABELS, rng.integers(0, 10, size=SHAPE[0], dtype=np.uint8))
    good = (legit / IMAGES).read_bytes()
    damaged = {
        "bomb": _bomb(SHAPE, BOMB_BYTES),
        "truncated": good[: 300 << 10],  # its last 4 bytes, read as gzip's size field, are noise
        # 8 junk bytes, whose last four claim 400 MiB as gzip's size field
        "junk": good + b"\xde\xad\xbe\xef" + (400 << 20).to_bytes(4, "little"),
        "header-lies": _bomb((20000, 28, 28), 1 << 20),  # more images than the split has
    }
    folders = {"legit": legit.parent}
    for name, content in damaged.items():
        folder = root / name / "mnist"
        folder.mkdir(parents=True)
        shutil.copy(legit / LABELS, folder / LABELS)
        (folder / IMAGES).write_bytes(content)
        folders[name] = folder.parent
    sparse = root / "sparse" / "mnist"  # 4 GiB that take no disk space
    sparse.mkdir(parents=True)
    shutil.copy(legit / LABELS, sparse / LABELS)
    with open(sparse / IMAGES, "wb") as handle:
        handle.write(good[:1024])
        handle.truncate(4 << 30)
    folders["sparse"] = sparse.parent
    return folders


_MEASURE = """
import json, sys, tracemalloc
from logloss.data import DataError, load_dataset

def status(field):  # kB, from the kernel's accounting of this process
    with open("/proc/self/status") as lines:
        return next(int(line.split()[1]) * 1024 for line in lines if line.startswith(field))

with open("/proc/self/clear_refs", "w") as clear:
    clear.write("5")  # the resident peak (VmHWM) starts again from here
before = status("VmRSS:")
tracemalloc.start()
try:
    load_dataset("mnist", "test", data_dir=sys.argv[1], download=False)
    outcome = "loaded"
except DataError as error:
    outcome = f"{type(error).__name__}: {error}"
traced = tracemalloc.get_traced_memory()[1]
print(json.dumps({"outcome": outcome, "traced": traced, "rss": status("VmHWM:") - before}))
"""


def _measure(data_dir: Path) -> dict:
    """Load the test split in a fresh process: its outcome and peak memory (bytes)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(data_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=True,
    )
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def legit_peak(folders: dict[str, Path]) -> dict:
    measured = _measure(folders["legit"])
    assert measured["outcome"] == "loaded"
    return measured


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
@pytest.mark.parametrize(
    ("variant", "rule"),
    [
        ("bomb", f"the gzip data inflates to more than the {LIMIT} bytes its IDX header declares"),
        ("truncated", "gzip data ends early (the file is truncated)"),
        ("junk", "8 bytes of non-gzip data follow the compressed data"),
        ("header-lies", "the header declares dimensions 20000 x 28 x 28 of uint8 (15680016 bytes)"),
        ("sparse", f"the file has {4 << 30} bytes, over the limit of"),
    ],
)
def test_damaged_file_costs_at_most_twice_a_legitimate_one(
    folders: dict[str, Path], legit_peak: dict, variant: str, rule: str
) -> None:
    """issue 13, item 6: a 6 MB bomb inflated to 6 GB, and a truncated or junk-trailed file made
    the reader pre-allocate from gzip's size field (0.8 MB file -> 836 MB).  Now each is refused
    with the file and the rule named, at most at twice the memory of the legitimate file."""
    measured = _measure(folders[variant])
    assert measured["outcome"].startswith(
        f"IDXFormatError: {folders[variant] / 'mnist' / IMAGES}: "
    )
    assert rule in measured["outcome"]
    assert measured["traced"] <= 2 * legit_peak["traced"]
    assert measured["rss"] <= 2 * legit_peak["rss"] + (4 << 20)  # 4 MiB for allocator slack


def test_legitimate_peak_is_what_the_data_needs(legit_peak: dict) -> None:
    # The compressed file (~2 MB) and the images (7.84 MB) once: no hidden copies.
    assert LIMIT <= legit_peak["traced"] <= 2 * LIMIT


@pytest.mark.parametrize(
    "variant", ["bomb", "truncated", "junk", "header-lies", "sparse", "empty", "not-gzip", "crc"]
)
def test_no_traceback_from_any_damaged_file(
    folders: dict[str, Path], tmp_path: Path, variant: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """issue 13, item 3 (IDX files): the command prints one line naming the file, status 2."""
    if variant in folders:
        data_dir = folders[variant]
    else:
        data_dir = tmp_path
        shutil.copytree(folders["legit"] / "mnist", tmp_path / "mnist")
        path = tmp_path / "mnist" / IMAGES
        raw = path.read_bytes()
        damaged = {"empty": b"", "not-gzip": b"PK\x03\x04" + raw, "crc": raw[:-8] + bytes(8)}
        path.write_bytes(damaged[variant])
    argv = ["data", "show", "mnist", "--split", "test", "--index", "0", "--data-dir"]
    assert main([*argv, str(data_dir)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"logloss: error: {data_dir / 'mnist' / IMAGES}: ")
    assert captured.err.count("\n") == 1


def test_a_failed_load_fails_the_same_way_again(folders: dict[str, Path]) -> None:
    """issue 13, item 6: a caller (the server) may remember a failure: the error depends only on
    the file, so loading again raises the same message."""
    messages = set()
    for _ in range(2):
        with pytest.raises(IDXFormatError) as caught:
            load_dataset("mnist", "test", data_dir=folders["bomb"], download=False)
        messages.add(str(caught.value))
    assert len(messages) == 1


def test_generic_bomb_stops_at_the_declared_size(tmp_path: Path) -> None:
    """issue 13, item 6: without a registered size, the header's declared size bounds inflation."""
    path = tmp_path / "bomb.gz"
    path.write_bytes(_bomb((1000,), 20 << 20))
    with pytest.raises(
        IDXFormatError, match=r"inflates to more than the 1008 bytes its IDX header"
    ):
        read_idx(path)


def test_huge_declared_size_is_refused_before_decompressing(tmp_path: Path) -> None:
    """issue 13, item 6: a header claiming 6 GB is over read_idx's default 1 GiB limit."""
    path = tmp_path / "six-gb.gz"
    path.write_bytes(gzip.compress(_header((60_000, 100_000))))
    with pytest.raises(IDXFormatError) as caught:
        read_idx(path)
    assert str(caught.value) == (
        f"{path}: the header declares dimensions 60000 x 100000 of uint8 (6000000012 bytes), over "
        f"this file's limit of {1 << 30} bytes; the file is damaged or not the dataset it claims "
        "to be (read_idx(path, max_bytes=N) reads larger files)"
    )


def test_declared_size_must_fit_what_the_file_can_inflate_to(tmp_path: Path) -> None:
    """issue 13, item 6: 100 compressed bytes cannot hold 500 MB (deflate's limit is 1032:1), so
    the header is not trusted to size a buffer."""
    path = tmp_path / "liar.gz"
    path.write_bytes(gzip.compress(_header((500_000_000,)) + bytes(1000)))
    size = path.stat().st_size
    with pytest.raises(IDXFormatError) as caught:
        read_idx(path)
    assert str(caught.value).endswith(
        f"(500000008 bytes), but {size} bytes of gzip data inflate to at most {1032 * size}: the "
        "file is truncated or its header is wrong"
    )


def test_max_bytes_reads_larger_files_and_is_validated(tmp_path: Path) -> None:
    path = tmp_path / "a.idx"
    write_idx(path, np.arange(100, dtype=np.uint8))
    assert read_idx(path, max_bytes=108).shape == (100,)
    with pytest.raises(IDXFormatError, match=r"the file has 108 bytes, over the limit of 107 "):
        read_idx(path, max_bytes=107)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match=r"max_bytes must be a positive integer"):
            read_idx(path, max_bytes=bad)
