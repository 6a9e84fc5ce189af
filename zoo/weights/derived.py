"""What the cache holds besides downloads: converted checkpoints and extracted archive members.

Torch-free (``zoo cache ls|rm`` must stay fast). Layout under ``$ZOO_HOME``::

    weights/<arch>/<tag>.safetensors   converted checkpoint
    weights/<arch>/<tag>.json          its record: sha256, size, fingerprint, source downloads
    extracted/<key dir>/<member>       a member of the archive cached as files/<key dir>/...

A pattern matches a checkpoint by ``arch.tag``, ``arch/tag``, its tag or its file name, and a
member by its name or ``<key dir>/<member>``. Removal takes the same lock as the writer and
skips what is being written. :func:`derived_from` follows a download's cache key to what was
made from it, so that forgetting a download forgets those too.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import filelock

from zoo.hub import zoo_home

log = logging.getLogger("zoo")

CHECKPOINT = "checkpoint"
MEMBER = "member"


@dataclass(frozen=True)
class DerivedFile:
    kind: str  # CHECKPOINT or MEMBER
    name: str  # "arch.tag" for a checkpoint, "<key dir>/<member>" for a member
    path: Path
    size: int
    mtime: float
    sources: tuple[str, ...]  # cache keys of the downloads it was made from


def _weights_dir() -> Path:
    return zoo_home() / "weights"


def _extracted_dir() -> Path:
    return zoo_home() / "extracted"


def _record_files(record_path: Path) -> tuple[str, ...]:
    try:
        files = json.loads(record_path.read_text()).get("files", [])
    except (OSError, ValueError, AttributeError):
        return ()
    return tuple(f for f in files if isinstance(f, str)) if isinstance(files, list) else ()


def derived_files() -> list[DerivedFile]:
    """Every converted checkpoint and extracted member, sorted by kind then name."""
    found = []
    for path in sorted(_weights_dir().glob("*/*.safetensors")):
        with contextlib.suppress(FileNotFoundError):
            st = path.stat()
            name = f"{path.parent.name}.{path.stem}"
            sources = _record_files(path.with_suffix(".json"))
            found.append(DerivedFile(CHECKPOINT, name, path, st.st_size, st.st_mtime, sources))
    root = _extracted_dir()
    for path in sorted(root.glob("*/**/*")):
        if path.is_file() and not path.name.startswith("."):
            with contextlib.suppress(FileNotFoundError):
                st = path.stat()
                key_dir = path.relative_to(root).parts[0]
                name = path.relative_to(root).as_posix()
                archive = tuple(f"{key_dir}/{a.name}" for a in _archives_of(key_dir))
                found.append(DerivedFile(MEMBER, name, path, st.st_size, st.st_mtime, archive))
    return found


def _archives_of(key_dir: str) -> list[Path]:
    folder = zoo_home() / "files" / key_dir
    return [p for p in folder.glob("*") if p.is_file() and p.suffix not in (".lock", ".incomplete")]


def matches(item: DerivedFile, pattern: str) -> bool:
    names = {item.name, item.path.name}
    if item.kind == CHECKPOINT:
        arch, _, tag = item.name.partition(".")
        names |= {f"{arch}/{tag}", tag, item.path.stem}
    return any(fnmatch.fnmatchcase(n, pattern) for n in names)


def derived_from(keys: list[str]) -> list[DerivedFile]:
    """What was made from the downloads with these cache keys (their checkpoints, members)."""
    wanted = set(keys)
    key_dirs = {k.partition("/")[0] for k in keys}
    return [
        item
        for item in derived_files()
        if wanted & set(item.sources)
        or (item.kind == MEMBER and item.name.partition("/")[0] in key_dirs)
    ]


def remove_derived(items: list[DerivedFile]) -> list[Path]:
    """Delete these files (a checkpoint with its record), skipping one being written now."""
    removed = []
    for item in items:
        lock = filelock.FileLock(str(item.path) + ".lock", timeout=0)
        try:
            lock.acquire()
        except filelock.Timeout:
            log.warning("skipping %s: it is being written", item.path)
            continue
        try:
            extra = [item.path.with_suffix(".json")] if item.kind == CHECKPOINT else []
            for path in (item.path, *extra):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed.append(path)
        finally:
            lock.release()
        with contextlib.suppress(OSError):
            Path(str(item.path) + ".lock").unlink()
        with contextlib.suppress(OSError):
            item.path.parent.rmdir()  # only once empty
    return removed


__all__ = [
    "CHECKPOINT",
    "MEMBER",
    "DerivedFile",
    "derived_files",
    "derived_from",
    "matches",
    "remove_derived",
]
