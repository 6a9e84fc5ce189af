"""``get_model`` and ``model_info``: name -> spec -> config -> module (-> weights)."""

from __future__ import annotations

import dataclasses
import difflib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zoo.checkpoint import CheckpointMeta, load_checkpoint, read_meta
from zoo.models.layers import ClassifierModel, FeatureInfo
from zoo.preprocess import Preprocess
from zoo.registry import ModelSpec, get_spec

log = logging.getLogger("zoo")


@dataclass(frozen=True)
class PretrainedCfg:
    """What a model was built from; transforms, predict and eval read it."""

    arch: str
    weights: str | None  # weights tag, path of a local file, or None for random init
    preprocess: Preprocess
    labels: str | tuple[str, ...] | None = None
    label_offset: int = 0
    num_classes: int = 1000


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


def is_path(pretrained: str | os.PathLike) -> bool:
    """A path has a separator or ends in .safetensors; anything else is a weights tag."""
    text = os.fspath(pretrained)
    return (
        isinstance(pretrained, os.PathLike)
        or os.sep in text
        or "/" in text
        or (text.endswith(".safetensors"))
    )


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
    **overrides: Any,
) -> nn.Module:
    """Build a registered architecture, optionally with weights.

    ``pretrained``: False (random init), True (the arch's default weights), a weights tag, or the
    path of a zoo-layout ``.safetensors`` file. ``num_classes`` different from the weights' keeps
    everything but the classifier; ``in_chans`` != 3 adapts the first conv.
    """
    spec = get_spec(name)
    if num_classes is not None:
        overrides["num_classes"] = num_classes
    if pretrained is False or pretrained is None:
        config = build_config(spec, overrides)
        model = spec.build(config)
        return _attach(
            model, PretrainedCfg(spec.name, None, spec.preprocess, num_classes=config.num_classes)
        )
    if pretrained is True or not is_path(pretrained):
        from zoo.weights import resolve_weights

        path, tag_info = resolve_weights(spec, None if pretrained is True else str(pretrained))
        return _load(spec, path, overrides, weights_name=tag_info)
    return _load(spec, Path(pretrained).expanduser(), overrides, weights_name=os.fspath(pretrained))


def _load(spec: ModelSpec, path: Path, overrides: dict[str, Any], weights_name: str) -> nn.Module:
    meta = read_meta(path)
    if get_spec(meta.arch).name != spec.name:
        raise ValueError(
            f"{path} holds weights for {meta.arch!r}, not {spec.name!r}; "
            f"use zoo.get_model({meta.arch!r}, pretrained=...)"
        )
    weights_config = build_config(spec, meta.config)
    offset = meta.label_offset
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
    labels, label_offset = meta.labels, offset
    if offset and wanted.num_classes == weights_config.num_classes - offset:
        drop_leading_classes(model, offset)
        label_offset = 0
    elif wanted.num_classes != weights_config.num_classes:
        log.warning(
            "%s: classifier re-initialised for %d classes (weights have %d)",
            spec.name, wanted.num_classes, weights_config.num_classes,
        )  # fmt: skip
        model.reset_classifier(wanted.num_classes)
        labels, label_offset = None, 0
    if wanted.in_chans != weights_config.in_chans:
        adapt_input_conv(model, wanted.in_chans)
    cfg = PretrainedCfg(
        arch=spec.name,
        weights=weights_name,
        preprocess=meta.preprocess or spec.preprocess,
        labels=labels,
        label_offset=label_offset,
        num_classes=wanted.num_classes,
    )
    return _attach(model, cfg)


def _load_state(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    expected = model.state_dict()
    # BN's step counter is bookkeeping: tolerate files with or without it.
    for key in [k for k in state if k.endswith("num_batches_tracked") and k not in expected]:
        del state[key]
    for key in [k for k in expected if k.endswith("num_batches_tracked") and k not in state]:
        state[key] = torch.zeros((), dtype=torch.long)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or unexpected or wrong:
        parts = [
            f"{what}: {', '.join(keys[:6])}{' ...' if len(keys) > 6 else ''}"
            for what, keys in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("wrong shape", wrong),
            )
            if keys
        ]
        raise ValueError(f"{path} does not fit the model: " + "; ".join(parts))
    model.load_state_dict(state, strict=True, assign=True)
    still_meta = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if still_meta:  # a tensor outside the state dict would otherwise stay uninitialised
        raise RuntimeError(f"{path}: tensors not initialised by the file: {still_meta[:6]}")


def drop_leading_classes(model: nn.Module, count: int) -> None:
    """Remove the first ``count`` outputs of the classifier (Linear or 1x1 conv)."""
    classifier = model.get_classifier()
    classifier.weight = nn.Parameter(classifier.weight.detach()[count:])
    if classifier.bias is not None:
        classifier.bias = nn.Parameter(classifier.bias.detach()[count:])
    if isinstance(classifier, nn.Linear):
        classifier.out_features -= count
    else:
        classifier.out_channels -= count
    model.num_classes -= count


def adapt_input_conv(model: nn.Module, in_chans: int) -> None:
    """Fit pretrained RGB filters to ``in_chans``: sum for 1 channel, repeat and rescale above."""
    conv = model.get_submodule(model.first_conv)
    weight = conv.weight.detach()
    if in_chans == 1:
        new = weight.sum(dim=1, keepdim=True)
    else:
        repeats = -(-in_chans // weight.shape[1])
        new = weight.repeat(1, repeats, 1, 1)[:, :in_chans] * (weight.shape[1] / in_chans)
    conv.weight = nn.Parameter(new)
    conv.in_channels = in_chans


def _attach(model: nn.Module, cfg: PretrainedCfg) -> nn.Module:
    model.pretrained_cfg = cfg
    return model


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


__all__ = ["CheckpointMeta", "ModelInfo", "PretrainedCfg", "get_model", "model_info"]
