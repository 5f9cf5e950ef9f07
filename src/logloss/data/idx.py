"""Read and write IDX files, the format of MNIST and its siblings, plain or gzip-compressed.

Layout (all integers big-endian)::

    0x00 0x00 <dtype code> <ndim>      magic: two zero bytes, the element type, the dimension count
    ndim x uint32                      the dimensions, e.g. 60000, 28, 28
    prod(dims) x itemsize bytes        the elements, C order, big-endian

Dtype codes: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path

import numpy as np

from logloss._atomic import atomic_write
from logloss.data.errors import IDXFormatError

__all__ = ["IDX_DTYPES", "IDXFormatError", "decompress_gzip", "parse_idx", "read_idx", "write_idx"]

# dtype code -> big-endian element type, as stored in the file.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {dtype.newbyteorder("="): code for code, dtype in IDX_DTYPES.items()}
_GZIP_MAGIC = b"\x1f\x8b"
_MAX_DIM = 2**32 - 1
# Deflate expands at most ~1032:1; a larger size claimed by a gzip trailer is a lie, not a hint.
_MAX_DEFLATE_RATIO = 1032
_CHUNK_IN = 1 << 16  # compressed bytes fed to zlib per call
_CHUNK_OUT = 1 << 18  # decompressed bytes per call: small enough to stay in cache while copied


def _supported() -> str:
    return ", ".join(
        f"0x{code:02X} {dtype.newbyteorder('=').name}" for code, dtype in IDX_DTYPES.items()
    )


def decompress_gzip(compressed: bytes | bytearray | memoryview, *, source: str) -> bytearray:
    """Decompress gzip data (one or more members) into one writable buffer, checking each CRC.

    The size recorded in the gzip trailer pre-sizes the buffer, and both input and output move in
    cache-sized pieces, so the result is written once instead of being joined from copies.

    Args:
        compressed: the bytes of a ``.gz`` file.
        source: the file name, used in error messages.

    Returns:
        The decompressed bytes.

    Raises:
        IDXFormatError: corrupt, truncated or trailing non-gzip data, naming ``source``.

    >>> bytes(decompress_gzip(gzip.compress(b"idx"), source="x.gz"))
    b'idx'
    """
    view = memoryview(compressed).cast("B")
    hint = int.from_bytes(view[-4:], "little") if len(view) >= 4 else 0
    out = bytearray(min(hint, _MAX_DEFLATE_RATIO * len(view)))
    filled = 0
    member = 0  # offset of the current gzip member in ``view``
    try:
        while True:
            decompressor = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
            fed = member
            while not decompressor.eof:
                if fed >= len(view):
                    raise IDXFormatError(
                        f"{source}: gzip data ends early (the file is truncated); "
                        "delete it and download it again"
                    )
                # Feed small input pieces: zlib copies the unconsumed rest of its input each call.
                pending: bytes | memoryview = view[fed : fed + _CHUNK_IN]
                fed += len(pending)
                while pending and not decompressor.eof:
                    chunk = decompressor.decompress(pending, _CHUNK_OUT)
                    if filled + len(chunk) > len(out):
                        out.extend(bytes(filled + len(chunk) - len(out)))
                    out[filled : filled + len(chunk)] = chunk
                    filled += len(chunk)
                    pending = decompressor.unconsumed_tail
            member = fed - len(decompressor.unused_data)
            rest = bytes(view[member:])
            padding = len(rest) - len(rest.lstrip(b"\x00"))  # gzip allows zero padding
            if padding == len(rest):
                break
            if not rest.startswith(_GZIP_MAGIC, padding):
                raise IDXFormatError(
                    f"{source}: {len(rest)} bytes of non-gzip data follow the compressed data"
                )
            member += padding
    except zlib.error as error:
        raise IDXFormatError(
            f"{source}: gzip data is corrupt ({error}); delete the file and download it again"
        ) from None
    del out[filled:]
    return out


def parse_idx(data: bytes | bytearray | memoryview, *, source: str = "<buffer>") -> np.ndarray:
    """Decode the bytes of an (uncompressed) IDX file into an array in native byte order.

    Single-byte types are returned as a view of ``data`` (no copy; writable if ``data`` is);
    wider types are byte-swapped into a new array on little-endian machines.

    Args:
        data: the whole file.
        source: the file name, used in error messages.

    Returns:
        Array of shape ``dims`` and the file's element type.

    Raises:
        IDXFormatError: bad magic, unknown dtype code, zero dimensions, a header cut short, or a
            payload whose length is not ``prod(dims) * itemsize``.

    >>> parse_idx(bytes([0, 0, 0x08, 2, 0, 0, 0, 1, 0, 0, 0, 3, 7, 8, 9]))
    array([[7, 8, 9]], dtype=uint8)
    """
    view = memoryview(data).cast("B")
    size = len(view)
    if size < 4:
        raise IDXFormatError(f"{source}: {size} bytes is shorter than the 4-byte IDX magic number")
    if view[0] != 0 or view[1] != 0:
        hint = " (it looks gzip-compressed)" if bytes(view[:2]) == _GZIP_MAGIC else ""
        raise IDXFormatError(
            f"{source}: not an IDX file: the first two bytes must be 0x00 0x00, found "
            f"0x{view[0]:02X} 0x{view[1]:02X}{hint}"
        )
    code, ndim = view[2], view[3]
    if code not in IDX_DTYPES:
        raise IDXFormatError(
            f"{source}: unknown IDX dtype code 0x{code:02X}; the format defines {_supported()}"
        )
    if ndim == 0:
        raise IDXFormatError(f"{source}: the header declares 0 dimensions; IDX needs at least 1")
    header = 4 + 4 * ndim
    if size < header:
        raise IDXFormatError(
            f"{source}: the header declares {ndim} dimensions ({header} header bytes) but the "
            f"file has only {size} bytes (truncated)"
        )
    dims = tuple(int(d) for d in np.frombuffer(view, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[code]
    expected = math.prod(dims) * dtype.itemsize
    payload = size - header
    if payload != expected:
        shape = " x ".join(map(str, dims))
        problem = (
            f"{expected - payload} bytes missing (truncated)"
            if payload < expected
            else f"{payload - expected} extra bytes at the end"
        )
        raise IDXFormatError(
            f"{source}: dimensions {shape} of {dtype.newbyteorder('=').name} need {expected} "
            f"payload bytes but the file holds {payload}: {problem}"
        )
    # NumPy bounds the extent of an array, zero-sized ones included, by its index type.
    if math.prod(d for d in dims if d) * dtype.itemsize > np.iinfo(np.intp).max:
        raise IDXFormatError(
            f"{source}: dimensions {' x '.join(map(str, dims))} are too large for an array"
        )
    array = np.frombuffer(view, dtype=dtype, count=math.prod(dims), offset=header).reshape(dims)
    return array.astype(dtype.newbyteorder("="), copy=False)


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file, gzip-compressed or not (recognised by its content, not its name).

    Args:
        path: the file, e.g. ``mnist/t10k-labels-idx1-ubyte.gz``.

    Returns:
        A writable array in native byte order, e.g. uint8 of shape (10000, 28, 28).

    Raises:
        IDXFormatError: the file is not valid IDX, or its gzip data is corrupt; names ``path``.
        OSError: the file cannot be read.

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "a.idx.gz"
    >>> write_idx(path, np.arange(6, dtype=np.int16).reshape(2, 3))
    >>> read_idx(path)
    array([[0, 1, 2],
           [3, 4, 5]], dtype=int16)
    """
    path = Path(path)
    with open(path, "rb") as handle:
        raw = bytearray(os.fstat(handle.fileno()).st_size)  # read straight into one buffer
        del raw[handle.readinto(raw) :]  # in case the file shrank meanwhile
    if raw[:2] == _GZIP_MAGIC:
        raw = decompress_gzip(raw, source=str(path))
    return parse_idx(raw, source=str(path))


