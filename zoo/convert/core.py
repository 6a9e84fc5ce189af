"""Exact-once state-dict mapping: every source tensor used once, every target filled once.

A source format supplies a ``rename`` function (source key -> zoo key, or None when no rule
applies) and a list of source keys it may drop. :func:`map_state_dict` does the bookkeeping and
fails loudly, naming keys, rather than loading a half-mapped model.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

# Buffers a source may lack; the target gets a zero (BN's step counter is bookkeeping only).
DEFAULTABLE_TARGETS = ("*num_batches_tracked",)


@dataclass(frozen=True)
class ConversionReport:
    arch: str
    source_format: str
    source: str
    mapped: int  # tensors copied from the source
    ignored: tuple[str, ...]  # source keys dropped on purpose (declared by the format)
    defaulted: tuple[str, ...]  # target keys absent from the source, filled with defaults
    num_classes: int
    notes: tuple[str, ...] = ()  # what else the format dropped or checked (graph formats)

    def summary(self) -> str:
        lines = [
            f"{self.source} ({self.source_format}) -> {self.arch}: {self.mapped} tensors mapped, "
            f"{len(self.ignored)} ignored, {len(self.defaulted)} defaulted"
        ]
        if self.ignored:
            lines.append("  ignored: " + _abbreviate(self.ignored))
        if self.defaulted:
            lines.append("  defaulted: " + _abbreviate(self.defaulted))
        lines.extend(f"  note: {note}" for note in self.notes)
        return "\n".join(lines)


@dataclass(frozen=True)
class Plan:
    """What a graph-driven format (TFLite) hands to the exact-once mapping."""

    config: Any  # the arch config the state dict fits
    source: dict[str, torch.Tensor]  # source key -> tensor in zoo layout
    targets: dict[str, str]  # source key -> zoo key
    defaults: dict[str, torch.Tensor]  # zoo keys the format fills (folded BN's identity stats)
    ignored: tuple[str, ...] = ()  # source keys dropped on purpose (structural constants)
    notes: tuple[str, ...] = ()


class ConversionError(ValueError):
    """The source does not map exactly onto the architecture; the message names the keys."""


def _abbreviate(keys: Iterable[str], limit: int = 8) -> str:
    keys = list(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f" ... (+{len(keys) - limit} more)" if len(keys) > limit else "")


def fit_shape(tensor: torch.Tensor, shape: torch.Size) -> torch.Tensor | None:
    """The tensor in ``shape`` if only trailing singleton dims differ (1x1 conv <-> linear)."""
    if tensor.shape == shape:
        return tensor

    def core(s: Iterable[int]) -> list[int]:
        dims = list(s)
        while dims and dims[-1] == 1:
            dims.pop()
        return dims

    return tensor.reshape(shape) if core(tensor.shape) == core(shape) else None


def map_state_dict(
    source: Mapping[str, torch.Tensor],
    target_shapes: Mapping[str, torch.Size],
    rename: Callable[[str], str | None],
    *,
    ignore: Iterable[str] = (),
    defaults: Mapping[str, torch.Tensor] | None = None,
    context: str = "",
) -> tuple[dict[str, torch.Tensor], tuple[str, ...], tuple[str, ...]]:
    """Map ``source`` onto ``target_shapes``; returns (state_dict, ignored, defaulted).

    ``defaults``: target keys the format itself fills (e.g. a folded BatchNorm's identity
    statistics); each must be a model key the source does not fill, and is reported as defaulted.
    """
    ignore = tuple(ignore)
    out: dict[str, torch.Tensor] = {}
    used_by: dict[str, str] = {}
    ignored, unmapped, unknown, wrong_shape, twice = [], [], [], [], []
    for key, tensor in source.items():
        if any(fnmatch.fnmatchcase(key, pattern) for pattern in ignore):
            ignored.append(key)
            continue
        target = rename(key)
        if target is None:
            unmapped.append(key)
        elif target not in target_shapes:
            unknown.append(f"{key} -> {target}")
        elif target in used_by:
            twice.append(f"{used_by[target]} and {key} -> {target}")
        else:
            fitted = fit_shape(tensor, target_shapes[target])
            if fitted is None:
                wrong_shape.append(
                    f"{key} -> {target}: {tuple(tensor.shape)} vs {tuple(target_shapes[target])}"
                )
            else:
                out[target], used_by[target] = fitted, key
    given = []
    for target, tensor in (defaults or {}).items():
        if target not in target_shapes:
            unknown.append(f"(format default) -> {target}")
        elif target in used_by:
            twice.append(f"{used_by[target]} and the format's default -> {target}")
        elif tuple(tensor.shape) != tuple(target_shapes[target]):
            wrong_shape.append(
                f"(format default) -> {target}: {tuple(tensor.shape)} vs "
                f"{tuple(target_shapes[target])}"
            )
        else:
            out[target] = tensor
            given.append(target)
    missing = [k for k in target_shapes if k not in out]
    counters = [k for k in missing if any(fnmatch.fnmatchcase(k, p) for p in DEFAULTABLE_TARGETS)]
    for key in counters:
        out[key] = torch.zeros(target_shapes[key], dtype=torch.long)
    missing = [k for k in missing if k not in counters]
    defaulted = given + counters
    problems = [
        (unmapped, "source keys no rule maps"),
        (unknown, "source keys mapped to names the model lacks"),
        (twice, "target keys filled twice"),
        (wrong_shape, "shape mismatches"),
        (missing, "model keys the source does not fill"),
    ]
    message = "; ".join(
        f"{what} ({len(keys)}): {_abbreviate(keys)}" for keys, what in problems if keys
    )
    if message:
        raise ConversionError(f"{context}: {message}" if context else message)
    return {k: out[k] for k in target_shapes}, tuple(ignored), tuple(defaulted)
