"""Converted zoo checkpoints under ``$ZOO_HOME/weights/<arch>/<tag>.safetensors``.

Torch-free: whether an entry is already converted (and was verified when it was written) is
answered from the file and the record next to it. Only building a missing checkpoint imports
:mod:`zoo.weights.conversion`, and with it torch.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path

import filelock

from zoo.errors import is_anticipated, user_message
from zoo.hub import (
    DeadlineExceededError,
    TofuRecord,
    cache_key,
    confirm_recorded,
    drop_provisional,
    hash_file,
    zoo_home,
)
from zoo.hub.atomic import atomic_write
from zoo.hub.config import default_deadline
from zoo.hub.download import Deadline
from zoo.hub.errors import redact
from zoo.weights.artifacts import fetch_file, member_path, plan_artifacts, source_labels
from zoo.weights.manifest import Artifact, ArtifactFile, WeightsEntry

log = logging.getLogger("zoo")


class WeightsUnavailableError(RuntimeError):
    """Every artifact of an entry failed; the message lists each one's reason."""


def checkpoint_path(entry: WeightsEntry) -> Path:
    return zoo_home() / "weights" / entry.arch / f"{entry.tag}.safetensors"


def converted_checkpoint(entry: WeightsEntry) -> Path | None:
    """The entry's converted checkpoint if it is complete, else None (no torch, no network)."""
    out = checkpoint_path(entry)
    return out if _is_recorded(out) else None


def ensure_checkpoint(entry: WeightsEntry, *, quiet: bool | None = None) -> Path:
    """The entry's converted checkpoint: fetched, verified, converted and loaded on first use.

    ``ZOO_DEADLINE`` bounds the whole call: waiting for another process's conversion and every
    download of every artifact tried.
    """
    out = checkpoint_path(entry)
    if _is_recorded(out):
        return out
    from zoo.weights import conversion  # torch: only when something has to be built

    conversion.require_registered(entry)  # before any download
    out.parent.mkdir(parents=True, exist_ok=True)
    # One process converts; the others (e.g. DDP ranks) wait and then find the result.
    limit = default_deadline()
    clock = Deadline.after(limit)
    try:
        lock = filelock.FileLock(str(out) + ".lock", timeout=limit).acquire()
    except filelock.Timeout:
        raise DeadlineExceededError(
            f"gave up after {limit:g}s (ZOO_DEADLINE) waiting for {out}.lock: another process "
            f"is converting {entry.name}"
        ) from None
    with lock:
        if _is_recorded(out):
            return out
        remove_stale_temporaries(out)  # under the lock: nobody else is writing them now
        failures = []
        for plan in plan_artifacts(entry):
            reasons = _build_from(entry, plan.artifact, out, quiet, clock)
            if not reasons:
                return out
            label = f"  artifact {plan.index} ({plan.artifact.format})"
            failures.append(f"{label}: {reasons[0]}")
            failures += [f"{label}, next source: {reason}" for reason in reasons[1:]]
        raise WeightsUnavailableError(
            f"could not get weights {entry.name}; every alternative failed:\n" + "\n".join(failures)
        )


def _build_from(
    entry: WeightsEntry, artifact: Artifact, out: Path, quiet: bool | None, clock: Deadline
) -> list[str]:
    """Write ``out`` from ``artifact`` (fetched, converted, loaded back); [] once done, else
    why not. A first download that fails is dropped with its record, and the artifact is tried
    again without the source that served it while the file has other sources (mirrors
    included): an error page from one mirror must not hide a good copy on the next."""
    from zoo.weights import conversion

    skip: dict[str, set[str]] = {}  # file name -> sources that served a bad first download
    reasons: list[str] = []
    while True:
        try:
            folder = _manifest_folder(entry)
            paths = [
                fetch_file(f, quiet, folder, skip=skip.get(f.name, ()), deadline=clock.remaining())
                for f in artifact.files
            ]
            conversion.build_checkpoint(entry, artifact, paths, out)
            conversion.check_loads(out)
            _write_record(out, artifact.format, files=download_keys(artifact))
        except DeadlineExceededError:
            out.unlink(missing_ok=True)
            raise  # ZOO_DEADLINE bounds the whole call: no further source or artifact is tried
        except Exception as err:
            # Whatever an artifact's bytes cause (hash, parse, decompression, torch, nesting)
            # is that artifact's failure: try the next source or artifact. A bug is not.
            if not is_anticipated(err):
                raise
            out.unlink(missing_ok=True)  # converted but not loadable: never under its name
            dropped = _drop_first_use_files(artifact)
            where = ", ".join(f"{f.name} from {redact(record.url)}" for f, record in dropped)
            reasons.append(user_message(err) + (f" (dropped {where})" if where else ""))
            log.info("%s: %s failed: %s", entry.name, artifact.format, err)
            if not _skip_bad_sources(dropped, skip):
                return reasons
            continue
        for key in first_use_keys(artifact):
            confirm_recorded(key)  # converted and loaded: the first-use hash is trusted
        return []


def _skip_bad_sources(
    dropped: list[tuple[ArtifactFile, TofuRecord]], skip: dict[str, set[str]]
) -> bool:
    """Add the sources that served the dropped files to ``skip``; whether any of those files
    has a source left to try."""
    retry = False
    for file, record in dropped:
        tried = skip.setdefault(file.name, set())
        if record.url in tried:
            continue  # (cannot happen: a skipped source serves nothing) never loop
        tried.add(record.url)
        retry |= any(label not in tried for label in source_labels(file))
    return retry


def _manifest_folder(entry: WeightsEntry) -> Path | None:
    """Where the entry's local sources must lie: the folder of the manifest naming them."""
    return Path(entry.origin).resolve().parent if entry.origin else None


