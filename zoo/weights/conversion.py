"""Turning fetched artifact files into a zoo checkpoint: the part of zoo.weights that needs torch.

Imported by :func:`zoo.weights.ensure_checkpoint` only when a checkpoint has to be built.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import torch

from zoo.checkpoint import (
    CheckpointError,
    CheckpointMeta,
    config_diff,
    load_checkpoint,
    read_meta,
    save_checkpoint,
)
from zoo.formats import ZOO
from zoo.hub.atomic import atomic_path
from zoo.registry import canonical_name, get_spec
from zoo.weights.manifest import Artifact, ManifestError, WeightsEntry


def require_registered(entry: WeightsEntry) -> None:
    """The manifest names a registered architecture by its canonical name (checked here, not at
    parse time, so that reading the manifest does not import every model family)."""
    try:
        name = canonical_name(entry.arch)
    except KeyError as err:
        raise ManifestError(f"{entry.origin}: {entry.name}: {err}") from None
    if name != entry.arch:
        raise ManifestError(
            f"{entry.origin}: {entry.name}: arch must be the canonical name {name!r}, "
            f"not the alias {entry.arch!r}"
        )


def build_checkpoint(entry: WeightsEntry, artifact: Artifact, paths: list[Path], out: Path) -> None:
    """Write ``out`` from the artifact's fetched files (converted unless already zoo-layout)."""
    if artifact.format == ZOO:
        meta = read_meta(paths[0])
        if meta.arch != entry.arch:
            raise ValueError(f"{paths[0]} holds {meta.arch}, the manifest says {entry.arch}")
        with atomic_path(out) as tmp:
            shutil.copyfile(paths[0], tmp)
        return
    from zoo.convert import convert

    source = paths[0] if len(paths) == 1 else paths
    converted = convert(source, model=entry.arch, format=artifact.format,
                        num_classes=entry.num_classes)  # fmt: skip
    meta = CheckpointMeta(
        arch=entry.arch,
        config=config_diff(converted.config, get_spec(entry.arch).config),
        labels=entry.labels,
        label_offset=entry.label_offset,
        preprocess=entry.preprocess,
        source=f"{entry.name}: {artifact.format} {', '.join(f.name for f in artifact.files)}",
    )
    save_checkpoint(out, converted.state_dict, meta)


_COUNTER = "num_batches_tracked"  # BatchNorm's step counter: files may have it or not


def check_loads(path: Path) -> None:
    """Read ``path`` back as the loader does and load it into its architecture: every tensor
    the model needs, of its shape, and finite. Only then is a first-use download trusted (and
    `zoo cache verify` calls a checkpoint or a download usable)."""
    state, meta = load_checkpoint(path)
    spec = get_spec(meta.arch)
    try:
        config = dataclasses.replace(spec.config, **meta.config)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: its config does not fit {spec.name} ({err})") from None
    with torch.device("meta"):  # shapes only: nothing is initialised to be overwritten
        model = spec.build(config)
    result = model.load_state_dict(state, strict=False, assign=True)
    missing = [k for k in result.missing_keys if not k.endswith(_COUNTER)]
    if missing or result.unexpected_keys:
        raise CheckpointError(
            f"{path} does not fit {spec.name}: missing {missing[:4]}, unexpected "
            f"{result.unexpected_keys[:4]}"
        )
    bad = [k for k, t in state.items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise CheckpointError(f"{path}: tensors {bad[:4]} hold NaN or infinite values")
