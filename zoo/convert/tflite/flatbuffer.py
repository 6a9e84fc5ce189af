"""The FlatBuffers wire format, as far as reading a TFLite file needs it.

Every read is bounds-checked first: a truncated or foreign file is a :class:`TFLiteFormatError`
(a ``ValueError``) that says where, never an ``IndexError`` or a ``struct.error``.
"""

from __future__ import annotations

import struct
from typing import Any


class TFLiteFormatError(ValueError):
    """The file is not a readable TFLite flatbuffer (truncated, corrupt or another format)."""


class Buffer:
    """Bounds-checked little-endian reads from the file's bytes."""

    def __init__(self, data: bytes, path: str) -> None:
        self.data = data
        self.path = path
        self.end = 0  # the furthest byte read: where the flatbuffer's parts end

    def need(self, pos: int, size: int, what: str) -> None:
        if pos < 0 or size < 0 or pos + size > len(self.data):
            raise TFLiteFormatError(
                f"{self.path}: corrupt or truncated TFLite file: {what} at byte {pos} "
                f"(+{size}) lies outside the file's {len(self.data)} bytes; re-download it"
            )
        self.end = max(self.end, pos + size)

    def view(self, pos: int, size: int) -> memoryview:
        return memoryview(self.data)[pos : pos + size]

    def unpack(self, fmt: str, pos: int, what: str) -> Any:
        size = struct.calcsize("<" + fmt)
        self.need(pos, size, what)
        return struct.unpack_from("<" + fmt, self.data, pos)[0]


class Table:
    """One flatbuffer table: fields are found through its vtable by slot number."""

    def __init__(self, buf: Buffer, pos: int, what: str) -> None:
        self.buf, self.pos, self.what = buf, pos, what
        vtable = pos - buf.unpack("i", pos, f"{what} table")
        self.vt_size = buf.unpack("H", vtable, f"{what} vtable")
        if self.vt_size < 4 or self.vt_size % 2:
            raise TFLiteFormatError(f"{buf.path}: corrupt TFLite file: bad vtable of {what}")
        buf.need(vtable, self.vt_size, f"{what} vtable")
        self.vtable = vtable

    def _field(self, slot: int) -> int | None:
        entry = 4 + 2 * slot
        if entry >= self.vt_size:
            return None
        offset = self.buf.unpack("H", self.vtable + entry, f"{self.what} vtable")
        return self.pos + offset if offset else None

    def scalar(self, slot: int, fmt: str, default: Any = 0) -> Any:
        pos = self._field(slot)
        return default if pos is None else self.buf.unpack(fmt, pos, f"{self.what} field {slot}")

    def _target(self, slot: int) -> int | None:
        pos = self._field(slot)
        if pos is None:
            return None
        return pos + self.buf.unpack("I", pos, f"{self.what} field {slot}")

    def table(self, slot: int, what: str) -> Table | None:
        pos = self._target(slot)
        return None if pos is None else Table(self.buf, pos, what)

    def _vector(self, slot: int, item_size: int) -> tuple[int, int]:
        """(start, length) of the vector in ``slot``; (0, 0) when the field is absent."""
        pos = self._target(slot)
        if pos is None:
            return 0, 0
        length = self.buf.unpack("I", pos, f"{self.what} vector {slot}")
        self.buf.need(pos + 4, length * item_size, f"{self.what} vector {slot}")
        return pos + 4, length

    def scalars(self, slot: int, fmt: str) -> tuple:
        start, length = self._vector(slot, struct.calcsize("<" + fmt))
        return struct.unpack_from(f"<{length}{fmt}", self.buf.data, start) if length else ()

    def tables(self, slot: int, what: str) -> list[Table]:
        start, length = self._vector(slot, 4)
        return [
            Table(self.buf, start + 4 * i + self.buf.unpack("I", start + 4 * i, what), what)
            for i in range(length)
        ]

    def raw(self, slot: int) -> bytes:
        start, length = self._vector(slot, 1)
        return bytes(self.buf.data[start : start + length])

    def view(self, slot: int) -> memoryview:
        """The byte vector in ``slot`` without copying it: a hostile file can point many
        tables at one large vector, and a copy per reference multiplies its size."""
        start, length = self._vector(slot, 1)
        return self.buf.view(start, length)

    def string(self, slot: int) -> str:
        return self.raw(slot).decode("utf-8", errors="replace")
