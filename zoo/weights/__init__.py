"""Weights: the manifest catalogue and turning a tag into a verified zoo checkpoint.

tag -> manifest entry -> artifact files fetched and verified (zoo.hub.fetch) -> converted once
into zoo-layout safetensors under ``$ZOO_HOME/weights/<arch>/<tag>.safetensors`` -> loaded.
Artifacts are alternatives tried in order (e.g. GluonCV's zip, then timm's Hugging Face port).

Importing this package does not import torch: the catalogue (:mod:`.manifest`), the plan of
where each file comes from (:mod:`.artifacts`) and the converted-checkpoint records
(:mod:`.checkpoints`) are torch-free; :mod:`.conversion` is imported only to build a checkpoint.
"""

from __future__ import annotations

import fnmatch
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from zoo.weights.artifacts import ArtifactPlan, FilePlan, fetch_file, plan_artifacts
from zoo.weights.checkpoints import (
    WeightsUnavailableError,
    checkpoint_path,
    converted_checkpoint,
    ensure_checkpoint,
    verify_checkpoints,
)
from zoo.weights.manifest import (
    Artifact,
    ArtifactFile,
    ManifestError,
    Metric,
    WeightsEntry,
    load_entries,
)

if TYPE_CHECKING:
    from zoo.registry import ModelSpec

log = logging.getLogger("zoo")


class WeightsNotFoundError(LookupError):
    """No weights with that tag for that architecture; the message lists what exists."""

    def __str__(self) -> str:
        return str(self.args[0])


def list_weights(pattern: str = "*") -> list[WeightsEntry]:
    """Manifest records whose ``arch`` or ``arch.tag`` matches the fnmatch pattern."""
    return [
        e
        for e in load_entries()
        if fnmatch.fnmatchcase(e.arch, pattern) or fnmatch.fnmatchcase(e.name, pattern)
    ]


def archs_with_weights() -> set[str]:
    """Architectures with at least one entry; every manifest arch is checked against the
    registry here (this imports the model families)."""
    from zoo.weights.conversion import require_registered

    entries = load_entries()
    for entry in entries:
        require_registered(entry)
    return {e.arch for e in entries}


def find_entry(arch: str, tag: str | None) -> WeightsEntry:
    """The entry for ``arch`` (canonical name or alias) with ``tag`` (None: the default tag).

    A canonical name the manifest uses is looked up without the registry (no torch import);
    anything else is resolved by the registry, which suggests names for a typo.
    """
    entries = load_entries()
    mine = [e for e in entries if e.arch == arch]
    if not mine:
        from zoo.registry import canonical_name

        arch = canonical_name(arch)
        mine = [e for e in entries if e.arch == arch]
    if not mine:
        raise WeightsNotFoundError(
            f"no pretrained weights for {arch} in the catalogue; `zoo list --pretrained` (or "
            "zoo.list_models(pretrained=True)) shows the architectures that have some, or pass "
            "pretrained='path/to/file.safetensors'"
        )
    chosen = [e for e in mine if (e.default if tag is None else e.tag == tag)]
    if not chosen:
        tags = ", ".join(e.tag + (" (default)" if e.default else "") for e in mine)
        raise WeightsNotFoundError(f"{arch} has no weights tagged {tag!r}; tags: {tags}")
    return chosen[0]


def resolve_weights(spec: ModelSpec, tag: str | None) -> tuple[Path, str]:
    """(local zoo checkpoint, tag): fetched, verified and converted on first use."""
    entry = find_entry(spec.name, tag)
    path = ensure_checkpoint(entry)
    _announce_license(entry)
    return path, entry.tag


_ANNOUNCED: set[str] = set()
_PERMISSIVE = ("apache-2.0", "mit", "bsd-3-clause", "bsd-2-clause")


def _announce_license(entry: WeightsEntry) -> None:
    """Say once per process when weights come with use restrictions."""
    if entry.license.lower() in _PERMISSIVE or entry.name in _ANNOUNCED:
        return
    _ANNOUNCED.add(entry.name)
    use = " (non-commercial use only)" if entry.non_commercial else ""
    log.warning("%s: weights licensed under %s%s", entry.name, entry.license, use)


__all__ = [
    "Artifact",
    "ArtifactFile",
    "ArtifactPlan",
    "FilePlan",
    "ManifestError",
    "Metric",
    "WeightsEntry",
    "WeightsNotFoundError",
    "WeightsUnavailableError",
    "archs_with_weights",
    "checkpoint_path",
    "converted_checkpoint",
    "ensure_checkpoint",
    "fetch_file",
    "find_entry",
    "list_weights",
    "plan_artifacts",
    "resolve_weights",
    "verify_checkpoints",
]
