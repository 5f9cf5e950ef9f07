"""IDX reader and writer: round trips, every validation rule, and fuzzing with hypothesis."""

from __future__ import annotations

import gzip
import re
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from logloss._atomic import atomic_write
from logloss.data import IDXFormatError, parse_idx, read_idx, write_idx

# (dtype, IDX code) from the format's definition (LeCun's MNIST page), not from our table.
DTYPES = [
    (np.uint8, 0x08),
    (np.int8, 0x09),
    (np.int16, 0x0B),
    (np.int32, 0x0C),
    (np.float32, 0x0D),
    (np.float64, 0x0E),
]


def header(code: int, dims: tuple[int, ...]) -> bytes:
    """An IDX header built by hand with struct, independent of the module under test."""
    return bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)


@pytest.mark.parametrize(("dtype", "code"), DTYPES)
@pytest.mark.parametrize("suffix", [".idx", ".idx.gz"])
def test_round_trip_each_dtype(tmp_path: Path, dtype, code: int, suffix: str) -> None:
    rng = np.random.default_rng(code)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        array = rng.integers(info.min, info.max, size=(3, 4, 5), endpoint=True, dtype=dtype)
    else:
        array = rng.standard_normal((3, 4, 5)).astype(dtype)
        array.flat[:3] = [np.inf, -np.inf, np.finfo(dtype).tiny]
    path = tmp_path / f"a{suffix}"
    write_idx(path, array)
    back = read_idx(path)
    assert back.dtype == array.dtype
    assert back.dtype.isnative
    np.testing.assert_array_equal(back, array)
    # The bytes on disk are the format's: hand-built header, big-endian payload.
    raw = path.read_bytes()
    if suffix.endswith(".gz"):
        assert raw[:2] == b"\x1f\x8b"
        raw = gzip.decompress(raw)
    assert raw == header(code, (3, 4, 5)) + array.astype(array.dtype.newbyteorder(">")).tobytes()


def test_round_trip_big_endian_input_and_nan(tmp_path: Path) -> None:
    array = np.array([1.5, np.nan, -0.0], dtype=">f8")
    write_idx(tmp_path / "x.idx", array)
    back = read_idx(tmp_path / "x.idx")
    np.testing.assert_array_equal(back, array.astype(np.float64))
    assert np.signbit(back[2])


def test_read_uint8_is_a_writable_view_not_a_copy(tmp_path: Path) -> None:
    data = bytearray(header(0x08, (2, 3)) + bytes(range(6)))
    array = parse_idx(data)
    assert np.shares_memory(array, np.frombuffer(data, dtype=np.uint8))
    write_idx(tmp_path / "x.gz", np.zeros((2, 3), np.uint8))
    assert read_idx(tmp_path / "x.gz").flags.writeable


def test_plain_file_parses_like_hand_decoding() -> None:
    data = header(0x0B, (2, 2)) + struct.pack(">4h", -1, 2, -300, 4)
    np.testing.assert_array_equal(parse_idx(data), [[-1, 2], [-300, 4]])


def test_zero_sized_dimension(tmp_path: Path) -> None:
    write_idx(tmp_path / "e.idx", np.zeros((0, 28, 28), np.uint8))
    assert read_idx(tmp_path / "e.idx").shape == (0, 28, 28)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x00\x00", "shorter than the 4-byte IDX magic"),
        (b"\x01\x00\x08\x01" + b"\x00" * 8, "first two bytes must be 0x00 0x00, found 0x01 0x00"),
        (b"\x00\x00\x07\x01\x00\x00\x00\x01\x05", "unknown IDX dtype code 0x07"),
        (b"\x00\x00\x08\x00", "0 dimensions"),
        (b"\x00\x00\x08\x03\x00\x00\x00\x01", "declares 3 dimensions (16 header bytes)"),
        (header(0x08, (2, 3)) + bytes(5), "1 bytes missing (truncated)"),
        (header(0x08, (2, 3)) + bytes(8), "2 extra bytes at the end"),
        (header(0x0C, (2,)) + bytes(4), "need 8 payload bytes but the file holds 4"),
        # found by the fuzzer: a zero dimension beside huge ones made NumPy's reshape fail
        (header(0x0B, (0, 109, 1177, 3472, 17856, 579820)), "too large for an array"),
    ],
)
def test_each_rule_has_its_own_message(data: bytes, message: str) -> None:
    with pytest.raises(IDXFormatError, match="^m.idx: .*" + _escape(message)):
        parse_idx(data, source="m.idx")


def _escape(text: str) -> str:
    return re.escape(text)


def test_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "labels.idx"
    path.write_bytes(header(0x08, (10,)) + bytes(9))
    with pytest.raises(IDXFormatError, match=_escape(str(path))):
        read_idx(path)
    assert issubclass(IDXFormatError, ValueError)


def test_uncompressed_gzip_looking_payload_hint() -> None:
    with pytest.raises(IDXFormatError, match="looks gzip-compressed"):
        parse_idx(gzip.compress(header(0x08, (1,)) + b"\x01"))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda raw: raw[: len(raw) // 2], "truncated"),
        (lambda raw: raw[:-8] + bytes(a ^ 0xFF for a in raw[-8:-4]) + raw[-4:], "corrupt"),
        (lambda raw: raw[:20] + bytes(a ^ 0x55 for a in raw[20:40]) + raw[40:], "corrupt"),
        (lambda raw: raw + b"junk", "non-gzip data follow"),
    ],
    ids=["truncated", "bad-crc", "bad-deflate", "trailing-junk"],
)
def test_gzip_corruption_is_idx_format_error_naming_file(tmp_path: Path, damage, message) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    write_idx(path, rng.integers(0, 256, size=(50, 28, 28), dtype=np.uint8))
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(IDXFormatError, match=_escape(str(path)) + ".*" + message):
        read_idx(path)


