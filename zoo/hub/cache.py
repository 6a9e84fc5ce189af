"""The on-disk cache of fetched files, its trust-on-first-use records, and ls/rm/verify.

Layout (``zoo_home()`` is ``$ZOO_HOME``, default ``~/.cache/zoo``)::

    $ZOO_HOME/
      files/
        sha256-<hex>/<filename>              verified file; <hex> is the sha256 (or prefix) given
        sha1-<hex>/<filename>                ... when only a sha1 was given
        url-<16 hex>/<filename>              ... no hash given: sha256 of the first source URL
        <dir>/<filename>.incomplete          partial download, only written under the lock;
                                             resumed with an HTTP Range request
        <dir>/<filename>.lock                per-file OS lock (flock); stale files are harmless
      tofu.json                              {key: {sha256, size, url, recorded_at}} for files
                                             fetched without a hash (trust on first use)
      tofu.json.lock

The cache key is ``"<dir>/<filename>"``. Putting the hash in the directory name means two
different files that share a basename (``model.safetensors``!) never collide, and a file can
only ever sit under the name of the hash it was verified against.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fnmatch
import hashlib
import json
import logging
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import filelock

from .atomic import atomic_write
from .config import cache_dir, zoo_home
from .errors import FetchError, HashMismatchError
from .integrity import hash_file

log = logging.getLogger(__name__)

PARTIAL_SUFFIX = ".incomplete"
LOCK_SUFFIX = ".lock"
_RESERVED_SUFFIXES = (PARTIAL_SUFFIX, LOCK_SUFFIX)
# Conservative on purpose: filenames come from manifests and URLs that may be hostile, and a
# cache entry must be a single, boring path component on every OS.
_SAFE_FILENAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+=@,~-]*")
_MAX_FILENAME = 200  # leaves room for ".incomplete" under the usual 255-byte limit
_KEY_DIR = re.compile(r"(sha256-[0-9a-f]{8,64}|sha1-[0-9a-f]{40}|url-[0-9a-f]{16})")


def validate_filename(filename: str) -> str:
    """Return ``filename`` if it is one safe path component, else raise ``ValueError``."""
    reason = None
    if not isinstance(filename, str) or not filename:
        reason = "it is empty"
    elif "/" in filename or "\\" in filename or (os.altsep and os.altsep in filename):
        reason = "it contains a path separator"
    elif ".." in filename:
        reason = "it contains '..'"
    elif os.path.isabs(filename):
        reason = "it is absolute"
    elif len(filename) > _MAX_FILENAME:
        reason = f"it is longer than {_MAX_FILENAME} characters"
    elif not _SAFE_FILENAME.fullmatch(filename):
        reason = "it has characters outside [A-Za-z0-9._+=@,~-] or starts with '.'/'-'"
    elif filename.endswith(_RESERVED_SUFFIXES):
        reason = f"it ends with a reserved suffix {_RESERVED_SUFFIXES}"
    if reason:
        raise ValueError(f"refusing filename {filename!r} (path traversal guard): {reason}")
    return filename


def cache_key(
    filename: str, *, source: str, sha256: str | None = None, sha1: str | None = None
) -> str:
    """``"<dir>/<filename>"``: the directory comes from the hash, else from the source URL."""
    validate_filename(filename)
    if sha256:
        directory = f"sha256-{sha256}"
    elif sha1:
        directory = f"sha1-{sha1}"
    else:
        directory = "url-" + hashlib.sha256(source.encode("utf-8")).hexdigest()[:16]
    return f"{directory}/{filename}"


def path_for_key(key: str) -> Path:
    directory, _, filename = key.partition("/")
    if not _KEY_DIR.fullmatch(directory):
        raise ValueError(f"not a cache key: {key!r}")
    return cache_dir() / directory / validate_filename(filename)


def partial_path(final: Path) -> Path:
    return final.with_name(final.name + PARTIAL_SUFFIX)


def lock_path(final: Path) -> Path:
    return final.with_name(final.name + LOCK_SUFFIX)


# --------------------------------------------------------------------------- trust on first use


@dataclass(frozen=True)
class TofuRecord:
    """What the first download of a hash-less cache key looked like."""

    sha256: str
    size: int
    url: str
    recorded_at: str  # ISO 8601, UTC
    # Until a caller confirms the file is what it should be (zoo.weights: converted and
    # checked), the record is provisional: `cache verify` says so, and a caller that finds the
    # file bad drops file and record together (drop_provisional) instead of reusing it forever.
    provisional: bool = False


def _tofu_file() -> Path:
    return zoo_home() / "tofu.json"


def _read_tofu() -> dict[str, dict[str, object]]:
    path = _tofu_file()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    try:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("top level is not an object")
    except ValueError as exc:
        # Silently starting over would re-trust whatever the network serves next.
        raise FetchError(f"{path} is corrupt ({exc}); fix it or delete it to start over") from exc
    return data


def _write_json_atomic(path: Path, data: object) -> None:
    with atomic_write(path, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)


def _tofu_lock() -> filelock.FileLock:
    path = _tofu_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    return filelock.FileLock(str(path) + LOCK_SUFFIX, timeout=60)


def recorded_hash(key: str) -> TofuRecord | None:
    """The trust-on-first-use record of cache ``key``, if any."""
    raw = _read_tofu().get(key)
    if not isinstance(raw, dict):
        return None
    try:
        return TofuRecord(
            sha256=str(raw["sha256"]),
            size=int(raw["size"]),  # type: ignore[call-overload]
            url=str(raw.get("url", "")),
            recorded_at=str(raw.get("recorded_at", "?")),
            provisional=raw.get("provisional") is True,
        )
    except (KeyError, TypeError, ValueError):
        return None


def record_hash(
    key: str, sha256: str, size: int, url: str, *, provisional: bool = True
) -> TofuRecord:
    """Record the first download of ``key``; an existing record is kept (first use wins)."""
    with _tofu_lock():
        data = _read_tofu()
        if key in data:
            existing = recorded_hash(key)
            if existing is not None:
                return existing
        now = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
        record = TofuRecord(sha256, size, url, now, provisional)
        data[key] = asdict(record)
        _write_json_atomic(_tofu_file(), data)
        return record


def confirm_recorded(key: str) -> bool:
    """Mark the first-use record of ``key`` as confirmed (the file proved good); False if
    there is no provisional record."""
    with _tofu_lock():
        data = _read_tofu()
        raw = data.get(key)
        if not isinstance(raw, dict) or raw.get("provisional") is not True:
            return False
        data[key] = {k: v for k, v in raw.items() if k != "provisional"}
        _write_json_atomic(_tofu_file(), data)
        return True


def drop_provisional(key: str) -> TofuRecord | None:
    """Remove the cached file of ``key`` and its record if the record is still provisional
    (a first download that turned out bad); a confirmed record and its file stay. Returns
    the dropped record (its ``url`` names the source that served the bad bytes), else None."""
    final = path_for_key(key)
    lock = filelock.FileLock(str(lock_path(final)), timeout=60)
    with lock, _tofu_lock():
        record = recorded_hash(key)
        if record is None or not record.provisional:
            return None
        final.unlink(missing_ok=True)
        data = _read_tofu()
        del data[key]
        _write_json_atomic(_tofu_file(), data)
    log.warning("dropped %s and its first-use hash: the file proved bad", key)
    return record


def forget_recorded(key: str) -> bool:
    """Drop the record of ``key`` (accept a legitimately changed upstream file)."""
    with _tofu_lock():
        data = _read_tofu()
        if data.pop(key, None) is None:
            return False
        _write_json_atomic(_tofu_file(), data)
        return True


# --------------------------------------------------------------------------- ls / rm / verify


@dataclass(frozen=True)
class CacheEntry:
    """One file in the cache (complete, or a resumable ``.incomplete`` partial)."""

    path: Path
    filename: str
    key: str
    size: int
    mtime: float
    sha256: str | None  # from the key (may be a prefix) or the TOFU record; None if unknown
    is_partial: bool


class VerifyResult(NamedTuple):
    entry: CacheEntry
    ok: bool | None  # None: nothing to verify against (partial file, or no known hash)
    reason: str
    # The hash matches a first-use record nothing has confirmed yet (ok is None then).
    provisional: bool = False


def _expected_sha256(key: str, tofu: dict[str, dict[str, object]]) -> str | None:
    directory = key.partition("/")[0]
    if directory.startswith("sha256-"):
        return directory[len("sha256-") :]
    record = tofu.get(key)
    if isinstance(record, dict) and isinstance(record.get("sha256"), str):
        return str(record["sha256"])
    return None


def cache_entries() -> list[CacheEntry]:
    """Every cached file and partial download, sorted by filename then key."""
    root = cache_dir()
    if not root.is_dir():
        return []
    tofu = _read_tofu()
    entries: list[CacheEntry] = []
    for directory in root.iterdir():
        if not directory.is_dir() or not _KEY_DIR.fullmatch(directory.name):
            continue
        for path in directory.iterdir():
            name = path.name
            if name.endswith(LOCK_SUFFIX) or not path.is_file():
                continue
            is_partial = name.endswith(PARTIAL_SUFFIX)
            filename = name[: -len(PARTIAL_SUFFIX)] if is_partial else name
            key = f"{directory.name}/{filename}"
            try:
                st = path.stat()
            except FileNotFoundError:  # removed concurrently
                continue
            entries.append(
                CacheEntry(
                    path,
                    filename,
                    key,
                    st.st_size,
                    st.st_mtime,
                    _expected_sha256(key, tofu),
                    is_partial,
                )
            )
    entries.sort(key=lambda e: (e.filename, e.key, e.is_partial))
    return entries


def remove_cached(pattern: str, *, forget: bool = False) -> list[Path]:
    """Delete cached files whose filename (or key) matches the fnmatch ``pattern``.

    Partial downloads and lock files go too. An entry whose lock is held (a download in
    progress) is skipped with a warning rather than pulled from under the downloader.
    ``forget=True`` also drops TOFU records, accepting a changed upstream file next time.
    """
    removed: list[Path] = []
    seen: set[str] = set()
    for entry in cache_entries():
        if entry.key in seen:
            continue
        if not _matches(pattern, entry.key):
            continue
        seen.add(entry.key)
        final = entry.path.with_name(entry.filename)
        lock = filelock.FileLock(str(lock_path(final)), timeout=0)
        try:
            lock.acquire()
        except filelock.Timeout:
            log.warning("skipping %s: a download of it is in progress", entry.key)
            continue
        try:
            for path in (final, partial_path(final)):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed.append(path)
        finally:
            lock.release()
        with contextlib.suppress(OSError):
            lock_path(final).unlink()
        with contextlib.suppress(OSError):
            final.parent.rmdir()  # only succeeds once the key directory is empty
    if forget:
        forget_matching(pattern)
    return removed


def _matches(pattern: str, key: str) -> bool:
    filename = key.partition("/")[2]
    return fnmatch.fnmatchcase(filename, pattern) or fnmatch.fnmatchcase(key, pattern)


def forget_matching(pattern: str) -> list[str]:
    """Drop the TOFU records whose filename (or key) matches ``pattern``; return their keys.

    Works whether or not the file is still cached: after a mismatch nothing is cached, and
    this is how a user accepts a legitimately changed upstream file.
    """
    with _tofu_lock():
        data = _read_tofu()
        keys = sorted(k for k in data if _matches(pattern, k))
        if keys:
            for key in keys:
                del data[key]
            _write_json_atomic(_tofu_file(), data)
    return keys


_PROVISIONAL = (
    "provisional: matches the hash recorded on its first download, but nothing has confirmed "
    "that download is good yet (`zoo download` of its weights converts and confirms it; "
    "`zoo cache rm --forget {}` drops it)"
)


def verify_cache() -> list[VerifyResult]:
    """Re-hash every complete cached file against the hash in its key or its TOFU record."""
    tofu = _read_tofu()
    results: list[VerifyResult] = []
    for entry in cache_entries():
        if entry.is_partial:
            results.append(VerifyResult(entry, None, "partial download (resumable)"))
            continue
        directory = entry.key.partition("/")[0]
        record = tofu.get(entry.key) if isinstance(tofu.get(entry.key), dict) else None
        if record is None and not directory.startswith(("sha256-", "sha1-")):
            results.append(VerifyResult(entry, None, "no known hash"))
            continue
        try:
            digest = hash_file(entry.path, sha1=directory.startswith("sha1-"))
        except OSError as exc:
            fix = f"run `zoo cache rm {entry.filename}` and download again"
            results.append(VerifyResult(entry, False, f"unreadable ({exc}); {fix}"))
            continue
        origin = ""
        if directory.startswith("sha256-"):
            expected = directory[len("sha256-") :]
            ok = digest.sha256.startswith(expected)
            how = "sha256"
        elif directory.startswith("sha1-"):
            expected = directory[len("sha1-") :]
            ok = digest.sha1 == expected
            how = "sha1"
        else:
            assert record is not None
            expected = str(record.get("sha256"))
            ok = digest.sha256 == expected and digest.size == record.get("size")
            how, origin = "sha256", " (recorded on first use)"
            if ok and record.get("provisional") is True:
                reason = _PROVISIONAL.format(entry.filename)
                results.append(VerifyResult(entry, None, reason, provisional=True))
                continue
        if ok:
            results.append(VerifyResult(entry, True, f"{how} ok{origin}"))
        else:
            actual = digest.sha1 if how == "sha1" else digest.sha256
            err = HashMismatchError(
                str(entry.path), how, expected, str(actual), note=origin.strip(" ()")
            )
            fix = f"run `zoo cache rm {entry.filename}` and download again"
            results.append(VerifyResult(entry, False, f"{err}; {fix}"))
    return results
