"""Read and write IDX files, the format of MNIST and its siblings, plain or gzip-compressed.

Layout (all integers big-endian)::

    0x00 0x00 <dtype code> <ndim>      magic: two zero bytes, the element type, the dimension count
    ndim x uint32                      the dimensions, e.g. 60000, 28, 28
    prod(dims) x itemsize bytes        the elements, C order, big-endian

Dtype codes: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64.

Reading never trusts a size it has not checked (issue 13, item 6): a file's size on disk and the
size its IDX header declares are both checked against ``max_bytes`` before anything is allocated,
the declared size also against what its compressed bytes can inflate to, and decompression stops
as soon as the data outgrows the declared size.  The gzip trailer's size field is never used.
"""

from __future__ import annotations

import gzip
import itertools
import math
import os
import zlib
from collections.abc import Iterator

import numpy as np

from logloss._atomic import atomic_write
from logloss.data.errors import IDXFormatError

__all__ = [
    "DEFAULT_MAX_BYTES",
    "IDX_DTYPES",
    "IDXFormatError",
    "parse_idx",
    "read_idx",
    "write_idx",
]

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
# The largest IDX file read_idx accepts unless told otherwise: 1 GiB, 22 times the largest file of
# the registered datasets (MNIST's training images, 47,040,016 bytes).
DEFAULT_MAX_BYTES = 1 << 30
# Deflate expands at most ~1032:1, so N compressed bytes never inflate to more than 1032 N.
_MAX_DEFLATE_RATIO = 1032
_CHUNK_IN = 1 << 16  # compressed bytes fed to zlib per call
_CHUNK_OUT = 1 << 18  # decompressed bytes per call: small enough to stay in cache while copied


def _supported() -> str:
    return ", ".join(
        f"0x{code:02X} {dtype.newbyteorder('=').name}" for code, dtype in IDX_DTYPES.items()
    )


def _describe(dims: tuple[int, ...], dtype: np.dtype) -> str:
    return f"dimensions {' x '.join(map(str, dims))} of {dtype.newbyteorder('=').name}"


def _skip_zero_padding(view: memoryview, start: int) -> int:
    """The offset of the first non-zero byte at or after ``start`` (``len(view)`` if none).

    Scans in fixed-size blocks, so many small members cost linear, not quadratic, time."""
    position = start
    while position < len(view):
        block = bytes(view[position : position + _CHUNK_IN])
        zeros = len(block) - len(block.lstrip(b"\x00"))
        position += zeros
        if zeros < len(block):
            break
    return position


def _gunzip(view: memoryview, source: str) -> Iterator[bytes]:
    """The decompressed bytes of every gzip member in ``view``, piece by piece (at most
    ``_CHUNK_OUT`` bytes each), checking each member's CRC and length.

    Raises:
        IDXFormatError: corrupt or truncated gzip data, or non-gzip data after it.
    """
    member = 0  # offset of the current gzip member in ``view``
    try:
        while member < len(view):
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
                    yield decompressor.decompress(pending, _CHUNK_OUT)
                    pending = decompressor.unconsumed_tail
            end = fed - len(decompressor.unused_data)
            member = _skip_zero_padding(view, end)  # gzip allows zero padding
            if member < len(view) and view[member : member + 2] != _GZIP_MAGIC:
                raise IDXFormatError(
                    f"{source}: {len(view) - end} bytes of non-gzip data follow the compressed data"
                )
    except zlib.error as error:
        raise IDXFormatError(
            f"{source}: gzip data is corrupt ({error}); delete the file and download it again"
        ) from None


def _parse_header(view: memoryview, source: str) -> tuple[np.dtype, tuple[int, ...], int]:
    """``(dtype, dims, header length)`` from the start of an IDX file, checking the magic, the
    dtype code, the dimension count and that the header is complete."""
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
    return IDX_DTYPES[code], dims, header


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
    dtype, dims, header = _parse_header(view, source)
    expected = math.prod(dims) * dtype.itemsize
    payload = len(view) - header
    if payload != expected:
        problem = (
            f"{expected - payload} bytes missing (truncated)"
            if payload < expected
            else f"{payload - expected} extra bytes at the end"
        )
        raise IDXFormatError(
            f"{source}: {_describe(dims, dtype)} need {expected} payload bytes but the file "
            f"holds {payload}: {problem}"
        )
    # NumPy bounds the extent of an array, zero-sized ones included, by its index type.
    if math.prod(d for d in dims if d) * dtype.itemsize > np.iinfo(np.intp).max:
        raise IDXFormatError(f"{source}: {_describe(dims, dtype)} are too large for an array")
    array = np.frombuffer(view, dtype=dtype, count=math.prod(dims), offset=header).reshape(dims)
    return array.astype(dtype.newbyteorder("="), copy=False)


