"""zoo-layout safetensors files: a state dict plus the metadata needed to rebuild the model.

Metadata (safetensors stores str -> str):
``zoo_format`` (version), ``arch`` (canonical name), ``config`` (JSON of the config values that
differ from the arch's defaults), and where known ``labels`` (JSON list, or a label-set name such
as ``imagenet-1k``), ``label_offset`` (rows before class 0, e.g. TensorFlow's background row),
``preprocess`` (JSON of :class:`zoo.preprocess.Preprocess`) and ``source`` (provenance text).
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from zoo.preprocess import Preprocess

FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A file that is not a readable zoo-layout checkpoint; the message says why."""


@dataclass(frozen=True)
class CheckpointMeta:
    arch: str
    config: dict[str, Any]
    labels: str | tuple[str, ...] | None = None
    label_offset: int = 0
    preprocess: Preprocess | None = None
    source: str = ""

    def to_strings(self) -> dict[str, str]:
        meta = {
            "zoo_format": str(FORMAT_VERSION),
            "arch": self.arch,
            "config": json.dumps(self.config, sort_keys=True),
            "label_offset": str(self.label_offset),
        }
        if self.labels is not None:
            meta["labels"] = json.dumps(
                self.labels if isinstance(self.labels, str) else list(self.labels)
            )
        if self.preprocess is not None:
            meta["preprocess"] = self.preprocess.to_json()
        if self.source:
            meta["source"] = self.source
        return meta

    @classmethod
    def from_strings(cls, meta: dict[str, str] | None, path: str) -> CheckpointMeta:
        if not meta or "zoo_format" not in meta:
            raise CheckpointError(
                f"{path}: not a zoo-layout file (no zoo metadata); convert it first with "
                "`zoo convert SRC --model NAME -o DST.safetensors`"
            )
        if int(meta["zoo_format"]) > FORMAT_VERSION:
            raise CheckpointError(
                f"{path}: zoo format {meta['zoo_format']} is newer than this zoo understands "
                f"({FORMAT_VERSION}); upgrade zoo"
            )
        try:
            labels = json.loads(meta["labels"]) if "labels" in meta else None
            return cls(
                arch=meta["arch"],
                config=json.loads(meta.get("config", "{}")),
                labels=tuple(labels) if isinstance(labels, list) else labels,
                label_offset=int(meta.get("label_offset", "0")),
                preprocess=(
                    Preprocess.from_dict(json.loads(meta["preprocess"]))
                    if "preprocess" in meta
                    else None
                ),
                source=meta.get("source", ""),
            )
        except (KeyError, ValueError, TypeError) as err:
            raise CheckpointError(f"{path}: corrupt zoo metadata ({err})") from err


def config_diff(config: Any, default: Any) -> dict[str, Any]:
    """JSON-able config values that differ from the arch's defaults."""
    diff = {}
    for field in dataclasses.fields(config):
        value, base = getattr(config, field.name), getattr(default, field.name)
        if value == base:
            continue
        if callable(value):  # a custom norm layer: not a fact about the weights' tensors
            continue
        diff[field.name] = list(value) if isinstance(value, tuple) else value
    return diff


def save_checkpoint(
    path: str | Path, state_dict: dict[str, torch.Tensor], meta: CheckpointMeta
) -> Path:
    """Write atomically: a unique temp file in the target folder, then rename."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"{path}: zoo checkpoints end in .safetensors")
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".incomplete", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=meta.to_strings())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_meta(path: str | Path) -> CheckpointMeta:
    path = _existing(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            return CheckpointMeta.from_strings(f.metadata(), str(path))
    except SafetensorError as err:
        raise CheckpointError(
            f"{path}: unreadable safetensors file ({err}); re-download or re-convert it"
        ) from err


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], CheckpointMeta]:
    """The state dict (tensors memory-mapped from the file) and its metadata."""
    path = _existing(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = CheckpointMeta.from_strings(f.metadata(), str(path))
            return {k: f.get_tensor(k) for k in f.keys()}, meta  # noqa: SIM118
    except SafetensorError as err:
        raise CheckpointError(
            f"{path}: unreadable safetensors file ({err}); re-download or re-convert it"
        ) from err


def _existing(path: str | Path) -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    return path
