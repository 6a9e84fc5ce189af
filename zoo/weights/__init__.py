"""Weights: the manifest catalogue and turning a tag into a verified zoo checkpoint.

tag -> manifest entry -> artifact files fetched and verified (zoo.hub.fetch) -> converted once
into zoo-layout safetensors under ``$ZOO_HOME/weights/<arch>/<tag>.safetensors`` -> loaded.
Artifacts are alternatives tried in order (e.g. GluonCV's zip, then timm's Hugging Face port).
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
from pathlib import Path

import filelock

from zoo.checkpoint import CheckpointMeta, config_diff, read_meta, save_checkpoint
from zoo.hub import FetchError, extract_member, fetch, hash_file, verify_file, zoo_home
from zoo.registry import ModelSpec, get_spec
from zoo.weights.manifest import (
    Artifact,
    ArtifactFile,
    ManifestError,
    Metric,
    WeightsEntry,
    load_entries,
)

log = logging.getLogger("zoo")


class WeightsNotFoundError(LookupError):
    """No weights with that tag for that architecture; the message lists what exists."""

    def __str__(self) -> str:
        return str(self.args[0])


class WeightsUnavailableError(RuntimeError):
    """Every artifact of an entry failed; the message lists each one's reason."""


def list_weights(pattern: str = "*") -> list[WeightsEntry]:
    """Manifest records whose ``arch`` or ``arch.tag`` matches the fnmatch pattern."""
    return [
        e
        for e in load_entries()
        if fnmatch.fnmatchcase(e.arch, pattern) or fnmatch.fnmatchcase(e.name, pattern)
    ]


def archs_with_weights() -> set[str]:
    return {e.arch for e in load_entries()}


def find_entry(arch: str, tag: str | None) -> WeightsEntry:
    """The entry for ``arch`` with ``tag`` (None: the default tag)."""
    spec = get_spec(arch)
    entries = [e for e in load_entries() if e.arch == spec.name]
    if not entries:
        raise WeightsNotFoundError(
            f"no pretrained weights for {spec.name} in the catalogue; see "
            "zoo.list_models(pretrained=True), or pass pretrained='path/to/file.safetensors'"
        )
    chosen = [e for e in entries if (e.default if tag is None else e.tag == tag)]
    if not chosen:
        tags = ", ".join(e.tag + (" (default)" if e.default else "") for e in entries)
        raise WeightsNotFoundError(f"{spec.name} has no weights tagged {tag!r}; tags: {tags}")
    return chosen[0]


def checkpoint_path(entry: WeightsEntry) -> Path:
    return zoo_home() / "weights" / entry.arch / f"{entry.tag}.safetensors"


def resolve_weights(spec: ModelSpec, tag: str | None) -> tuple[Path, str]:
    """(local zoo checkpoint, tag): fetched, verified and converted on first use."""
    entry = find_entry(spec.name, tag)
    path = ensure_checkpoint(entry)
    _announce_license(entry)
    return path, entry.tag


def ensure_checkpoint(entry: WeightsEntry, *, quiet: bool | None = None) -> Path:
    out = checkpoint_path(entry)
    if _is_recorded(out):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    # One process converts; the others (e.g. DDP ranks) wait and then find the result.
    with filelock.FileLock(str(out) + ".lock"):
        if _is_recorded(out):
            return out
        failures = []
        for index, artifact in enumerate(entry.artifacts):
            try:
                _build_checkpoint(entry, artifact, out, quiet)
                return out
            except (FetchError, OSError, ValueError) as err:
                failures.append(f"  artifact {index + 1} ({artifact.format}): {err}")
                log.info("%s: artifact %d failed, trying the next: %s", entry.name, index + 1, err)
        raise WeightsUnavailableError(
            f"could not get weights {entry.name}; every alternative failed:\n" + "\n".join(failures)
        )


def _record_path(out: Path) -> Path:
    return out.with_suffix(".json")


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


def fetch_file(file: ArtifactFile, quiet: bool | None = None) -> Path:
    """Fetch one artifact file; for an archive member, extract it and verify the member."""
    if file.member is None:
        return fetch(file.sources, sha256=file.sha256, sha1=file.sha1, size=file.size,
                     filename=file.name, quiet=quiet)  # fmt: skip
    archive = fetch(file.sources, filename=file.name, quiet=quiet)  # hash is the member's
    # Kept apart from the downloads: the cache's files/ folder only holds fetched files.
    member = zoo_home() / "extracted" / archive.parent.name / file.member
    if not member.is_file():
        extract_member(archive, file.member, member)
    try:
        verify_file(member, sha256=file.sha256, sha1=file.sha1, size=file.size,
                    source=f"{file.member} in {file.name}")  # fmt: skip
    except FetchError:
        member.unlink(missing_ok=True)
        raise
    return member


def _build_checkpoint(entry: WeightsEntry, artifact: Artifact, out: Path, quiet) -> None:
    paths = [fetch_file(f, quiet) for f in artifact.files]
    if artifact.format == "zoo":
        meta = read_meta(paths[0])
        if meta.arch != entry.arch:
            raise ValueError(f"{paths[0]} holds {meta.arch}, the manifest says {entry.arch}")
        os.replace(_copy_to_temp(paths[0], out), out)
    else:
        from zoo.convert import convert

        source = paths[0] if len(paths) == 1 else paths
        converted = convert(source, model=entry.arch, format=artifact.format,
                            num_classes=entry.num_classes)  # fmt: skip
        spec = get_spec(entry.arch)
        meta = CheckpointMeta(
            arch=entry.arch,
            config=config_diff(converted.config, spec.config),
            labels=entry.labels,
            label_offset=entry.label_offset,
            preprocess=entry.preprocess,
            source=f"{entry.name}: {artifact.format} {', '.join(f.name for f in artifact.files)}",
        )
        save_checkpoint(out, converted.state_dict, meta)
    digest = hash_file(out)
    record = {"sha256": digest.sha256, "size": digest.size, "artifact": artifact.format}
    _record_path(out).write_text(json.dumps(record, indent=1))


def _copy_to_temp(src: Path, out: Path) -> Path:
    import shutil
    import tempfile

    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".incomplete", dir=out.parent)
    os.close(fd)
    shutil.copyfile(src, tmp)
    return Path(tmp)


_ANNOUNCED: set[str] = set()
_PERMISSIVE = ("apache-2.0", "mit", "bsd-3-clause", "bsd-2-clause")


def _announce_license(entry: WeightsEntry) -> None:
    """Say once per process when weights come with use restrictions."""
    if entry.license.lower() in _PERMISSIVE or entry.name in _ANNOUNCED:
        return
    _ANNOUNCED.add(entry.name)
    log.warning("%s: weights licensed under %s", entry.name, entry.license)


__all__ = [
    "Artifact",
    "ArtifactFile",
    "ManifestError",
    "Metric",
    "WeightsEntry",
    "WeightsNotFoundError",
    "WeightsUnavailableError",
    "archs_with_weights",
    "checkpoint_path",
    "ensure_checkpoint",
    "find_entry",
    "list_weights",
    "resolve_weights",
    "verify_checkpoints",
]
