"""``zoo.save_model``: a model as it is now -> a zoo-layout file ``get_model`` rebuilds exactly.

The file holds what the model itself says: its arch and config (``model.config``), its weights,
and what its outputs mean (``model.pretrained_cfg``: labels, label offset, preprocessing). The
model keeps both current through its own changes (``reset_classifier``, ``adapt_input_conv``,
``drop_leading_classes``), so a fine-tuned or adapted model saves without further arguments.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from zoo.checkpoint import CheckpointMeta, config_diff, save_checkpoint
from zoo.factory import state_mismatch
from zoo.labels import resolve_labels
from zoo.models.layers import ClassifierModel
from zoo.preprocess import Preprocess
from zoo.registry import ModelSpec, get_spec


class _Default(enum.Enum):
    MODEL = "the model's own"


MODEL_LABELS = _Default.MODEL  # save_model's default: whatever labels the model carries


def save_model(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    labels: str | Sequence[str] | _Default | None = MODEL_LABELS,
    label_names: Sequence[str] | None = None,
    preprocess: Preprocess | None = None,
    source: str = "",
) -> Path:
    """Write ``model`` to ``path`` (``.safetensors``, atomically); returns the path.

    ``get_model(arch, pretrained=path)`` rebuilds it with identical outputs.

    ``labels``: a label-set name (``"imagenet-1k"``), one class id per class (what ``evaluate``
    matches data folders to, e.g. WordNet ids), or None. Default: the model's own, which are
    none once its classifier was replaced. ``label_names``: display names, one per id, when they
    differ from the ids (``predict`` shows them). ``preprocess``: default the model's (one
    mean/std value per input channel). ``source``: free provenance text.
    """
    model = _unwrap(model)
    cfg = model.pretrained_cfg
    if cfg is None:
        raise ValueError("the model has no pretrained_cfg (arch unknown); build it with get_model")
    spec = get_spec(cfg.arch)
    if type(model.config) is not type(spec.config):
        raise ValueError(f"model.config is a {type(model.config).__name__}, not {cfg.arch}'s")
    if labels is MODEL_LABELS:
        labels, label_names = cfg.labels, cfg.label_names if label_names is None else label_names
    classes = model.num_classes - cfg.label_offset
    ids, names = _check_labels(labels, label_names, classes)
    pre = cfg.preprocess if preprocess is None else preprocess
    if len(pre.mean) != model.config.in_chans:
        raise ValueError(
            f"preprocess has {len(pre.mean)} mean/std values, the model reads "
            f"{model.config.in_chans} channels: give one per channel"
        )
    _check_fits(model, spec)
    meta = CheckpointMeta(
        arch=spec.name,
        config=config_diff(model.config, spec.config),
        labels=ids,
        label_offset=cfg.label_offset,
        preprocess=pre,
        source=source,
        label_names=names,
    )
    return save_checkpoint(Path(path).expanduser(), model.state_dict(), meta)


def _check_fits(model: ClassifierModel, spec: ModelSpec) -> None:
    """Refuse a network its config no longer builds (e.g. ``model.fc`` replaced by hand)."""
    with torch.device("meta"):
        expected = spec.build(model.config).state_dict()
    actual = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    expected = {k: v for k, v in expected.items() if not k.endswith("num_batches_tracked")}
    mismatch = state_mismatch(expected, actual)
    if mismatch:
        raise ValueError(
            f"the model no longer matches model.config ({mismatch}); change it through "
            "model.reset_classifier(n) or model.adapt_input_conv(c), which keep the config current"
        )


def _unwrap(model: nn.Module) -> ClassifierModel:
    """The zoo model inside torch.compile's and (Distributed)DataParallel's wrappers."""
    while not isinstance(model, ClassifierModel):
        inner = getattr(model, "_orig_mod", None)
        inner = getattr(model, "module", None) if inner is None else inner
        if not isinstance(inner, nn.Module):
            raise TypeError(f"not a zoo model: {type(model).__name__}; build it with get_model")
        model = inner
    return model


def _check_labels(
    labels: str | Sequence[str] | None, names: Sequence[str] | None, classes: int
) -> tuple[str | tuple[str, ...] | None, tuple[str, ...] | None]:
    """(ids or label-set name, display names), checked against the number of classes."""
    if labels is None:
        if names is not None:
            raise ValueError("label_names need labels (the class ids they name)")
        return None, None
    if isinstance(labels, str):
        if names is not None:
            raise ValueError(f"label set {labels!r} has its own names; drop label_names")
        size = len(resolve_labels(labels).names)
        if size != classes:
            raise ValueError(f"label set {labels!r} has {size} classes, the model {classes}")
        return labels, None
    ids = tuple(labels)
    if not all(isinstance(i, str) for i in ids) or len(ids) != classes:
        raise ValueError(f"labels: give {classes} class ids as strings (got {len(ids)} items)")
    if len(set(ids)) != len(ids):
        raise ValueError("labels: class ids must be unique")
    if names is None:
        return ids, None
    names = tuple(names)
    if not all(isinstance(n, str) for n in names) or len(names) != classes:
        raise ValueError(f"label_names: give {classes} names as strings (got {len(names)} items)")
    return ids, names


__all__ = ["MODEL_LABELS", "save_model"]