def _check_declared_size(
    head: memoryview, compressed_size: int, max_bytes: int, source: str
) -> int:
    """The file size the IDX header in ``head`` declares, once checked against ``max_bytes`` and
    against what ``compressed_size`` bytes of gzip data can inflate to."""
    dtype, dims, header = _parse_header(head, source)
    declared = header + math.prod(dims) * dtype.itemsize
    if declared > max_bytes:
        raise IDXFormatError(
            f"{source}: the header declares {_describe(dims, dtype)} ({declared} bytes), over "
            f"this file's limit of {max_bytes} bytes; the file is damaged or not the dataset it "
            "claims to be (read_idx(path, max_bytes=N) reads larger files)"
        )
    if declared > _MAX_DEFLATE_RATIO * compressed_size:
        raise IDXFormatError(
            f"{source}: the header declares {_describe(dims, dtype)} ({declared} bytes), but "
            f"{compressed_size} bytes of gzip data inflate to at most "
            f"{_MAX_DEFLATE_RATIO * compressed_size}: the file is truncated or its header is wrong"
        )
    return declared


def _inflate_idx(view: memoryview, max_bytes: int, source: str) -> np.ndarray:
    """Decompress a gzip-compressed IDX file into one buffer of the size its header declares.

    The header is decompressed first and checked (:func:`_check_declared_size`) before the buffer
    is allocated; decompression stops with an error as soon as the data outgrows the buffer.

    Returns:
        uint8 (n,), the decompressed bytes (n < the declared size if the data ended early).
    """
    pieces = _gunzip(view, source)
    head = b""
    # 4 bytes give the dimension count; 4 + 4 * ndim the whole header.
    while len(head) < (4 if len(head) < 4 else 4 + 4 * head[3]):
        piece = next(pieces, None)
        if piece is None:
            break
        head += piece
    declared = _check_declared_size(memoryview(head), len(view), max_bytes, source)
    out = np.empty(declared, dtype=np.uint8)  # pages are committed only as they are written
    filled = 0
    for piece in itertools.chain((head,), pieces):
        if filled + len(piece) > declared:
            raise IDXFormatError(
                f"{source}: the gzip data inflates to more than the {declared} bytes its IDX "
                "header declares; the file is damaged, delete it"
            )
        out[filled : filled + len(piece)] = np.frombuffer(piece, dtype=np.uint8)
        filled += len(piece)
    return out[:filled]


def _check_file_size(size: int, compressed: bool, max_bytes: int, source: str) -> None:
    # A gzip file may exceed its content by deflate's stored-block overhead (5 bytes per 64 KiB)
    # and its header and trailer (18 bytes and up): 0.1% + 1 KiB covers both.
    allowed = max_bytes + (max_bytes // 1024 + 1024 if compressed else 0)
    if size > allowed:
        raise IDXFormatError(
            f"{source}: the file has {size} bytes, over the limit of {allowed} bytes for this "
            "file; it is damaged or not the dataset it claims to be (read_idx(path, "
            "max_bytes=N) reads larger files)"
        )


def read_idx(path: str | os.PathLike[str], *, max_bytes: int = DEFAULT_MAX_BYTES) -> np.ndarray:
    """Read an IDX file, gzip-compressed or not (recognised by its content, not its name).

    Memory is bounded by ``max_bytes`` whatever the file holds: the file's size and the size its
    header declares are checked before anything is allocated (the declared size also against
    what the compressed bytes can inflate to, at most 1032 times their size), and decompression
    stops as soon as the data outgrows the declared size.

    Args:
        path: the file, e.g. ``mnist/t10k-labels-idx1-ubyte.gz``.
        max_bytes: the largest (decompressed) IDX file to accept, header included; default 1 GiB.

    Returns:
        A writable array in native byte order, e.g. uint8 of shape (10000, 28, 28).

    Raises:
        IDXFormatError: the file is not valid IDX, is larger than ``max_bytes``, or its gzip data
            is corrupt, truncated or inflates beyond its header; the message names ``path``.
        ValueError: ``max_bytes`` is not a positive integer.
        OSError: the file cannot be read.

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "a.idx.gz"
    >>> write_idx(path, np.arange(6, dtype=np.int16).reshape(2, 3))
    >>> read_idx(path)
    array([[0, 1, 2],
           [3, 4, 5]], dtype=int16)
    >>> try:
    ...     read_idx(path, max_bytes=20)
    ... except IDXFormatError as error:
    ...     print(str(error).split(": ", 1)[1][:69])
    the header declares dimensions 2 x 3 of int16 (24 bytes), over this f
    """
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
        raise ValueError(f"read_idx: max_bytes must be a positive integer, got {max_bytes!r}")
    source = str(path)
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        compressed = handle.read(2) == _GZIP_MAGIC
        _check_file_size(size, compressed, max_bytes, source)
        handle.seek(0)
        raw = bytearray(size)  # read straight into one buffer
        del raw[handle.readinto(raw) :]  # in case the file shrank meanwhile
    if compressed:
        return parse_idx(_inflate_idx(memoryview(raw), max_bytes, source), source=source)
    return parse_idx(raw, source=source)


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
