"""Converters from GluonCV, timm and torchvision weights into zoo-layout safetensors.

``convert(src, model=..., format=...)`` returns the mapped state dict and a report;
``convert_file(src, dst, ...)`` also writes the zoo checkpoint. Pickled sources are read only
through ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from zoo.checkpoint import CheckpointMeta, config_diff, save_checkpoint
from zoo.convert import gluoncv
from zoo.convert.core import ConversionError, ConversionReport, map_state_dict
from zoo.convert.mxnet_params import read_params
from zoo.registry import ModelSpec, get_spec

__all__ = ["FORMATS", "ConversionError", "ConversionReport", "convert", "convert_file"]


@dataclass(frozen=True)
class SourceFormat:
    name: str
    extensions: tuple[str, ...]
    read: Callable[[Path], dict[str, torch.Tensor]]
    # family -> rename(source key) -> zoo key | None; a family missing here is unsupported
    renamers: dict[str, Callable[[str], str | None]]
    ignore: tuple[str, ...] = ()  # fnmatch patterns of source keys the format may drop


def read_torch_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from .safetensors, or from a pickle via torch.load(weights_only=True)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # the unpickler refuses anything but tensors and containers
            raise ConversionError(
                f"{path}: refused to load (only plain tensor state dicts are accepted, "
                f"never arbitrary pickles): {err}"
            ) from err
    for wrapper in ("state_dict", "model", "state_dict_ema"):  # training checkpoints
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConversionError(f"{path}: not a state dict of tensors")
    # DistributedDataParallel prefixes every key with "module.".
    return {k.removeprefix("module."): v for k, v in state.items()}


def _identity(key: str) -> str:
    return key


FORMATS: dict[str, SourceFormat] = {
    "gluoncv": SourceFormat("gluoncv", (".params",), read_params, gluoncv.STRUCTURAL_RENAMERS),
    # timm's and torchvision's ResNets and Inception v3 already use zoo's module names; their
    # Inception's auxiliary head (AuxLogits, a training-only loss branch) is dropped on purpose.
    "timm": SourceFormat(
        "timm", (".safetensors", ".pth", ".pt", ".bin"), read_torch_state_dict,
        {"resnet": _identity, "inception": _identity},
        ignore=("*num_batches_tracked", "AuxLogits.*"),
    ),
    "torchvision": SourceFormat(
        "torchvision", (".safetensors", ".pth", ".pt", ".bin"), read_torch_state_dict,
        {"resnet": _identity, "inception": _identity},
        ignore=("*num_batches_tracked", "AuxLogits.*"),
    ),
}  # fmt: skip


@dataclass(frozen=True)
class Converted:
    state_dict: dict[str, torch.Tensor]
    report: ConversionReport
    config: object  # the arch config the state dict fits (num_classes from the source)


def convert(
    src: str | Path, *, model: str, format: str | None = None, num_classes: int | None = None
) -> Converted:
    """Map a foreign checkpoint onto ``model``; ``num_classes`` defaults to the source's."""
    src = Path(src).expanduser()
    if not src.is_file():
        raise FileNotFoundError(f"source weights not found: {src}")
    spec = get_spec(model)
    if format is not None:
        return _convert_as(FORMATS[_check_format(format)], src, spec, num_classes)
    return _convert_inferred(src, spec, num_classes)


def _check_format(name: str) -> str:
    if name not in FORMATS:
        raise ValueError(f"unknown format {name!r}; choose one of {sorted(FORMATS)}")
    return name