def download_keys(artifact: Artifact) -> list[str]:
    """Cache keys of the downloads the artifact is made from (an archive's, for a member):
    what `zoo cache rm --forget` follows to the checkpoints derived from a download."""
    return [
        cache_key(f.name, source=f.sources[0])
        if f.member is not None
        else cache_key(f.name, source=f.sources[0], sha256=f.sha256, sha1=f.sha1)
        for f in artifact.files
    ]


def _first_use_key(file: ArtifactFile) -> str:
    """How fetch() files a download without a hash (an archive: its hash is the member's)."""
    return cache_key(file.name, source=file.sources[0])


def first_use_keys(artifact: Artifact) -> list[str]:
    """Cache keys of the artifact's downloads that only trust on first use vouches for: files
    without a published hash, and archives (their hash is the member's)."""
    return [
        _first_use_key(f)
        for f in artifact.files
        if f.member is not None or not (f.sha256 or f.sha1)
    ]


def _drop_first_use_files(artifact: Artifact) -> list[tuple[ArtifactFile, TofuRecord]]:
    """After a failure, drop what was trusted on first use only, file and record, so that
    nothing reuses a bad first download (an HTML error page, a truncated body, a corrupt
    archive); files with a published hash are verified and stay. Returns each dropped file with
    its record (whose ``url`` names the source that served it). A member extracted from a
    dropped archive, or one without a hash of its own, goes too."""
    dropped = []
    for file in artifact.files:
        hashed = bool(file.sha256 or file.sha1)
        member = member_path(file) if file.member is not None else None
        if hashed and (member is None or member.is_file()):
            continue  # verified against its published hash: not what failed
        record = drop_provisional(_first_use_key(file))
        if member is not None and (record is not None or not hashed):
            member.unlink(missing_ok=True)
        if record is not None:
            dropped.append((file, record))
    return dropped


def remove_stale_temporaries(out: Path) -> list[Path]:
    """Temporary files of ``out`` left by a process killed while writing it (zoo.hub.atomic
    names them ``.<name>.<random><suffix>``). Only call while holding ``out``'s lock."""
    removed = []
    stale = [*out.parent.glob(f".{out.name}.*"), *out.parent.glob(f".{_record_path(out).name}.*")]
    for tmp in stale:
        with contextlib.suppress(OSError):
            tmp.unlink()
            removed.append(tmp)
            log.info("removed %s, left by an interrupted conversion", tmp)
    return removed


def _record_path(out: Path) -> Path:
    return out.with_suffix(".json")


def _fingerprint(st: os.stat_result) -> list[int]:
    """What changes whenever the file is written, renamed over or replaced: the kernel sets
    ctime on every change, and nothing can set it back."""
    return [st.st_size, st.st_ino, st.st_mtime_ns, st.st_ctime_ns]


def _write_record(
    out: Path, artifact_format: str, *, files: list[str], sha256: str | None = None
) -> None:
    digest_sha256 = sha256 or hash_file(out).sha256
    st = out.stat()
    record = {
        "sha256": digest_sha256,
        "size": st.st_size,
        "artifact": artifact_format,
        "files": files,  # cache keys of the downloads it was converted from
        "fingerprint": _fingerprint(st),
    }
    with atomic_write(_record_path(out), "w") as f:
        json.dump(record, f, indent=1)


def _is_recorded(out: Path) -> bool:
    """The converted file exists and is the one verified when it was written.

    A full re-hash on every load would cost more than the (memory-mapped) load itself, so the
    record keeps the file's stat fingerprint: unchanged, the file is the verified one; changed
    at all (written to, copied, restored), it is re-hashed once and used only if it still has
    the recorded sha256 -- otherwise it is converted again, with a warning. `zoo cache verify`
    re-hashes every file (bit rot below the filesystem leaves no trace in the fingerprint).
    """
    try:
        record = json.loads(_record_path(out).read_text())
        st = out.stat()
        if not isinstance(record, dict) or st.st_size != record["size"]:
            return False
        if record.get("fingerprint") == _fingerprint(st):
            return True
        if hash_file(out).sha256 != record["sha256"]:
            log.warning(
                "%s changed after it was converted (sha256 differs from its record): "
                "converting it again", out,
            )  # fmt: skip
            return False
        _write_record(out, str(record.get("artifact", "")), sha256=record["sha256"],
                      files=list(record.get("files", [])))  # fmt: skip
        return True
    except (OSError, ValueError, KeyError, TypeError):
        return False


def verify_checkpoints() -> list[tuple[Path, bool, str]]:
    """Re-hash every converted checkpoint against the sha256 recorded when it was written;
    a failure's reason names the fix."""
    results = []
    for record_file in sorted((zoo_home() / "weights").glob("*/*.json")):
        path = record_file.with_suffix(".safetensors")
        fix = f"run `zoo cache rm {checkpoint_name(path)}` (the next use converts it again)"
        try:
            expected = json.loads(record_file.read_text())["sha256"]
            actual = hash_file(path).sha256
        except (OSError, ValueError, KeyError, TypeError) as err:
            results.append((path, False, f"unreadable ({err}); {fix}"))
            continue
        ok = actual == expected
        reason = "sha256 ok" if ok else f"sha256 {actual} != recorded {expected}; {fix}"
        results.append((path, ok, reason))
    return results


def checkpoint_name(path: Path) -> str:
    """``arch.tag`` of a converted checkpoint's path: what `zoo cache rm` takes."""
    return f"{path.parent.name}.{path.stem}"


__all__ = [
    "WeightsUnavailableError",
    "checkpoint_name",
    "checkpoint_path",
    "converted_checkpoint",
    "download_keys",
    "ensure_checkpoint",
    "first_use_keys",
    "verify_checkpoints",
]
