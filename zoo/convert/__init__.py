"""Converters from GluonCV, timm, torchvision and TFLite weights into zoo-layout safetensors.

``convert(src, model=..., format=...)`` returns the mapped state dict and a report;
``convert_file(src, dst, ...)`` also writes the zoo checkpoint. Pickled sources are read only
through ``torch.load(weights_only=True)``. ``src`` is one path, or for a format that reads models
split over files (``multi_file``: TFLite) a sequence of paths.

Name-driven formats map source keys through a per-family ``rename``; graph-driven ones (TFLite)
have a per-family ``planner`` that walks the source's graph against the target model and says
which source tensor fills which model tensor. Either way :func:`map_state_dict` then checks that
every source tensor is used exactly once and every model tensor filled.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from zoo.checkpoint import CheckpointMeta, config_diff, save_checkpoint
from zoo.convert import gluoncv, tflite
from zoo.convert.core import ConversionError, ConversionReport, Plan, map_state_dict
from zoo.convert.mxnet_params import read_params
from zoo.errors import strip_torch_advice
from zoo.formats import GLUONCV, TFLITE, TIMM, TORCHVISION
from zoo.registry import ModelSpec, get_spec

__all__ = ["FORMATS", "ConversionError", "ConversionReport", "convert", "convert_file"]


@dataclass(frozen=True)
class SourceFormat:
    name: str
    extensions: tuple[str, ...]
    # the source's tensors by key; a multi_file format's read takes a list of paths
    read: Callable[[Path], dict[str, torch.Tensor]] | Callable[[list[Path]], dict]
    # family -> rename(source key) -> zoo key | None; a family missing here is unsupported
    renamers: dict[str, Callable[[str], str | None]]
    ignore: tuple[str, ...] = ()  # fnmatch patterns of source keys the format may drop
    multi_file: bool = False  # one model may come split over several files
    # graph-driven formats: family -> planner(paths, spec, num_classes) -> Plan
    planners: dict[str, Callable[..., Plan]] = field(default_factory=dict)

    def supports(self, family: str) -> bool:
        return family in self.renamers or family in self.planners


def read_torch_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from .safetensors, or from a pickle via torch.load(weights_only=True)."""
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except SafetensorError as err:
            raise ConversionError(f"{path}: not a readable safetensors file ({err})") from err
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # the unpickler refuses anything but tensors and containers
            # torch's message advises weights_only=False, i.e. running the pickle: not ours.
            reason = strip_torch_advice(str(err))
            raise ConversionError(f"{path}: refused to load: {reason}") from err
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


_CONVERTERS = (
    SourceFormat(GLUONCV, (".params",), read_params, gluoncv.STRUCTURAL_RENAMERS),
    # timm's and torchvision's ResNets and Inception v3 already use zoo's module names; their
    # Inception's auxiliary head (AuxLogits, a training-only loss branch) is dropped on purpose.
    SourceFormat(
        TIMM, (".safetensors", ".pth", ".pt", ".bin"), read_torch_state_dict,
        {"resnet": _identity, "inception": _identity},
        ignore=("*num_batches_tracked", "AuxLogits.*"),
    ),
    SourceFormat(
        TORCHVISION, (".safetensors", ".pth", ".pt", ".bin"), read_torch_state_dict,
        {"resnet": _identity, "inception": _identity},
        ignore=("*num_batches_tracked", "AuxLogits.*"),
    ),
    # TensorFlow Lite MobileNets onto the *_tf twins, mapped by walking the graph (see tflite/).
    SourceFormat(
        TFLITE, (".tflite",), tflite.read_constants, {}, multi_file=True,
        planners={"mobilenet": tflite.plan_mobilenet, "mobilenetv2": tflite.plan_mobilenet},
    ),
)  # fmt: skip
# by name, in zoo.formats.CONVERTER_FORMATS order (the names the manifest accepts)
FORMATS: dict[str, SourceFormat] = {f.name: f for f in _CONVERTERS}


@dataclass(frozen=True)
class Converted:
    state_dict: dict[str, torch.Tensor]
    report: ConversionReport
    config: object  # the arch config the state dict fits (num_classes from the source)


Source = str | os.PathLike | Sequence[str | os.PathLike]


def convert(
    src: Source, *, model: str, format: str | None = None, num_classes: int | None = None
) -> Converted:
    """Map a foreign checkpoint onto ``model``; ``num_classes`` defaults to the source's.

    ``src``: a path, or a sequence of paths for a model split over files (TFLite's MobileNet v1
    1.0: backbone and head, chained in whichever order they connect).
    """
    paths = _source_paths(src)
    spec = get_spec(model)
    if format is not None:
        return _convert_as(FORMATS[_check_format(format)], paths, spec, num_classes)
    return _convert_inferred(paths, spec, num_classes)


def _source_paths(src: Source) -> list[Path]:
    items = [src] if isinstance(src, str | os.PathLike) else list(src)
    if not items:
        raise ValueError("no source file given")
    paths = [Path(p).expanduser() for p in items]
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"source weights not found: {path}")
    return paths


def _describe(paths: list[Path]) -> str:
    return str(paths[0]) if len(paths) == 1 else " + ".join(str(p) for p in paths)


def _check_format(name: str) -> str:
    if name not in FORMATS:
        raise ValueError(f"unknown format {name!r}; choose one of {sorted(FORMATS)}")
    return name


