"""Safe extraction from zip and tar archives (fetched files may come from hostile mirrors).

``fetch`` knows nothing about archives. A caller fetches the archive (verified against its own
hash, or TOFU), extracts a member with :func:`extract_member`, then verifies the member with
:func:`zoo.hub.verify_file` -- GluonCV publishes the sha1 of the ``.params`` inside the zip.

Rules, enforced before or while writing, never after:

* no member may leave the destination: absolute names, drive letters, ``..``, backslashes and
  NUL bytes are refused, and the resolved target must lie inside the destination;
* only regular files and directories: symlinks, hardlinks, devices and FIFOs are refused;
* member count and byte limits hold for the bytes actually decompressed (zip bombs lie in
  their headers), not just the declared sizes;
* every file is written to a temporary name and renamed into place (``extract_all`` stages
  the whole archive first), so a failure never leaves a half-written file under a real name.
"""

from __future__ import annotations

import contextlib
import lzma
import os
import re
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from .atomic import atomic_write
from .errors import ArchiveError, UnsafeArchiveError

DEFAULT_MAX_BYTES = 4 << 30  # 4 GiB: larger than any checkpoint this zoo ships
DEFAULT_MAX_MEMBERS = 10_000
_CHUNK = 1 << 20
_DRIVE = re.compile(r"[A-Za-z]:")
# What a corrupt member raises while it is decompressed (bz2 raises OSError).
_CORRUPT = (OSError, zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, lzma.LZMAError)


@dataclass(frozen=True)
class _Member:
    name: str
    kind: str  # "file", "dir", "link" or "special"
    size: int  # as declared by the archive (may lie)
    open: Callable[[], IO[bytes]]


def safe_member_path(name: str) -> PurePosixPath | None:
    """The relative path a member may be extracted to, ``None`` for the archive root, or
    :class:`UnsafeArchiveError` if the name could point outside the destination."""
    if "\x00" in name or "\\" in name:
        raise UnsafeArchiveError(f"member {name!r}: NUL byte or backslash in name")
    if name.startswith("/") or _DRIVE.match(name):
        raise UnsafeArchiveError(f"member {name!r}: absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(f"member {name!r}: '..' would escape the destination")
    return PurePosixPath(*parts) if parts else None


def _zip_kind(info: zipfile.ZipInfo) -> str:
    # Unix mode in the high 16 bits; the type bits are 0 for archives made elsewhere (and by
    # ZipFile.writestr), which zip tools treat as a plain file or directory.
    file_type = stat.S_IFMT(info.external_attr >> 16)
    if file_type == stat.S_IFLNK:
        return "link"
    if file_type not in (0, stat.S_IFREG, stat.S_IFDIR):
        return "special"
    return "dir" if info.is_dir() else "file"


def _tar_kind(info: tarfile.TarInfo) -> str:
    if info.isreg():
        return "file"
    if info.isdir():
        return "dir"
    return "link" if info.issym() or info.islnk() else "special"


@contextlib.contextmanager
def _open_members(archive: str | os.PathLike[str]) -> Iterator[list[_Member]]:
    path = os.fspath(archive)
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                yield [
                    _Member(i.filename, _zip_kind(i), i.file_size, lambda i=i: zf.open(i))
                    for i in zf.infolist()
                ]
            return
        if tarfile.is_tarfile(path):
            with tarfile.open(path, "r:*") as tf:
                members = tf.getmembers()

                def opener(info: tarfile.TarInfo) -> Callable[[], IO[bytes]]:
                    def _open() -> IO[bytes]:
                        handle = tf.extractfile(info)
                        if handle is None:
                            raise ArchiveError(f"member {info.name!r} has no data")
                        return handle

                    return _open

                yield [_Member(m.name, _tar_kind(m), m.size, opener(m)) for m in members]
            return
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, RuntimeError, *_CORRUPT) as exc:
        # RuntimeError: zipfile's "encrypted, password required"
        raise ArchiveError(f"cannot read archive {path}: {exc}") from exc
    raise ArchiveError(f"{path} is neither a zip nor a tar archive")


def _copy_limited(reader: IO[bytes], writer: IO[bytes], limit: int, name: str) -> int:
    written = 0
    while chunk := reader.read(min(_CHUNK, limit - written + 1)):
        written += len(chunk)
        if written > limit:
            raise UnsafeArchiveError(f"member {name!r} exceeds the size limit of {limit} bytes")
        writer.write(chunk)
    return written


