"""``fetch``: get a file into the local cache from the first source that delivers verified bytes.

Guarantees (see :mod:`zoo.hub.cache` for the on-disk layout):

* A cached file is returned without any network access (only its size is checked;
  ``verify_cache`` re-hashes).
* Bytes are only written to ``<final>.incomplete`` while holding ``<final>.lock`` (an OS-level
  flock, released by the kernel if the holder dies), so N processes download a file once.
* A partial file left by a killed process is resumed with ``Range: bytes=N-`` when the result
  can be verified (a hash was given or recorded); a resumed file that fails verification is
  downloaded once more from byte 0 before the source is given up.
* Size and hashes are checked before ``os.replace`` moves the file to its final name, so
  nothing unverified ever sits under a final name.
* Copies found in other libraries' caches (``local``, see :mod:`zoo.hub.local_caches`) come
  first: each is copied, then checked against the expected hash *and* what its cache vouches
  for; a copy that fails is refused (logged, and named in any error) and never modified.
* Sources are tried in order: ``ZOO_MIRROR`` entries, then the given ones. 4xx, refused
  connections and DNS failures move on at once; 5xx, resets, timeouts and truncated bodies are
  retried with exponential backoff. ``deadline`` bounds everything, lock waits included.
* With no hash, the first download's sha256/size is recorded (trust on first use) and every
  later download of the same cache key must match it. The record is *provisional*: a plain
  ``fetch`` caller gets the file, reused by later calls without the network, and ``zoo cache
  verify`` reports it as provisional until the caller confirms the file is good
  (:func:`~zoo.hub.cache.confirm_recorded`) or drops file and record because it is not
  (:func:`~zoo.hub.cache.drop_provisional`, then the next fetch downloads again).
  :mod:`zoo.weights` confirms once the file converted into a checked checkpoint and drops it
  when the conversion fails. A caller that dropped a bad first download passes the source
  that served it (the record's ``url``) in ``skip``, so that the next fetch tries the others.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import filelock

from . import config
from .cache import (
    TofuRecord,
    cache_key,
    lock_path,
    partial_path,
    path_for_key,
    record_hash,
    recorded_hash,
    validate_filename,
)
from .download import Deadline, Settings, SourceFailed, download, new_session
from .errors import (
    AllSourcesFailedError,
    Attempt,
    DeadlineExceededError,
    HashMismatchError,
    OfflineError,
    format_attempts,
    redact,
)
from .integrity import FileDigest, normalize_sha1, normalize_sha256, normalize_size, verify_file
from .local_caches import LocalFile, copy_verified, is_verifiable
from .sources import Source, default_filename, mirror_sources, parse_source

log = logging.getLogger(__name__)

SourceLike = str | os.PathLike[str]


@dataclass(frozen=True)
class _Expected:
    sha256: str | None
    sha1: str | None
    size: int | None
    tofu: TofuRecord | None = None

    @property
    def has_hash(self) -> bool:
        return bool(self.sha256 or self.sha1)

    def describe(self) -> str:
        parts = [
            f"sha256 {self.sha256}" if self.sha256 else "",
            f"sha1 {self.sha1}" if self.sha1 else "",
            f"{self.size} bytes" if self.size is not None else "",
        ]
        return ", ".join(p for p in parts if p) or "no known hash"


def _with_tofu(expected: _Expected, key: str) -> _Expected:
    """Hash-less fetches are checked against what the first download recorded."""
    if expected.has_hash:
        return expected
    record = recorded_hash(key)
    if record is None:
        return expected
    size = expected.size if expected.size is not None else record.size
    return _Expected(record.sha256, None, size, record)


def _is_cached(final: Path, size: int | None) -> bool:
    try:
        st = final.stat()
    except FileNotFoundError:
        return False
    return size is None or st.st_size == size


def _identify(
    urls: SourceLike | Sequence[SourceLike],
    sha256: str | None,
    sha1: str | None,
    size: int | None,
    filename: str | None,
) -> tuple[list[SourceLike], _Expected, str, str]:
    """(sources, expected digest, cache filename, cache key) of a fetch request, validated."""
    given = [urls] if isinstance(urls, (str, os.PathLike)) else list(urls)
    if not given:
        raise ValueError("fetch() needs at least one source")
    expected = _Expected(normalize_sha256(sha256), normalize_sha1(sha1), normalize_size(size))
    filename = validate_filename(filename if filename is not None else default_filename(given[0]))
    key = cache_key(
        filename, source=os.fspath(given[0]), sha256=expected.sha256, sha1=expected.sha1
    )
    return given, expected, filename, key


def cached_copy(
    urls: SourceLike | Sequence[SourceLike],
    *,
    sha256: str | None = None,
    sha1: str | None = None,
    size: int | None = None,
    filename: str | None = None,
) -> Path | None:
    """The cached file :func:`fetch` would return at once for these arguments, else None.

    Only a ``stat``: no lock, no network. For plans such as ``zoo download --dry-run``.
    """
    _, expected, _, key = _identify(urls, sha256, sha1, size, filename)
    final = path_for_key(key)
    return final if _is_cached(final, _with_tofu(expected, key).size) else None


def fetch(
    urls: SourceLike | Sequence[SourceLike],
    *,
    sha256: str | None = None,
    sha1: str | None = None,
    size: int | None = None,
    filename: str | None = None,
    quiet: bool | None = None,
    deadline: float | None = None,
    local: Sequence[LocalFile] = (),
    local_root: str | os.PathLike[str] | None = None,
    skip: Collection[str] = (),
) -> Path:
    """Return the path of a verified cached copy of the file, downloading it if needed.

    ``urls`` are alternative sources tried in order (``http(s)://``,
    ``hf://org/repo@rev/path``, ``file://`` or absolute paths); ``ZOO_MIRROR`` entries come
    first. ``sha256`` may be a prefix of >= 8 hex digits; ``sha1`` must be complete.
    ``filename`` (default: basename of the first source) must be a single safe path component.
    ``deadline`` is in seconds (default ``$ZOO_DEADLINE`` or 3600). ``local``: copies in other
    libraries' caches (:func:`~zoo.hub.local_caches.find_local`), tried before any source.
    ``local_root``: local sources must really lie in this folder (e.g. the folder of the
    manifest naming them); a symlink out of it is refused, as one out of a ``ZOO_MIRROR``
    folder always is. ``skip``: labels of sources (mirrors included) not to try, e.g. the
    ``url`` of a first-use record dropped because that source served a bad file.

    Raises ``ValueError`` for bad arguments, else a :class:`~zoo.hub.errors.FetchError`:
    ``HashMismatchError``, ``OfflineError``, ``DeadlineExceededError`` or
    ``AllSourcesFailedError`` (listing every source with its reason).
    """
    given, expected, filename, key = _identify(urls, sha256, sha1, size, filename)
    sources = [parse_source(s) for s in given]  # bad sources fail before any I/O
    if local_root is not None:
        root = os.fspath(local_root)
        sources = [replace(s, root=root) if s.kind == "local" else s for s in sources]
    final = path_for_key(key)

    if _is_cached(final, _with_tofu(expected, key).size):
        return final

    limit = config.default_deadline() if deadline is None else float(deadline)
    clock = Deadline.after(limit)
    final.parent.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(str(lock_path(final)))
    try:
        lock.acquire(timeout=max(clock.remaining(), 0.0))
    except filelock.Timeout:
        raise DeadlineExceededError(
            f"gave up after {limit:g}s waiting for {lock_path(final)}: another process is "
            f"fetching {filename}"
        ) from None
    try:
        expected = _with_tofu(expected, key)  # another process may have recorded it meanwhile
        if _is_cached(final, expected.size):
            return final  # another process finished while we waited for the lock
        with contextlib.suppress(FileNotFoundError):
            final.unlink()  # wrong size: never hand it out again
        return _fetch_locked(
            key, final, filename, sources, local, expected, clock, quiet, frozenset(skip)
        )
    finally:
        lock.release()


def _fetch_locked(
    key: str,
    final: Path,
    filename: str,
    sources: list[Source],
    local: Sequence[LocalFile],
    expected: _Expected,
    clock: Deadline,
    quiet: bool | None,
    skip: frozenset[str],
) -> Path:
    offline = config.is_offline()
    attempts: list[Attempt] = []
    mismatches: list[HashMismatchError] = []
    part = partial_path(final)
    for candidate in local:
        digest = _from_local_cache(candidate, part, expected, attempts)
        if digest is not None:
            source = Source("local", str(candidate.path), candidate.label)
            _commit(key, final, part, source, expected, digest, filename)
            return final
    session = None
    try:
        for source in [*mirror_sources(filename), *sources]:
            if source.label in skip:
                attempts.append((source.label, "skipped: it served a bad file earlier"))
                continue
            if offline and source.is_remote:
                attempts.append((source.label, "skipped: offline mode"))
                continue
            try:
                if source.is_remote:
                    session = session or new_session()  # one connection pool per fetch
                    settings = Settings.from_env(session, clock, config.quiet_default(quiet))
                    digest = _from_http(source, part, filename, expected, settings)
                else:
                    digest = _from_local(source, part, expected)
            except SourceFailed as exc:
                attempts.append((source.label, str(exc)))
                continue
            except DeadlineExceededError as exc:
                attempts.append((source.label, str(exc)))
                raise DeadlineExceededError(
                    f"{exc}; tried: {format_attempts(attempts)}", attempts
                ) from None
            except HashMismatchError as exc:
                with contextlib.suppress(FileNotFoundError):
                    part.unlink()  # never resume from bytes known to be wrong
                attempts.append((source.label, f"{exc.algorithm} mismatch (got {exc.actual})"))
                mismatches.append(_explain_tofu(exc, expected, filename))
                continue
            _commit(key, final, part, source, expected, digest, filename)
            return final
    finally:
        if session is not None:
            session.close()
    if mismatches:
        raise mismatches[0].with_attempts(attempts)
    if offline:
        raise OfflineError(_offline_message(filename, final, expected, attempts), attempts)
    raise AllSourcesFailedError(filename, attempts)


def _from_http(
    source: Source, part: Path, filename: str, expected: _Expected, settings: Settings
) -> FileDigest:
    log.info("fetching %s from %s", filename, redact(source.location))
    for first_try in (True, False):
        resumed = download(
            source.location,
            part,
            label=source.label,
            filename=filename,
            expected_size=expected.size,
            resume=expected.has_hash,
            headers=source.headers,
            settings=settings,
        )
        try:
            return _verify(part, expected, source.label)
        except HashMismatchError:
            if not (resumed and first_try):
                raise
            # The partial file may come from another source or an older upstream version.
            log.info("resumed download of %s failed verification; restarting", filename)
            part.unlink()
    raise AssertionError("unreachable")


def _escapes(source: Source) -> bool:
    """Whether the local file is a symlink leading out of its source's folder. (A path the
    manifest names outside its folder is its author's choice; a link is somebody else's.)"""
    if source.root is None or not os.path.islink(source.location):
        return False
    real, root = os.path.realpath(source.location), os.path.realpath(source.root)
    return os.path.commonpath([real, root]) != root


def _from_local(source: Source, part: Path, expected: _Expected) -> FileDigest:
    src = Path(source.location)
    if _escapes(source):
        raise SourceFailed(
            f"refused: a symlink to {os.path.realpath(src)}, outside {source.root}; copy the "
            "file into that folder instead"
        )
    try:
        st = src.stat()
    except FileNotFoundError:
        raise SourceFailed("no such file") from None
    except OSError as exc:
        raise SourceFailed(f"cannot read ({exc.strerror})") from None
    if not src.is_file():
        raise SourceFailed("not a regular file")
    if expected.size is not None and st.st_size != expected.size:
        raise HashMismatchError(source.label, "size", str(expected.size), str(st.st_size))
    try:
        # Copy first, then verify the copy: what we hash is exactly what the cache will serve.
        shutil.copyfile(src, part)
        with open(part, "rb+") as f:
            os.fsync(f.fileno())
    except OSError as exc:
        raise SourceFailed(f"copy failed ({exc.strerror or exc})") from None
    return _verify(part, expected, source.label)


def _from_local_cache(
    candidate: LocalFile, part: Path, expected: _Expected, attempts: list[Attempt]
) -> FileDigest | None:
    """A verified copy of ``candidate`` at ``part``, or None with the reason in ``attempts``."""
    if not is_verifiable(candidate, expected.sha256, expected.sha1):
        attempts.append((candidate.label, "not used: no hash to verify it against"))
        return None
    try:
        return copy_verified(
            candidate, part, sha256=expected.sha256, sha1=expected.sha1, size=expected.size
        )
    except HashMismatchError as exc:
        log.warning("%s", candidate.refusal(exc))
        attempts.append((candidate.label, f"refused: {exc.algorithm} mismatch (got {exc.actual})"))
    except OSError as exc:
        attempts.append((candidate.label, f"not used: cannot copy ({exc.strerror or exc})"))
    return None


def _verify(part: Path, expected: _Expected, label: str) -> FileDigest:
    return verify_file(part, expected.sha256, expected.sha1, expected.size, source=label)


def _explain_tofu(exc: HashMismatchError, expected: _Expected, filename: str) -> HashMismatchError:
    record = expected.tofu
    if record is None:
        return exc
    note = (
        f"expected value recorded on first use at {record.recorded_at} from "
        f"{redact(record.url)}; if the upstream file legitimately changed, run "
        f"`zoo cache rm --forget {filename}`"
    )
    return HashMismatchError(exc.url, exc.algorithm, exc.expected, exc.actual, note=note)


def _commit(
    key: str,
    final: Path,
    part: Path,
    source: Source,
    expected: _Expected,
    digest: FileDigest,
    filename: str,
) -> None:
    if not expected.has_hash:
        # Record before the rename: a file under a final name always has its reference hash.
        record = record_hash(key, digest.sha256, digest.size, source.label)
        if record.sha256 != digest.sha256:
            part.unlink()
            raise _explain_tofu(
                HashMismatchError(source.label, "sha256", record.sha256, digest.sha256),
                _Expected(record.sha256, None, record.size, record),
                filename,
            )
    os.replace(part, final)


def _offline_message(
    filename: str, final: Path, expected: _Expected, attempts: Sequence[Attempt]
) -> str:
    tried = format_attempts(attempts)
    return (
        f"offline mode (ZOO_OFFLINE/HF_HUB_OFFLINE) is on and {filename!r} ({expected.describe()})"
        f" is not cached. Put a copy in a directory named by ZOO_MIRROR (as <dir>/{filename};"
        f" it is verified on use) or at {final}. Sources: {tried}"
    )
