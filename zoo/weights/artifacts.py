"""Where an entry's artifact files come from: the plan (no I/O beyond ``stat``) and the fetch.

Torch-free on purpose: ``zoo download --dry-run`` and a download of weights already converted
import only this side of :mod:`zoo.weights`. :func:`plan_artifacts` is the one place that says,
per file, where it would come from; :func:`zoo.weights.ensure_checkpoint` walks the same plan,
so what a dry run prints is what a download does.

Where each file comes from, best first: the zoo's own cache; a copy another library already
downloaded (:mod:`zoo.hub.local_caches`: Hugging Face, torch.hub, GluonCV), copied into the zoo's
cache only once verified; then the network. An artifact whose files are all local is tried before
the ones that need a download, whatever their order in the manifest.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from zoo.hub import (
    DEFAULT_MAX_BYTES,
    cache_key,
    cached_copy,
    extract_member,
    fetch,
    is_offline,
    verify_file,
    zoo_home,
)
from zoo.hub.atomic import atomic_path
from zoo.hub.errors import FetchError, HashMismatchError
from zoo.hub.local_caches import LocalFile, copy_verified, find_local, is_verifiable
from zoo.hub.sources import mirror_sources, parse_source
from zoo.weights.manifest import Artifact, ArtifactFile, WeightsEntry

log = logging.getLogger("zoo")

# FilePlan.origin values, besides the names of other libraries' caches in zoo.hub.local_caches.
ZOO_CACHE = "zoo cache"  # already in $ZOO_HOME (downloaded, or extracted from a cached archive)
DOWNLOAD = "download"  # fetched from ``locations`` in that order (mirrors first)


@dataclass(frozen=True)
class FilePlan:
    """Where one artifact file would come from, decided without fetching anything."""

    file: ArtifactFile
    origin: str  # ZOO_CACHE, DOWNLOAD, or the local cache of another library
    locations: tuple[str, ...]  # the local path(s), or the sources in the order they are tried
    note: str = ""  # e.g. "extract member from the cached archive", "offline: would fail"
    local: tuple[LocalFile, ...] = ()  # copies in other libraries' caches, verified before use


@dataclass(frozen=True)
class ArtifactPlan:
    index: int  # position in the manifest entry (1-based, as messages say it)
    artifact: Artifact
    files: tuple[FilePlan, ...]

    @property
    def is_local(self) -> bool:
        return all(f.origin != DOWNLOAD for f in self.files)


def plan_artifacts(entry: WeightsEntry) -> list[ArtifactPlan]:
    """The entry's artifact alternatives in the order they would be tried, each file planned:
    those available without a download first, then the manifest's order."""
    plans = [
        ArtifactPlan(index, artifact, tuple(plan_file(f) for f in artifact.files))
        for index, artifact in enumerate(entry.artifacts, start=1)
    ]
    return sorted(plans, key=lambda plan: not plan.is_local)  # stable


def plan_file(file: ArtifactFile) -> FilePlan:
    if file.member is None:
        cached = cached_copy(file.sources, sha256=file.sha256, sha1=file.sha1, size=file.size,
                             filename=file.name)  # fmt: skip
        if cached is not None:
            return FilePlan(file, ZOO_CACHE, (str(cached),))
        return _from_local_caches(file) or _download(file, file.name)
    member = member_path(file)
    if member.is_file():
        return FilePlan(file, ZOO_CACHE, (str(member),))
    archive = cached_copy(file.sources, filename=file.name)  # the hash is the member's
    if archive is not None:
        return FilePlan(file, ZOO_CACHE, (str(archive),), f"extract {file.member}")
    return _from_local_caches(file) or _download(file, file.name, f"then extract {file.member}")


def _from_local_caches(file: ArtifactFile) -> FilePlan | None:
    """Copies of ``file`` (or its member) that other libraries downloaded and that can be
    verified: against the manifest's hash, or the hash their cache's layout vouches for."""
    found = tuple(
        candidate
        for candidate in find_local(file.sources, member=file.member)
        if is_verifiable(candidate, file.sha256, file.sha1)
    )
    if not found:
        return None
    paths = tuple(str(c.path) for c in found)
    return FilePlan(file, found[0].origin, paths, "copied once verified", local=found)


