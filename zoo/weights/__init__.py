"""The weights catalogue (``weights_manifest.json``) and resolution of tags to verified files."""

from __future__ import annotations

import fnmatch
import json
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from zoo.registry import ModelSpec


class WeightsNotFoundError(LookupError):
    """No weights with that tag for that architecture; the message lists what exists."""

    def __str__(self) -> str:
        return str(self.args[0])


def manifest_path() -> Path:
    """The packaged manifest in a wheel, else the one at the root of a source checkout."""
    packaged = resources.files("zoo").joinpath("weights_manifest.json")
    if packaged.is_file():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[2] / "weights_manifest.json"


@cache
def _entries() -> tuple[dict[str, Any], ...]:
    with open(manifest_path(), encoding="utf-8") as f:
        return tuple(json.load(f)["weights"])


def list_weights(pattern: str = "*") -> list[dict[str, Any]]:
    """Manifest records whose ``arch`` or ``arch.tag`` matches the fnmatch pattern."""
    return [
        e
        for e in _entries()
        if any(fnmatch.fnmatchcase(key, pattern) for key in (e["arch"], f"{e['arch']}.{e['tag']}"))
    ]


def archs_with_weights() -> set[str]:
    return {e["arch"] for e in _entries()}


def resolve_weights(spec: ModelSpec, tag: str | None) -> tuple[Path, str]:
    """(verified local zoo-layout file, tag) for ``spec``; ``tag=None`` is the default tag."""
    entries = [e for e in _entries() if e["arch"] == spec.name]
    if not entries:
        raise WeightsNotFoundError(
            f"no pretrained weights for {spec.name} in the catalogue; see "
            "zoo.list_models(pretrained=True), or pass pretrained='path/to/file.safetensors'"
        )
    tags = [e["tag"] for e in entries]
    chosen = [e for e in entries if (e.get("default") if tag is None else e["tag"] == tag)]
    if not chosen:
        raise WeightsNotFoundError(
            f"{spec.name} has no weights tagged {tag!r}; tags: {', '.join(tags)}"
        )
    raise NotImplementedError("downloading catalogue weights arrives with the weight hub")
