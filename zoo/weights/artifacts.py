"""Where an entry's artifact files come from: the plan (no I/O beyond ``stat``) and the fetch.

Torch-free on purpose: ``zoo download --dry-run`` and a download of weights already converted
import only this side of :mod:`zoo.weights`. :func:`plan_artifacts` is the one place that says,
per file, where it would come from; :func:`zoo.weights.ensure_checkpoint` walks the same plan,
so what a dry run prints is what a download does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from zoo.hub import cached_copy, extract_member, fetch, is_offline, verify_file, zoo_home
from zoo.hub.errors import FetchError
from zoo.hub.sources import mirror_sources
from zoo.weights.manifest import Artifact, ArtifactFile, WeightsEntry

# FilePlan.origin values.
ZOO_CACHE = "zoo cache"  # already in $ZOO_HOME (downloaded, or extracted from a cached archive)
DOWNLOAD = "download"  # fetched from ``locations`` in that order (mirrors first)


@dataclass(frozen=True)
class FilePlan:
    """Where one artifact file would come from, decided without fetching anything."""

    file: ArtifactFile
    origin: str  # ZOO_CACHE or DOWNLOAD
    locations: tuple[str, ...]  # the local path, or the sources in the order they are tried
    note: str = ""  # e.g. "extract member from the cached archive", "offline: would fail"


@dataclass(frozen=True)
class ArtifactPlan:
    index: int  # position in the manifest entry (1-based, as messages say it)
    artifact: Artifact
    files: tuple[FilePlan, ...]

    @property
    def is_local(self) -> bool:
        return all(f.origin != DOWNLOAD for f in self.files)


def plan_artifacts(entry: WeightsEntry) -> list[ArtifactPlan]:
    """The entry's artifact alternatives in the order they would be tried, each file planned."""
    return [
        ArtifactPlan(index, artifact, tuple(plan_file(f) for f in artifact.files))
        for index, artifact in enumerate(entry.artifacts, start=1)
    ]


def plan_file(file: ArtifactFile) -> FilePlan:
    if file.member is None:
        cached = cached_copy(file.sources, sha256=file.sha256, sha1=file.sha1, size=file.size,
                             filename=file.name)  # fmt: skip
        if cached is not None:
            return FilePlan(file, ZOO_CACHE, (str(cached),))
        return _download(file, file.name)
    archive = cached_copy(file.sources, filename=file.name)  # the hash is the member's
    if archive is None:
        return _download(file, file.name, f"then extract {file.member}")
    member = _member_path(archive, file.member)
    if member.is_file():
        return FilePlan(file, ZOO_CACHE, (str(member),))
    return FilePlan(file, ZOO_CACHE, (str(archive),), f"extract {file.member}")


def _download(file: ArtifactFile, filename: str, note: str = "") -> FilePlan:
    locations = (*(s.label for s in mirror_sources(filename)), *file.sources)
    if is_offline():
        note = "; ".join(n for n in (note, "offline mode: only local sources can be used") if n)
    return FilePlan(file, DOWNLOAD, locations, note)


def _member_path(archive: Path, member: str) -> Path:
    # Kept apart from the downloads: the cache's files/ folder only holds fetched files.
    return zoo_home() / "extracted" / archive.parent.name / member


def fetch_file(file: ArtifactFile, quiet: bool | None = None) -> Path:
    """Fetch one artifact file; for an archive member, extract it and verify the member."""
    if file.member is None:
        return fetch(file.sources, sha256=file.sha256, sha1=file.sha1, size=file.size,
                     filename=file.name, quiet=quiet)  # fmt: skip
    archive = fetch(file.sources, filename=file.name, quiet=quiet)  # hash is the member's
    member = _member_path(archive, file.member)
    if not member.is_file():
        extract_member(archive, file.member, member)
    try:
        verify_file(member, sha256=file.sha256, sha1=file.sha1, size=file.size,
                    source=f"{file.member} in {file.name}")  # fmt: skip
    except FetchError:
        member.unlink(missing_ok=True)
        raise
    return member


__all__ = [
    "DOWNLOAD",
    "ZOO_CACHE",
    "ArtifactPlan",
    "FilePlan",
    "fetch_file",
    "plan_artifacts",
    "plan_file",
]