def _download(file: ArtifactFile, filename: str, note: str = "") -> FilePlan:
    locations = (*(s.label for s in mirror_sources(filename)), *file.sources)
    if is_offline():
        note = "; ".join(n for n in (note, "offline mode: only local sources can be used") if n)
    return FilePlan(file, DOWNLOAD, locations, note)


def source_labels(file: ArtifactFile) -> list[str]:
    """Every place the download of ``file`` may come from, as fetch labels them (and as a
    first-use record's ``url`` names the one that served it): mirrors first."""
    mirrors = [source.label for source in mirror_sources(file.name)]
    return [*mirrors, *(parse_source(source).label for source in file.sources)]


def member_path(file: ArtifactFile) -> Path:
    """Where ``file.member`` is kept: apart from the downloads (the cache's files/ folder only
    holds fetched files), in a folder named like the archive's own cache entry."""
    assert file.member is not None
    archive_key = cache_key(file.name, source=file.sources[0])  # how fetch() files the archive
    return zoo_home() / "extracted" / archive_key.partition("/")[0] / file.member


def fetch_file(
    file: ArtifactFile,
    quiet: bool | None = None,
    root: Path | None = None,
    *,
    skip: Collection[str] = (),
    deadline: float | None = None,
) -> Path:
    """Fetch one artifact file as :func:`plan_file` plans it; for an archive member, extract
    it (or copy it from GluonCV's cache) and verify the member. ``root``: the folder of the
    manifest naming the file; a local source must really lie in it (no symlink out).
    ``skip`` and ``deadline`` as :func:`zoo.hub.fetch` takes them."""
    plan = plan_file(file)
    if file.member is None:
        return fetch(file.sources, sha256=file.sha256, sha1=file.sha1, size=file.size,
                     filename=file.name, quiet=quiet, local=plan.local,
                     local_root=root, skip=skip, deadline=deadline)  # fmt: skip
    member = member_path(file)
    if not member.is_file():
        refused = []
        for candidate in plan.local:
            reason = _copy_member(candidate, file, member)
            if reason is None:
                return member  # verified while copied
            refused.append(reason)
        try:
            archive = fetch(
                file.sources,
                filename=file.name,
                quiet=quiet,
                local_root=root,
                skip=skip,
                deadline=deadline,
            )  # fmt: skip  (the hash is the member's)
        except FetchError as err:
            if not refused:
                raise
            raise FetchError(f"{err}; {'; '.join(refused)}", err.attempts) from err
        # The manifest's size of the member bounds what is inflated (a zip bomb stops there).
        limit = file.size if file.size is not None else DEFAULT_MAX_BYTES
        extract_member(archive, file.member, member, max_bytes=limit)
    try:
        verify_file(member, sha256=file.sha256, sha1=file.sha1, size=file.size,
                    source=f"{file.member} in {file.name}")  # fmt: skip
    except FetchError:
        member.unlink(missing_ok=True)
        raise
    return member


def _copy_member(candidate: LocalFile, file: ArtifactFile, member: Path) -> str | None:
    """Copy a member from another library's cache to ``member`` once verified (None), else
    say why it was refused."""
    try:
        with atomic_path(member) as part:
            copy_verified(candidate, part, sha256=file.sha256, sha1=file.sha1, size=file.size)
    except HashMismatchError as err:
        log.warning("%s", candidate.refusal(err))
        return candidate.refusal(err)
    except OSError as err:
        return f"could not copy {candidate.label} ({err})"
    return None


__all__ = [
    "DOWNLOAD",
    "ZOO_CACHE",
    "ArtifactPlan",
    "FilePlan",
    "fetch_file",
    "member_path",
    "plan_artifacts",
    "plan_file",
    "source_labels",
]
