"""A reader and writer for the IDX format of (Fashion-)MNIST, plain or gzip-compressed.

Layout (all integers big-endian): two zero bytes, a type code, the number of dimensions d,
then d uint32 sizes, then the data in C order.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from .._atomic import atomic_open

__all__ = ["IDX_DTYPES", "read_idx", "write_idx"]

# type code -> big-endian numpy dtype
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (gzip detected from its first bytes) into a native-endian array.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: bad magic number, unknown type code, truncated or oversized data, or a
            corrupt gzip stream; the message names the file and what was found.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file {str(path)!r} does not exist")
    raw = path.read_bytes()
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise ValueError(f"{path}: corrupt gzip stream ({e})") from e
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] not in IDX_DTYPES:
        raise ValueError(
            f"{path} is not an IDX file: magic bytes {raw[:4].hex() or '(empty)'}, expected "
            f"00 00 <type in {', '.join(f'{c:02x}' for c in IDX_DTYPES)}> <ndim>"
        )
    dtype, ndim = IDX_DTYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated header ({len(raw)} bytes, {ndim} dims need {header})")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(
            f"{path}: data holds {len(raw) - header} bytes but shape {tuple(shape)} of "
            f"{dtype.name} needs {expected}"
        )
    return (
        np.frombuffer(raw, dtype=dtype, offset=header)
        .reshape(shape)
        .astype(dtype.newbyteorder("="))
    )


def write_idx(
    path: str | os.PathLike[str], array: np.ndarray, compress: bool | None = None
) -> None:
    """Write ``array`` as IDX, atomically; ``compress=None`` gzips when the name ends in .gz."""
    path = Path(path)
    array = np.asarray(array)
    codes = {dt.newbyteorder("=").str[1:]: code for code, dt in IDX_DTYPES.items()}
    key = array.dtype.newbyteorder("=").str[1:]
    if key not in codes:
        raise TypeError(f"IDX cannot store {array.dtype}; valid: u1, i1, i2, i4, f4, f8")
    code = codes[key]
    payload = (
        bytes([0, 0, code, array.ndim])
        + struct.pack(f">{array.ndim}I", *array.shape)
        + np.ascontiguousarray(array, dtype=IDX_DTYPES[code]).tobytes()
    )
    if compress if compress is not None else path.suffix == ".gz":
        payload = gzip.compress(payload, mtime=0)
    with atomic_open(path) as f:
        f.write(payload)