def _convert_inferred(paths: list[Path], spec: ModelSpec, num_classes: int | None) -> Converted:
    src = _describe(paths)
    candidates = [
        f
        for f in FORMATS.values()
        if all(p.suffix in f.extensions for p in paths)
        and f.supports(spec.family)
        and (len(paths) == 1 or f.multi_file)
    ]
    if not candidates:
        raise ConversionError(_no_format_message(paths, spec))
    results, errors = [], []
    for fmt in candidates:
        try:
            results.append(_convert_as(fmt, paths, spec, num_classes))
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


def _no_format_message(paths: list[Path], spec: ModelSpec) -> str:
    """Why no format fits: the extension is unknown, or its formats do not cover the arch."""
    names = ", ".join(p.name for p in paths)
    by_extension = [
        f.name for f in FORMATS.values() if all(p.suffix in f.extensions for p in paths)
    ]
    covering = sorted(f.name for f in FORMATS.values() if f.supports(spec.family))
    if not by_extension:
        known = sorted({e for f in FORMATS.values() for e in f.extensions})
        return (
            f"cannot tell the format of {names} from its extension (known: {', '.join(known)}); "
            f"pass --format (one of {', '.join(sorted(FORMATS))})"
        )
    return (
        f"{names} is a {' or '.join(by_extension)} file, but that converter does not cover "
        f"{spec.name} ({spec.family} family); formats for it: {', '.join(covering) or 'none'}"
    )


def _convert_as(
    fmt: SourceFormat, paths: list[Path], spec: ModelSpec, num_classes: int | None
) -> Converted:
    if not fmt.supports(spec.family):
        supported = sorted(f.name for f in FORMATS.values() if f.supports(spec.family))
        raise ConversionError(
            f"the {fmt.name} converter does not cover {spec.name} ({spec.family} family); "
            f"formats for it: {', '.join(supported) or 'none'}"
        )
    if len(paths) > 1 and not fmt.multi_file:
        raise ConversionError(f"the {fmt.name} format reads one file, got {len(paths)}")
    if spec.family in fmt.planners:
        return _convert_planned(fmt, paths, spec, num_classes)
    src = paths[0]
    source = fmt.read(src)
    rename = fmt.renamers[spec.family]
    if fmt.name == GLUONCV and gluoncv.is_legacy(list(source)):
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


def _convert_planned(
    fmt: SourceFormat, paths: list[Path], spec: ModelSpec, num_classes: int | None
) -> Converted:
    """A graph-driven format: the planner says which tensor goes where, then exact-once."""
    src = _describe(paths)
    context = f"{src} as {fmt.name} -> {spec.name}"
    try:
        plan = fmt.planners[spec.family](paths, spec, num_classes)
    except ConversionError as err:
        raise ConversionError(f"{context}: {err}") from None
    dropped = set(plan.ignored)
    source = {k: v for k, v in plan.source.items() if k not in dropped}
    shapes = _target_shapes(spec, plan.config)
    state, ignored, defaulted = map_state_dict(
        source, shapes, plan.targets.get, ignore=fmt.ignore, defaults=plan.defaults,
        context=context,
    )  # fmt: skip
    report = ConversionReport(
        spec.name, fmt.name, src, len(state) - len(defaulted), (*plan.ignored, *ignored),
        defaulted, plan.config.num_classes, plan.notes,
    )  # fmt: skip
    return Converted(state, report, plan.config)


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
    src: Source,
    dst: str | Path,
    *,
    model: str,
    format: str | None = None,
    num_classes: int | None = None,
    labels: str | tuple[str, ...] | None = None,
    label_offset: int | None = None,
) -> ConversionReport:
    """Convert and write a zoo-layout safetensors file (atomically).

    ``label_offset``: classifier rows before the first label (1 for TensorFlow's 1001-way
    classifiers, whose row 0 is "background"); the loader drops them. Left out with
    ``labels`` given, it is what makes the classifier's width match the labels (0, or 1 for a
    background row, said in the report's notes); any other mismatch is an error, never a file
    whose every prediction is one class off.
    """
    converted = convert(src, model=model, format=format, num_classes=num_classes)
    label_offset, note = _label_offset(labels, label_offset, converted.report.num_classes)
    if note:
        converted = replace(
            converted, report=replace(converted.report, notes=(*converted.report.notes, note))
        )
    spec = get_spec(model)
    names = ", ".join(p.name for p in _source_paths(src))
    meta = CheckpointMeta(
        arch=spec.name,
        config=config_diff(converted.config, spec.config),
        labels=labels,
        label_offset=label_offset,
        source=f"converted from {names} ({converted.report.source_format})",
    )
    save_checkpoint(dst, converted.state_dict, meta)
    return converted.report


def _label_offset(
    labels: str | tuple[str, ...] | None, offset: int | None, width: int
) -> tuple[int, str]:
    """(classifier rows before class 0, a note when it was inferred), checked against the
    labels: ``width - offset`` must be the number of labels."""
    if offset is not None and not 0 <= offset < width:
        raise ValueError(f"label_offset must be in [0, {width}) for {width} outputs, got {offset}")
    if labels is None:
        return offset or 0, ""
    from zoo.labels import resolve_labels

    count = len(resolve_labels(labels).names)  # type: ignore[union-attr]
    named = labels if isinstance(labels, str) else f"{count} labels"
    if offset is None:
        if width == count:
            return 0, ""
        if width == count + 1:
            return 1, (
                f"label_offset 1: {width} outputs for the {count} classes of {named}, row 0 "
                "is a background class (TensorFlow's)"
            )
        offset = 0
    if width - offset != count:
        raise ValueError(
            f"the classifier has {width} outputs, {named} has {count} classes: with "
            f"label_offset {offset} every prediction would be off; pass --label-offset "
            f"{width - count if width > count else 'N'} (rows before class 0) or other labels"
        )
    return offset, ""
