"""Reading and writing LeCun's IDX format (gzip-compressed).

The reader is lenient about *content* (a wrong magic number or odd image size
still parses, so the validation suite can report it by name) but strict about
*structure*: a truncated or corrupted gzip stream, or a payload whose length
does not match its header, raises ``IdxError`` with a one-line reason naming
the file, because nothing sensible can be checked past that point.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension


class IdxError(ValueError):
    """An IDX file cannot be parsed; the message names the file."""


@dataclass(frozen=True)
class IdxArray:
    path: Path
    magic: int
    data: np.ndarray  # uint8, shape from the header: (n,) labels, (n, rows, cols) images


def _decompress(path: Path) -> bytes:
    try:
        with gzip.open(path, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        raise IdxError(f"{path}: file is missing") from None
    except EOFError:
        raise IdxError(f"{path}: truncated gzip stream (file ends early)") from None
    except (gzip.BadGzipFile, zlib.error, OSError) as exc:
        raise IdxError(f"{path}: corrupted gzip data ({exc})") from None


def read(path: Path | str) -> IdxArray:
    path = Path(path)
    raw = _decompress(path)
    if len(raw) < 4:
        raise IdxError(f"{path}: too short for an IDX header ({len(raw)} bytes)")
    magic = struct.unpack(">I", raw[:4])[0]
    dtype_code, ndim = (magic >> 8) & 0xFF, magic & 0xFF
    if magic >> 16 != 0 or dtype_code != 0x08 or not 1 <= ndim <= 4:
        raise IdxError(f"{path}: not an unsigned-byte IDX file (magic {magic:#010x})")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise IdxError(f"{path}: header declares {ndim} dimensions but the file ends early")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(dims, dtype=np.int64))
    payload = len(raw) - header
    if payload != expected:
        raise IdxError(
            f"{path}: header says {'x'.join(map(str, dims))} = {expected} bytes of data, "
            f"file holds {payload}")
    data = np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)
    return IdxArray(path=path, magic=magic, data=data)


def write(path: Path | str, data: np.ndarray) -> None:
    """Write a uint8 array as gzip IDX (used to build test fixtures)."""
    data = np.ascontiguousarray(data, dtype=np.uint8)
    magic = 0x0800 | data.ndim
    header = struct.pack(f">I{data.ndim}I", magic, *data.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + data.tobytes())


def load_split(raw_dir: Path, dataset, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (n, rows, cols) and labels (n,) of ``split`` ('train' or 'test')."""
    images = read(Path(raw_dir) / dataset.file_name(f"{split}_images"))
    labels = read(Path(raw_dir) / dataset.file_name(f"{split}_labels"))
    if images.data.ndim != 3:
        raise IdxError(f"{images.path}: expected 3 dimensions (n, rows, cols), "
                       f"found {images.data.ndim}")
    if labels.data.ndim != 1:
        raise IdxError(f"{labels.path}: expected 1 dimension (n,), found {labels.data.ndim}")
    return images.data, labels.data
