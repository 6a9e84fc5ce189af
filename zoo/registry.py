"""The model registry: canonical name -> ModelSpec.

Family files (``zoo/models/resnet.py`` ...) own a literal table of frozen configs and register it
with :func:`register_family`. Everything else (``get_model``, ``list_models``, the CLI,
``hubconf.py``) reads this registry, so a variant is declared exactly once.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from zoo.preprocess import Preprocess

if TYPE_CHECKING:  # the registry itself stays torch-free; family modules import torch
    from torch import nn

_IDENTIFIER = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class ModelSpec:
    """Everything the registry knows about one named architecture."""

    name: str
    family: str
    config: Any  # a frozen dataclass instance of the family's config type
    build: Callable[[Any], nn.Module]
    preprocess: Preprocess  # eval preprocessing of the arch when no weights say otherwise
    aliases: tuple[str, ...] = ()
    doc: str = ""


_SPECS: dict[str, ModelSpec] = {}
_ALIASES: dict[str, str] = {}


class UnknownModelError(KeyError):
    """An unknown architecture name; the message suggests the closest names."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it readable
        return str(self.args[0])


def gluon_alias(name: str) -> str:
    """GluonCV's spelling of a canonical name: ``mobilenetv2_0_25`` -> ``mobilenetv2_0.25``.

    Only a trailing width multiplier is dotted (``resnext50_32x4d`` keeps its underscore).
    """
    return re.sub(r"(\d)_(\d+)((?:_tf)?)$", r"\1.\2\3", name)


def register_family(
    family: str,
    configs: Mapping[str, Any],
    build: Callable[[Any], nn.Module],
    *,
    preprocess: Preprocess | Mapping[str, Preprocess],
    docs: Mapping[str, str] | None = None,
    aliases: Mapping[str, Iterable[str]] | None = None,
) -> None:
    """Register every entry of a family's config table.

    ``preprocess`` is one record for the whole family or a per-name mapping. GluonCV's dotted
    spelling of each name is added as an alias automatically.
    """
    for name, config in configs.items():
        extra = tuple((aliases or {}).get(name, ()))
        gluon = gluon_alias(name)
        spec_aliases = extra + ((gluon,) if gluon != name else ())
        pre = preprocess if isinstance(preprocess, Preprocess) else preprocess[name]
        register(
            ModelSpec(name, family, config, build, pre, spec_aliases, (docs or {}).get(name, ""))
        )


def register(spec: ModelSpec) -> None:
    """Add one spec. Duplicate names or aliases raise: two definitions of one name is a bug."""
    if not _IDENTIFIER.match(spec.name):
        raise ValueError(f"model name {spec.name!r} must be a lowercase Python identifier")
    if not dataclasses.is_dataclass(spec.config) or not _is_frozen(spec.config):
        raise TypeError(f"config of {spec.name!r} must be a frozen dataclass instance")
    taken = set(_SPECS) | set(_ALIASES)
    for key in (spec.name, *spec.aliases):
        if key in taken:
            raise ValueError(f"model name or alias {key!r} is already registered")
    _SPECS[spec.name] = spec
    for alias in spec.aliases:
        _ALIASES[alias] = spec.name


def _is_frozen(obj: Any) -> bool:
    params = getattr(type(obj), "__dataclass_params__", None)
    return bool(params and params.frozen)


def canonical_name(name: str) -> str:
    """Resolve a canonical name or alias (case-insensitive); raise with suggestions if unknown."""
    if not isinstance(name, str):
        raise TypeError(f"model name must be a str, not {type(name).__name__}")
    _ensure_loaded()
    key = name.strip().lower()
    if key in _SPECS:
        return key
    if key in _ALIASES:
        return _ALIASES[key]
    raise UnknownModelError(_unknown_message(name))


def _unknown_message(name: str) -> str:
    candidates = list(_SPECS) + list(_ALIASES)
    close = difflib.get_close_matches(name.lower(), candidates, n=5, cutoff=0.6)
    close = list(dict.fromkeys(_ALIASES.get(c, c) for c in close))
    if not close:  # fall back to a shared prefix, e.g. "resnet" -> the resnets
        stem = re.split(r"[\d_.]", name.lower(), maxsplit=1)[0]
        close = [n for n in _SPECS if stem and n.startswith(stem)][:5]
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    every = f"`zoo list` (or zoo.list_models()) shows all {len(_SPECS)} names"
    return f"unknown model {name!r}.{hint} {every}."


def get_spec(name: str) -> ModelSpec:
    return _SPECS[canonical_name(name)]


def all_specs() -> list[ModelSpec]:
    _ensure_loaded()
    return [_SPECS[n] for n in sorted(_SPECS)]


def list_models(pattern: str | Iterable[str] = "*") -> list[str]:
    """Canonical names matching fnmatch ``pattern`` (or any of several patterns), sorted.

    Which of them have weights is the weights catalogue's business: :func:`zoo.list_models`
    composes the two, so the registry depends on nothing above it.
    """
    patterns = [pattern] if isinstance(pattern, str) else list(pattern)
    return [
        spec.name
        for spec in all_specs()
        if any(
            fnmatch.fnmatchcase(key, p.lower())
            for p in patterns
            for key in (spec.name, *spec.aliases)
        )
    ]


def _ensure_loaded() -> None:
    # Family modules register themselves on import; importing here keeps `zoo.registry` usable
    # on its own (e.g. from hubconf.py) without a circular import at package import time.
    import zoo.models  # noqa: F401