def _write_atomic(member: _Member, dest: Path, limit: int) -> int:
    """Stream ``member`` into ``dest`` via a temporary file in the same directory."""
    with atomic_write(dest) as out, member.open() as reader:
        return _copy_limited(reader, out, limit, member.name)


def _reraise_io(exc: Exception, archive: str | os.PathLike[str]) -> ArchiveError:
    return ArchiveError(f"cannot extract from {os.fspath(archive)}: {exc}")


def extract_member(
    archive_path: str | os.PathLike[str],
    member: str,
    dest_path: str | os.PathLike[str],
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Path:
    """Extract the regular-file ``member`` of a zip/tar to ``dest_path`` (atomically).

    ``dest_path`` is chosen by the caller, so the member's name is not used as a path; the
    member must still be a regular file no larger than ``max_bytes`` (checked while streaming).
    """
    dest = Path(dest_path)
    with _open_members(archive_path) as members:
        found = [m for m in members if m.name == member]
        if not found:
            names = ", ".join(m.name for m in members[:10])
            raise ArchiveError(
                f"no member {member!r} in {os.fspath(archive_path)} "
                f"(has: {names}{', ...' if len(members) > 10 else ''})"
            )
        chosen = found[-1]  # like zipfile/tarfile: the last of duplicate names wins
        if chosen.kind != "file":
            raise UnsafeArchiveError(f"member {member!r} is a {chosen.kind}, not a regular file")
        if chosen.size > max_bytes:
            raise UnsafeArchiveError(
                f"member {member!r} declares {chosen.size} bytes, limit is {max_bytes}"
            )
        try:
            _write_atomic(chosen, dest, max_bytes)
        except _CORRUPT as exc:
            raise _reraise_io(exc, archive_path) from exc
    return dest


def _check_members(
    members: list[_Member], max_total_bytes: int, max_members: int
) -> list[tuple[_Member, PurePosixPath]]:
    if len(members) > max_members:
        raise UnsafeArchiveError(f"archive has {len(members)} members, limit is {max_members}")
    plan: list[tuple[_Member, PurePosixPath]] = []
    declared = 0
    for m in members:
        rel = safe_member_path(m.name)
        if m.kind not in ("file", "dir"):
            raise UnsafeArchiveError(f"member {m.name!r} is a {m.kind}; links are not extracted")
        if rel is None:
            continue
        declared += m.size if m.kind == "file" else 0
        if declared > max_total_bytes:
            raise UnsafeArchiveError(
                f"archive declares more than {max_total_bytes} bytes of content"
            )
        plan.append((m, rel))
    return plan


def _inside(root: Path, target: Path) -> bool:
    # resolve() follows symlinks already present in the destination, too.
    return target.resolve().is_relative_to(root.resolve())


def extract_all(
    archive: str | os.PathLike[str],
    dest_dir: str | os.PathLike[str],
    max_total_bytes: int = DEFAULT_MAX_BYTES,
    max_members: int = DEFAULT_MAX_MEMBERS,
) -> list[Path]:
    """Safely extract every member of a zip/tar into ``dest_dir``; return the files written.

    Every member is checked before anything is written, the content is staged in a sibling
    temporary directory, and files are renamed into ``dest_dir`` only once all of them
    extracted within the limits.
    """
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.extract-"))
    try:
        with _open_members(archive) as members:
            plan = _check_members(members, max_total_bytes, max_members)
            budget = max_total_bytes
            try:
                for m, rel in plan:
                    if m.kind == "dir":
                        (staging / rel).mkdir(parents=True, exist_ok=True)
                    else:
                        budget -= _write_atomic(m, staging / rel, budget)
            except UnsafeArchiveError:
                raise UnsafeArchiveError(
                    f"archive content exceeds the limit of {max_total_bytes} bytes"
                ) from None
            except _CORRUPT as exc:
                raise _reraise_io(exc, archive) from exc
        for m, rel in plan:  # all checks first: a refusal must not leave half the archive
            target = dest / rel
            if not _inside(dest, target.parent if m.kind == "file" else target):
                raise UnsafeArchiveError(f"member {m.name!r} resolves outside {dest}")
        written: list[Path] = []
        for m, rel in plan:
            target = dest / rel
            if m.kind == "dir":
                target.mkdir(parents=True, exist_ok=True)
            elif (staging / rel).exists():  # duplicates: moved already by an earlier entry
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(staging / rel, target)
                written.append(target)
        return written
    finally:
        shutil.rmtree(staging, ignore_errors=True)
