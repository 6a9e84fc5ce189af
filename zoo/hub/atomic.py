"""Writing a file so that it appears under its final name complete or not at all.

The one way zoo writes a file others read (cache records, extracted archive members, converted
checkpoints): the bytes go to a unique hidden temporary file in the target's own folder (so the
rename never crosses filesystems), are flushed to disk, and only then renamed onto the final
name; on any error, or an interrupt, the temporary file is removed. Readers therefore see the
old file or the new one, never a half-written one, and concurrent writers never share a
temporary file. Torch-free, like the rest of :mod:`zoo.hub`.

Resumable downloads are the one exception: they keep their ``.incomplete`` partial on purpose
(see :mod:`zoo.hub.fetch`).

Mode: every file written here gets ``0666 & ~umask``, like any file the process creates (and
like the files of pip's and Hugging Face's caches), not mkstemp's owner-only ``0600``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import IO, Literal

TEMP_SUFFIX = ".tmp"


@contextmanager
def atomic_path(final: str | os.PathLike[str], *, suffix: str = TEMP_SUFFIX) -> Iterator[Path]:
    """Yield an empty temporary path beside ``final`` for any writer that takes a path; when the
    block ends without an error it replaces ``final``, otherwise it is removed.

    ``suffix`` ends the temporary name, for writers or checkers that go by the extension
    (``torch.export.load`` wants ``.pt2``).

    >>> with atomic_path(out) as tmp:  # doctest: +SKIP
    ...     safetensors.torch.save_file(tensors, tmp)
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        _sync(tmp)
        # mkstemp makes the file owner-only (0600), and some writers re-create it: set, last,
        # what any new file gets, 0666 less the umask, as pip's and Hugging Face's caches do.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_write(final: str | os.PathLike[str], mode: Literal["wb", "w"] = "wb") -> Iterator[IO]:
    """Yield a file open for writing (binary, or UTF-8 text for ``mode="w"``) that replaces
    ``final`` once the block ends without an error, as :func:`atomic_path`."""
    encoding = "utf-8" if mode == "w" else None
    with atomic_path(final) as tmp, open(tmp, mode, encoding=encoding) as f:
        yield f


@cache
def _umask() -> int:
    """The process umask (read once: reading it means setting it, which is not thread-safe)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _sync(path: Path) -> None:
    """Flush the file's data to disk: the rename must not become durable before the bytes."""
    fd = os.open(path, os.O_RDWR)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