def _convert_inferred(src: Path, spec: ModelSpec, num_classes: int | None) -> Converted:
    candidates = [
        f for f in FORMATS.values() if src.suffix in f.extensions and spec.family in f.renamers
    ]
    if not candidates:
        raise ConversionError(f"cannot tell the format of {src.name}; pass --format")
    results, errors = [], []
    for fmt in candidates:
        try:
            results.append(_convert_as(fmt, src, spec, num_classes))
        except ConversionError as err:
            errors.append(f"{fmt.name}: {err}")
    if not results:
        raise ConversionError(
            f"{src} converts as none of the formats it could be:\n" + "\n".join(errors)
        )
    first = results[0].state_dict
    same = all(
        r.state_dict.keys() == first.keys()
        and all(
            r.state_dict[k] is first[k] or torch.equal(r.state_dict[k], first[k]) for k in first
        )
        for r in results[1:]
    )
    if not same:
        names = ", ".join(r.report.source_format for r in results)
        raise ConversionError(
            f"{src} converts as several formats with different results ({names}); pass --format"
        )
    return results[0]


def _convert_as(
    fmt: SourceFormat, src: Path, spec: ModelSpec, num_classes: int | None
) -> Converted:
    if spec.family not in fmt.renamers:
        supported = sorted(f.name for f in FORMATS.values() if spec.family in f.renamers)
        raise ConversionError(
            f"the {fmt.name} converter does not cover {spec.name} ({spec.family} family); "
            f"formats for it: {', '.join(supported) or 'none'}"
        )
    source = fmt.read(src)
    rename = fmt.renamers[spec.family]
    if fmt.name == "gluoncv" and gluoncv.is_legacy(list(source)):
        config = _config_for(spec, source, rename=None, num_classes=num_classes)
        shapes = _target_shapes(spec, config)
        rename = gluoncv.legacy_renamer(list(source), shapes, spec.family, str(src))
    else:
        config = _config_for(spec, source, rename, num_classes)
        shapes = _target_shapes(spec, config)
    state, ignored, defaulted = map_state_dict(
        source, shapes, rename, ignore=fmt.ignore, context=f"{src} as {fmt.name} -> {spec.name}"
    )
    report = ConversionReport(
        spec.name, fmt.name, str(src), len(state) - len(defaulted), ignored, defaulted,
        config.num_classes,
    )  # fmt: skip
    return Converted(state, report, config)


def _config_for(spec: ModelSpec, source: dict[str, torch.Tensor], rename, num_classes: int | None):
    """The arch config with num_classes taken from the source's classifier unless given."""
    if num_classes is None:
        num_classes = _source_num_classes(spec, source, rename)
    return replace(spec.config, num_classes=num_classes) if num_classes is not None else spec.config


def _source_num_classes(spec: ModelSpec, source: dict[str, torch.Tensor], rename) -> int | None:
    classifier = f"{_classifier_name(spec)}.weight"
    if rename is None:  # legacy files: the classifier is the last weight in registration order
        weights = [v for k, v in source.items() if k.endswith("_weight")]
        return int(weights[-1].shape[0]) if weights else None
    for key, tensor in source.items():
        if rename(key) == classifier:
            return int(tensor.shape[0])
    return None


def _classifier_name(spec: ModelSpec) -> str:
    with torch.device("meta"):
        model = spec.build(spec.config)
    return next(n for n, m in model.named_modules() if m is model.get_classifier())


def _target_shapes(spec: ModelSpec, config) -> dict[str, torch.Size]:
    with torch.device("meta"):
        model = spec.build(config)
    return {k: v.shape for k, v in model.state_dict().items()}


def convert_file(
    src: str | Path,
    dst: str | Path,
    *,
    model: str,
    format: str | None = None,
    num_classes: int | None = None,
    labels: str | tuple[str, ...] | None = None,
) -> ConversionReport:
    """Convert and write a zoo-layout safetensors file (atomically)."""
    converted = convert(src, model=model, format=format, num_classes=num_classes)
    spec = get_spec(model)
    meta = CheckpointMeta(
        arch=spec.name,
        config=config_diff(converted.config, spec.config),
        labels=labels,
        source=f"converted from {Path(src).name} ({converted.report.source_format})",
    )
    save_checkpoint(dst, converted.state_dict, meta)
    return converted.report
