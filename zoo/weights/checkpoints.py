"""Converted zoo checkpoints under ``$ZOO_HOME/weights/<arch>/<tag>.safetensors``.

Torch-free: whether an entry is already converted (and was verified when it was written) is
answered from the file and the record next to it. Only building a missing checkpoint imports
:mod:`zoo.weights.conversion`, and with it torch.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import filelock

from zoo.errors import is_anticipated, user_message
from zoo.hub import DeadlineExceededError, hash_file, zoo_home
from zoo.hub.atomic import atomic_write
from zoo.hub.config import default_deadline
from zoo.weights.artifacts import fetch_file, plan_artifacts
from zoo.weights.manifest import WeightsEntry

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
    """The entry's converted checkpoint: fetched, verified and converted on first use."""
    out = checkpoint_path(entry)
    if _is_recorded(out):
        return out
    from zoo.weights import conversion  # torch: only when something has to be built

    conversion.require_registered(entry)  # before any download
    out.parent.mkdir(parents=True, exist_ok=True)
    # One process converts; the others (e.g. DDP ranks) wait and then find the result, for
    # no longer than ZOO_DEADLINE.
    limit = default_deadline()
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
        failures = []
        for plan in plan_artifacts(entry):
            artifact = plan.artifact
            try:
                paths = [fetch_file(f, quiet) for f in artifact.files]
                conversion.build_checkpoint(entry, artifact, paths, out)
                _write_record(out, artifact.format)
                return out
            except Exception as err:
                # Whatever an artifact's bytes cause (hash, parse, decompression, torch,
                # nesting) is that artifact's failure: try the next one. A bug is not.
                if not is_anticipated(err):
                    raise
                failures.append(f"  artifact {plan.index} ({artifact.format}): {user_message(err)}")
                log.info("%s: artifact %d failed, trying the next: %s", entry.name, plan.index, err)
        raise WeightsUnavailableError(
            f"could not get weights {entry.name}; every alternative failed:\n" + "\n".join(failures)
        )


def _record_path(out: Path) -> Path:
    return out.with_suffix(".json")


def _write_record(out: Path, artifact_format: str) -> None:
    digest = hash_file(out)
    record = {"sha256": digest.sha256, "size": digest.size, "artifact": artifact_format}
    with atomic_write(_record_path(out), "w") as f:
        json.dump(record, f, indent=1)


def _is_recorded(out: Path) -> bool:
    """The converted file exists and still has the size recorded when it was written.

    A full re-hash on every load would cost more than the load; `zoo cache verify` re-hashes.
    """
    try:
        record = json.loads(_record_path(out).read_text())
        return out.stat().st_size == record["size"]
    except (OSError, ValueError, KeyError):
        return False


def verify_checkpoints() -> list[tuple[Path, bool, str]]:
    """Re-hash every converted checkpoint against the sha256 recorded when it was written."""
    results = []
    for record_file in sorted((zoo_home() / "weights").glob("*/*.json")):
        path = record_file.with_suffix(".safetensors")
        try:
            expected = json.loads(record_file.read_text())["sha256"]
            actual = hash_file(path).sha256
        except (OSError, ValueError, KeyError) as err:
            results.append((path, False, f"unreadable: {err}"))
            continue
        ok = actual == expected
        reason = "sha256 ok" if ok else f"sha256 {actual} != recorded {expected}"
        results.append((path, ok, reason))
    return results


__all__ = [
    "WeightsUnavailableError",
    "checkpoint_path",
    "converted_checkpoint",
    "ensure_checkpoint",
    "verify_checkpoints",
]
