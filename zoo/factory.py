"""``get_model`` and ``model_info``: name -> spec -> config -> module (-> weights)."""

from __future__ import annotations

import dataclasses
import difflib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zoo.checkpoint import (
    CheckpointError,
    CheckpointMeta,
    convert_hint,
    is_safetensors,
    load_checkpoint,
    read_meta,
)
from zoo.models.features import FeatureListNet, check_out_indices
from zoo.models.layers import (
    ClassifierModel,
    FeatureInfo,
    PretrainedCfg,
    preprocess_for_channels,
)
from zoo.preprocess import Preprocess
from zoo.registry import ModelSpec, get_spec

log = logging.getLogger("zoo")


class PretrainedNotFoundError(FileNotFoundError, LookupError):
    """``pretrained`` named neither an existing file nor a weights tag; the message says both."""


@dataclass(frozen=True)
class ModelInfo:
    name: str
    family: str
    description: str
    aliases: tuple[str, ...]
    config: Any
    num_params: int
    num_running_stats: int
    preprocess: Preprocess
    feature_info: tuple[FeatureInfo, ...]
    weights: tuple[Any, ...]  # manifest records of the arch's weights


def build_config(spec: ModelSpec, overrides: dict[str, Any]) -> Any:
    """The spec's config with overrides, validated at this boundary."""
    fields = {f.name for f in dataclasses.fields(spec.config)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        close = difflib.get_close_matches
        hints = [
            f"{k!r} (did you mean {m[0]!r}?)" if (m := close(k, fields, 1)) else repr(k)
            for k in unknown
        ]
        valid = ", ".join(sorted(fields))
        raise TypeError(f"{spec.name}: unknown option(s) {', '.join(hints)}; valid: {valid}")
    for key, value in overrides.items():
        _check_type(spec, key, value)
    try:
        return dataclasses.replace(spec.config, **overrides)
    except ValueError as err:
        raise ValueError(f"{spec.name}: {err}") from None


def _check_type(spec: ModelSpec, key: str, value: Any) -> None:
    default = getattr(spec.config, key)
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif isinstance(default, tuple):
        ok = isinstance(value, tuple | list)
    else:
        ok = True  # str-or-callable options (norm_layer) are checked by the config itself
    if not ok:
        raise TypeError(
            f"{spec.name}: option {key!r} expects {type(default).__name__} "
            f"(default {default!r}), got {value!r}"
        )


def get_model(
    name: str,
    *,
    pretrained: bool | str | os.PathLike = False,
    num_classes: int | None = None,
    features_only: bool = False,
    out_indices: tuple[int, ...] | list[int] | None = None,
    **overrides: Any,
) -> nn.Module:
    """Build a registered architecture, optionally with weights.

    ``pretrained``: False (random init), True (the arch's default weights), a weights tag, or the
    path of a zoo-layout ``.safetensors`` file (an existing file is a path whatever its name).
    ``num_classes`` different from the weights' keeps everything but the classifier;
    ``in_chans`` different from the weights' adapts the first conv. ``model.config`` and
    ``model.pretrained_cfg`` describe the result.

    ``features_only=True`` returns a :class:`~zoo.models.features.FeatureListNet`: the feature
    maps of stages ``out_indices`` (default all five; index i = nominal stride 2**(i+1)) as a
    list, ``model.feature_info`` their channels and reductions. Weights load into the whole
    classifier first, so every weights source works; ``output_stride=16|8`` dilates.
    """
    if out_indices is not None and not features_only:
        raise ValueError("out_indices needs features_only=True")
    if features_only:
        if num_classes is not None:
            raise ValueError("num_classes has no meaning with features_only=True (no classifier)")
        indices = check_out_indices((0, 1, 2, 3, 4) if out_indices is None else out_indices)
        model = get_model(name, pretrained=pretrained, **overrides)
        return _features(model, indices)
    spec = get_spec(name)
    if num_classes is not None:
        overrides["num_classes"] = num_classes
    if pretrained is False or pretrained is None:
        config = build_config(spec, overrides)
        model = spec.build(config)
        model.pretrained_cfg = PretrainedCfg(
            spec.name, None, preprocess_for_channels(spec.preprocess, config.in_chans)
        )
        return model
    path, weights_name = _locate(spec, pretrained)
    return _load(spec, path, overrides, weights_name)


def _features(model: ClassifierModel, out_indices: tuple[int, ...]) -> FeatureListNet:
    features = FeatureListNet(model, out_indices)
    weights = model.pretrained_cfg.weights if model.pretrained_cfg else None
    if weights is not None:
        loaded, kept = len(model.state_dict()), len(features.state_dict())
        log.info(
            "%s features_only: %d of the %d tensors loaded from %s kept (dropped: %d of the "
            "classifier and unused stages)",
            model.pretrained_cfg.arch, kept, loaded, weights, loaded - kept,
        )  # fmt: skip
    return features


def _locate(spec: ModelSpec, pretrained: bool | str | os.PathLike) -> tuple[Path, str]:
    """(zoo-layout file, what pretrained_cfg.weights records) for True, a tag or a path."""
    from zoo.weights import WeightsNotFoundError, resolve_weights

    if pretrained is True:
        return resolve_weights(spec, None)
    if not isinstance(pretrained, str | os.PathLike):
        raise TypeError(
            f"pretrained must be True/False, a weights tag or a path, not {pretrained!r}"
        )
    path = Path(pretrained).expanduser()
    if path.is_file():
        _check_zoo_file(spec, path)
        return path, os.fspath(pretrained)
    if isinstance(pretrained, os.PathLike):
        raise PretrainedNotFoundError(f"weights file not found: {path}")
    try:
        return resolve_weights(spec, pretrained)
    except WeightsNotFoundError as err:
        message = (
            f"{pretrained!r} is neither an existing file (weights file not found: "
            f"{path.absolute()}) nor a weights tag: {err}"
        )
        if path.suffix.lower() in _convertible_suffixes():
            message += f"; a {path.suffix} checkpoint must be converted first: " + convert_hint(
                path, spec.name
            )
        raise PretrainedNotFoundError(message) from None


def _convertible_suffixes() -> set[str]:
    from zoo.convert import FORMATS  # the converters own their formats' file extensions

    return {ext for fmt in FORMATS.values() for ext in fmt.extensions} - {".safetensors"}


def _check_zoo_file(spec: ModelSpec, path: Path) -> None:
    """Refuse another library's checkpoint with the command that converts it."""
    if not is_safetensors(path):
        raise CheckpointError(
            f"{path} is not a safetensors file"
            + (f" (a {path.suffix} checkpoint)" if path.suffix else "")
            + "; convert it first: "
            + convert_hint(path, spec.name)
        )


def _load(spec: ModelSpec, path: Path, overrides: dict[str, Any], weights_name: str) -> nn.Module:
    meta = read_meta(path)
    if get_spec(meta.arch).name != spec.name:
        raise ValueError(
            f"{path} holds weights for {meta.arch!r}, not {spec.name!r}; "
            f"use zoo.get_model({meta.arch!r}, pretrained=...)"
        )
    weights_config = build_config(spec, meta.config)
    offset = meta.label_offset
    if offset and not offset < weights_config.num_classes:  # (a headless file has offset 0)
        raise CheckpointError(
            f"{path}: label_offset {offset} leaves no class of the classifier's "
            f"{weights_config.num_classes} outputs (corrupt metadata)"
        )
    if offset and "num_classes" not in overrides:
        # e.g. TensorFlow's 1001-way classifiers: class 0 is "background"; return the real ones.
        overrides = {**overrides, "num_classes": weights_config.num_classes - offset}
    wanted = build_config(spec, {**meta.config, **overrides})
    # Build the weights' shape on the meta device: no time spent on an init that is overwritten.
    shape_config = dataclasses.replace(
        wanted, num_classes=weights_config.num_classes, in_chans=weights_config.in_chans
    )
    with torch.device("meta"):
        model = spec.build(shape_config)
    state, _ = load_checkpoint(path)
    _load_state(model, state, path)
    model.pretrained_cfg = PretrainedCfg(
        arch=spec.name,
        weights=weights_name,
        preprocess=meta.preprocess
        or preprocess_for_channels(spec.preprocess, weights_config.in_chans),
        labels=meta.labels,
        label_offset=offset,
        label_names=meta.label_names,
    )
    # The model's own methods make the changes, so its config and pretrained_cfg follow.
    if offset and wanted.num_classes == weights_config.num_classes - offset:
        model.drop_leading_classes(offset)
    elif wanted.num_classes != weights_config.num_classes:
        log.warning(
            "%s: classifier re-initialised for %d classes (weights have %d)",
            spec.name, wanted.num_classes, weights_config.num_classes,
        )  # fmt: skip
        model.reset_classifier(wanted.num_classes)
    if wanted.in_chans != weights_config.in_chans:
        model.adapt_input_conv(wanted.in_chans)
    return model


def _load_state(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    expected = model.state_dict()
    # BN's step counter is bookkeeping: tolerate files with or without it.
    for key in [k for k in state if k.endswith("num_batches_tracked") and k not in expected]:
        del state[key]
    for key in [k for k in expected if k.endswith("num_batches_tracked") and k not in state]:
        state[key] = torch.zeros((), dtype=torch.long)
    mismatch = state_mismatch(expected, state)
    if mismatch:
        raise ValueError(f"{path} does not fit the model: {mismatch}")
    model.load_state_dict(state, strict=True, assign=True)
    still_meta = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if still_meta:  # a tensor outside the state dict would otherwise stay uninitialised
        raise RuntimeError(f"{path}: tensors not initialised by the file: {still_meta[:6]}")


def state_mismatch(expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]) -> str:
    """What differs in keys and shapes ("missing: ...; wrong shape: ..."), or "" if nothing."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    return "; ".join(
        f"{what}: {', '.join(keys[:6])}{' ...' if len(keys) > 6 else ''}"
        for what, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
        if keys
    )


def count_parameters(spec: ModelSpec) -> tuple[int, int]:
    """(parameters, BN running-statistic values), computed on the meta device."""
    with torch.device("meta"):
        model = spec.build(spec.config)
    params = sum(p.numel() for p in model.parameters())
    stats = sum(
        b.numel() for n, b in model.named_buffers() if n.endswith(("running_mean", "running_var"))
    )
    return params, stats


def float32_bytes(spec: ModelSpec) -> int:
    """What a float32 zoo checkpoint of the arch weighs (tensor bytes, computed)."""
    params, stats = count_parameters(spec)
    return 4 * (params + stats)


def model_info(name: str) -> ModelInfo:
    spec = get_spec(name)
    params, stats = count_parameters(spec)
    with torch.device("meta"):
        model: ClassifierModel = spec.build(spec.config)
    from zoo.weights import list_weights

    return ModelInfo(
        name=spec.name,
        family=spec.family,
        description=spec.doc,
        aliases=spec.aliases,
        config=spec.config,
        num_params=params,
        num_running_stats=stats,
        preprocess=spec.preprocess,
        feature_info=tuple(model.feature_info),
        weights=tuple(list_weights(spec.name)),
    )


__all__ = [
    "CheckpointMeta",
    "ModelInfo",
    "PretrainedCfg",
    "PretrainedNotFoundError",
    "get_model",
    "model_info",
]