def test_multi_member_and_zero_padded_gzip(tmp_path: Path) -> None:
    # gzip allows several members back to back (e.g. `cat a.gz b.gz`) and trailing zeros.
    content = header(0x08, (6,)) + bytes(range(6))
    path = tmp_path / "m.gz"
    path.write_bytes(gzip.compress(content[:7]) + gzip.compress(content[7:]) + bytes(4))
    np.testing.assert_array_equal(read_idx(path), np.arange(6))


def test_large_gzip_decompresses_exactly_across_chunks(tmp_path: Path) -> None:
    payload = np.random.default_rng(1).bytes(3 << 20)  # several 256 KiB decompression chunks
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(header(0x08, (3, 1 << 20)) + payload))
    assert read_idx(path).tobytes() == payload


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros(3, dtype=np.uint16), "dtype uint16 has no IDX code"),
        (np.zeros(3, dtype=bool), "dtype bool has no IDX code"),
        (np.zeros(3, dtype=np.int64), "dtype int64 has no IDX code"),
        (np.float64(1.0), "1 to 255 dimensions, the array has 0"),
    ],
)
def test_write_rejects_what_idx_cannot_store(tmp_path: Path, array, message: str) -> None:
    with pytest.raises(ValueError, match=_escape(message)):
        write_idx(tmp_path / "x.idx", array)
    assert list(tmp_path.iterdir()) == []  # nothing written, no temporary file


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "x.idx"
    write_idx(path, np.arange(3, dtype=np.uint8))

    def interrupted_write() -> None:
        with atomic_write(path) as handle:
            handle.write(b"half a file")
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        interrupted_write()
    np.testing.assert_array_equal(read_idx(path), [0, 1, 2])
    assert [p.name for p in tmp_path.iterdir()] == ["x.idx"]


# ---- fuzzing: any bytes give a correct array or IDXFormatError, nothing else, quickly ----

FUZZ = settings(max_examples=300, deadline=1000, suppress_health_check=[HealthCheck.too_slow])

arrays = st.sampled_from([d for d, _ in DTYPES]).flatmap(
    lambda dtype: hnp.arrays(dtype, hnp.array_shapes(min_dims=1, max_dims=4, max_side=5))
)


def _check_parsed(data: bytes) -> None:
    """parse_idx either raises IDXFormatError or returns exactly what the header describes."""
    try:
        array = parse_idx(data)
    except IDXFormatError:
        return
    # Independent decoding with struct: the result must agree with the header and payload.
    code, ndim = data[2], data[3]
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    codes = {code: np.dtype(dtype) for dtype, code in DTYPES}
    assert array.shape == dims
    assert array.dtype == codes[code]
    expected = data[4 + 4 * ndim :]
    assert array.astype(array.dtype.newbyteorder(">")).tobytes() == expected


@FUZZ
@given(st.binary(max_size=80))
def test_fuzz_random_bytes(data: bytes) -> None:
    _check_parsed(data)


@FUZZ
@given(
    code=st.integers(0, 255),
    dims=st.lists(st.integers(0, 2**32 - 1) | st.integers(0, 6), min_size=0, max_size=255),
    payload=st.binary(max_size=64),
)
def test_fuzz_random_headers(code: int, dims: list[int], payload: bytes) -> None:
    _check_parsed(bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims) + payload)


@FUZZ
@given(array=arrays, cut=st.integers(0, 10_000), pad=st.binary(max_size=16))
def test_fuzz_truncated_and_padded_valid_files(array: np.ndarray, cut: int, pad: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "a.idx"
        write_idx(path, array)
        valid = path.read_bytes()
    np.testing.assert_array_equal(parse_idx(valid), array)
    truncated = valid[: cut % (len(valid) + 1)]
    _check_parsed(truncated)
    if len(truncated) < len(valid):
        with pytest.raises(IDXFormatError):
            parse_idx(truncated)
    _check_parsed(valid + pad)
    if pad:
        with pytest.raises(IDXFormatError, match="extra bytes"):
            parse_idx(valid + pad)


@FUZZ
@given(array=arrays, position=st.integers(0, 10_000), value=st.integers(0, 255))
def test_fuzz_damaged_gzip_files(array: np.ndarray, position: int, value: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "a.idx.gz"
        write_idx(path, array)
        raw = bytearray(path.read_bytes())
        raw[position % len(raw)] = value
        path.write_bytes(raw)
        try:
            back, message = read_idx(path), ""
        except IDXFormatError as error:
            back, message = None, str(error)
    if back is None:
        assert str(path) in message
        return
    # A byte change that gzip's CRC did not catch (e.g. in the header's mtime) changes nothing.
    np.testing.assert_array_equal(back, array)


def test_writing_into_a_missing_folder_names_the_file_not_a_temporary(tmp_path):
    target = tmp_path / "missing" / "a.idx"
    with pytest.raises(FileNotFoundError, match=r"the folder .*missing does not exist") as error:
        write_idx(target, np.zeros(3, dtype=np.uint8))
    assert error.value.filename == str(target)
    assert not (tmp_path / "missing").exists()
