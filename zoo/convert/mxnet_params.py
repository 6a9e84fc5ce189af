"""A pure-Python reader for MXNet ``.params`` files (NDArray lists), so zoo needs no mxnet.

Format (little-endian), as written by ``mx.nd.save`` / ``Block.save_parameters``::

    file    := u64 0x112 | u64 reserved | u64 N | N x ndarray | u64 K | K x (u64 len | utf-8)
    ndarray := u32 magic, then per version (V3 0xF993FACA, V2 0xF993FAC9, V1 0xF993FAC8,
               or no magic at all in the oldest files, where the u32 is ndim)
"""

from __future__ import annotations

import struct
from pathlib import Path

import torch

LIST_MAGIC = 0x112
MAX_ARRAYS = 100_000  # GluonCV's largest networks have a few thousand
V1, V2, V3 = 0xF993FAC8, 0xF993FAC9, 0xF993FACA
DTYPES: dict[int, torch.dtype] = {
    0: torch.float32,
    1: torch.float64,
    2: torch.float16,
    3: torch.uint8,
    4: torch.int32,
    5: torch.int8,
    6: torch.int64,
    7: torch.bool,
    8: torch.int16,
    9: torch.uint16,
    10: torch.uint32,
    11: torch.uint64,
    12: torch.bfloat16,
}


class MXNetFormatError(ValueError):
    """The file is not a (supported) MXNet NDArray list."""


class _Reader:
    def __init__(self, data: bytes | memoryview, path: str) -> None:
        self.data = memoryview(data)
        self.pos = 0
        self.path = path

    def take(self, n: int) -> memoryview:
        if self.pos + n > len(self.data):
            raise MXNetFormatError(
                f"{self.path}: truncated at byte {self.pos} (needs {n} more bytes, "
                f"file has {len(self.data)}); re-download it"
            )
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def unpack(self, fmt: str) -> tuple:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))

    def u32(self) -> int:
        return self.unpack("I")[0]

    def i32(self) -> int:
        return self.unpack("i")[0]

    def u64(self) -> int:
        return self.unpack("Q")[0]


def read_params(path: str | Path) -> dict[str, torch.Tensor]:
    """Read every named array of a ``.params`` file, in file order (GluonCV's registration order).

    Keys keep MXNet's spelling (``layer1.0.bn1.gamma`` or ``conv0_weight``); mapping them onto a
    zoo model is the converter's job.
    """
    path = Path(path)
    reader = _Reader(path.read_bytes(), str(path))
    if len(reader.data) < 24 or reader.u64() != LIST_MAGIC:
        raise MXNetFormatError(f"{path}: not an MXNet .params file (bad list magic)")
    reader.u64()  # reserved
    arrays = [_read_ndarray(reader) for _ in range(_count(reader, "arrays"))]
    names = [_name(reader) for _ in range(_count(reader, "names"))]
    if len(names) != len(arrays):
        raise MXNetFormatError(
            f"{path}: {len(arrays)} arrays but {len(names)} names; zoo needs a named file "
            "(saved with save_parameters or ParameterDict.save)"
        )
    if len(set(names)) != len(names):
        raise MXNetFormatError(f"{path}: duplicate array names")
    return dict(zip(names, arrays, strict=True))


def _count(r: _Reader, what: str) -> int:
    """A declared number of items, checked before any is read: each takes at least 4 bytes,
    and no network has more than MAX_ARRAYS parameters."""
    count = r.u64()
    left = len(r.data) - r.pos
    if count > MAX_ARRAYS or count * 4 > left:
        raise MXNetFormatError(
            f"{r.path}: declares {count} {what} in {left} bytes (at most {MAX_ARRAYS}, and "
            "4 bytes each); corrupt or not a parameter file"
        )
    return count


def _name(r: _Reader) -> str:
    try:
        return bytes(r.take(r.u64())).decode("utf-8")
    except UnicodeDecodeError as err:
        raise MXNetFormatError(f"{r.path}: an array name is not UTF-8 ({err})") from None


def _read_ndarray(r: _Reader) -> torch.Tensor:
    magic = r.u32()
    if magic in (V2, V3):
        if r.i32() != 0:
            raise MXNetFormatError(f"{r.path}: sparse arrays are not supported")
        shape = _read_shape(r, version=magic)
        if shape is None:  # empty (V2 ndim 0) or unknown (V3 ndim -1): no payload follows
            return torch.empty(0)
    elif magic == V1:
        shape = _read_shape(r, version=V1)
    else:  # oldest layout: the u32 we read was ndim, dims are u32
        if magic > 32:
            raise MXNetFormatError(f"{r.path}: unknown array magic {magic:#x}")
        if magic == 0:
            return torch.empty(0)
        shape = tuple(r.unpack(f"{magic}I"))
    r.unpack("ii")  # device type and id: irrelevant on load
    code = r.i32()
    if code not in DTYPES:
        raise MXNetFormatError(f"{r.path}: unknown dtype code {code}")
    dtype = DTYPES[code]
    if any(dim <= 0 for dim in shape):
        raise MXNetFormatError(
            f"{r.path}: array shape {list(shape)}: dimensions must be positive (corrupt file)"
        )
    count = 1
    for dim in shape:
        count *= dim
    nbytes = count * dtype.itemsize
    raw = r.take(nbytes)
    # Copy out of the file buffer so tensors own their memory and are writable.
    return torch.frombuffer(bytearray(raw), dtype=dtype).reshape(shape)


def _read_shape(r: _Reader, version: int) -> tuple[int, ...] | None:
    ndim = r.i32()
    if version == V3 and ndim == -1:
        return None
    if version != V3 and ndim == 0:
        return None
    if ndim < 0 or ndim > 32:
        raise MXNetFormatError(f"{r.path}: corrupt shape (ndim={ndim})")
    return tuple(r.unpack(f"{ndim}q"))


def write_params(path: str | Path, arrays: dict[str, torch.Tensor]) -> None:
    """Write a V2 NDArray list (used by tests to build legacy-style files from real ones)."""
    out = bytearray(struct.pack("<QQQ", LIST_MAGIC, 0, len(arrays)))
    codes = {dtype: code for code, dtype in DTYPES.items()}
    for tensor in arrays.values():
        t = tensor.detach().contiguous().cpu()
        out += struct.pack("<Iii", V2, 0, t.dim())
        out += struct.pack(f"<{t.dim()}q", *t.shape)
        out += struct.pack("<iii", 1, 0, codes[t.dtype])
        out += t.reshape(-1).view(torch.uint8).numpy().tobytes()
    out += struct.pack("<Q", len(arrays))
    for name in arrays:
        encoded = name.encode("utf-8")
        out += struct.pack("<Q", len(encoded)) + encoded
    Path(path).write_bytes(bytes(out))