def write_idx(path: str | os.PathLike[str], array: np.ndarray, *, compresslevel: int = 6) -> None:
    """Write ``array`` as an IDX file, gzip-compressed when the name ends in ``.gz``, atomically.

    The file appears complete or not at all (written to a temporary file beside it, then
    renamed); gzip output is reproducible (no timestamp).

    Args:
        path: the destination.
        array: 1 to 255 dimensions, each below 2**32, of type uint8, int8, int16, int32, float32
            or float64 (any byte order).
        compresslevel: gzip level 1-9, used only for ``.gz`` names.

    Raises:
        ValueError: an unsupported type, dimension count or dimension, naming the value.

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "labels.idx"
    >>> write_idx(path, np.array([3, 1, 4], dtype=np.uint8))
    >>> path.read_bytes()
    b'\\x00\\x00\\x08\\x01\\x00\\x00\\x00\\x03\\x03\\x01\\x04'
    """
    array = np.asarray(array)
    native = array.dtype.newbyteorder("=") if array.dtype.byteorder != "|" else array.dtype
    if native not in _CODES:
        raise ValueError(
            f"write_idx: dtype {array.dtype} has no IDX code; convert the array to one of "
            f"{_supported()}"
        )
    if not 1 <= array.ndim <= 255:
        raise ValueError(f"write_idx: IDX stores 1 to 255 dimensions, the array has {array.ndim}")
    if max(array.shape) > _MAX_DIM:
        raise ValueError(f"write_idx: dimension {max(array.shape)} exceeds the IDX limit 2**32-1")
    code = _CODES[native]
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    payload = np.ascontiguousarray(array, dtype=IDX_DTYPES[code]).tobytes()
    content = header + payload
    if str(path).endswith(".gz"):
        content = gzip.compress(content, compresslevel=compresslevel, mtime=0)
    with atomic_write(path) as handle:
        handle.write(content)
