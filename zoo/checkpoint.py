"""zoo-layout safetensors files: a state dict plus the metadata needed to rebuild the model.

Metadata (safetensors stores str -> str):
``zoo_format`` (version), ``arch`` (canonical name), ``config`` (JSON of the config values that
differ from the arch's defaults), and where known ``labels`` (a label-set name such as
``imagenet-1k``, or a JSON list of class ids: what ``evaluate`` matches data folders to, e.g.
WordNet ids), ``label_names`` (JSON list of display names, when they differ from the ids; files
without it show the ids), ``label_offset`` (rows before class 0, e.g. TensorFlow's background
row), ``preprocess`` (JSON of :class:`zoo.preprocess.Preprocess`) and ``source`` (provenance).
"""

from __future__ import annotations

import dataclasses
import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from zoo.hub.atomic import atomic_path
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
    label_names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.label_names is not None and (
            isinstance(self.labels, str) or len(self.label_names) != len(self.labels or ())
        ):
            raise ValueError("label_names need a list of class ids of the same length")

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
        if self.label_names is not None:
            meta["label_names"] = json.dumps(list(self.label_names))
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
            names = json.loads(meta["label_names"]) if "label_names" in meta else None
            return cls(
                arch=meta["arch"],
                config=json.loads(meta.get("config", "{}")),
                labels=tuple(labels) if isinstance(labels, list) else labels,
                label_offset=_label_offset(meta.get("label_offset", "0")),
                preprocess=(
                    Preprocess.from_dict(json.loads(meta["preprocess"]))
                    if "preprocess" in meta
                    else None
                ),
                source=meta.get("source", ""),
                label_names=tuple(names) if names is not None else None,
            )
        except (KeyError, ValueError, TypeError) as err:
            raise CheckpointError(f"{path}: corrupt zoo metadata ({err})") from err


def _label_offset(text: str) -> int:
    offset = int(text)
    if offset < 0:
        raise ValueError(f"label_offset must be >= 0, got {offset}")
    return offset


def config_diff(config: Any, default: Any) -> dict[str, Any]:
    """JSON-able config values that differ from the arch's defaults.

    A callable option (a custom ``norm_layer``) cannot be written down: the file would rebuild a
    different network, so it is refused rather than dropped.
    """
    diff = {}
    for field in dataclasses.fields(config):
        value, base = getattr(config, field.name), getattr(default, field.name)
        if value == base:
            continue
        if callable(value):
            raise ValueError(
                f"cannot save {field.name}={value!r}: a callable has no file form; build the "
                "model with a named one (e.g. norm_layer='frozen_batchnorm') to save it"
            )
        diff[field.name] = list(value) if isinstance(value, tuple) else value
    return diff


def save_checkpoint(
    path: str | Path, state_dict: dict[str, torch.Tensor], meta: CheckpointMeta
) -> Path:
    """Write atomically: a unique temp file in the target folder, then rename."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"{path}: zoo checkpoints end in .safetensors")
    tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata=meta.to_strings())
    return path


def is_safetensors(path: Path) -> bool:
    """Whether the file starts as safetensors does: a little-endian u64 header size, then '{'."""
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) < 9 or head[8:9] != b"{":
        return False
    return int.from_bytes(head[:8], "little") <= path.stat().st_size - 8


def convert_hint(path: Path, arch: str) -> str:
    """The command that turns another library's checkpoint into a zoo file next to it."""
    out = path.with_name(path.stem + (".zoo" if path.suffix == ".safetensors" else ""))
    out = out.with_name(out.name + ".safetensors")
    return (
        f"`zoo convert {shlex.quote(str(path))} --model {arch} -o {shlex.quote(str(out))}`, "
        f"then pretrained={str(out)!r}"
    )


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
    """The state dict (tensors memory-mapped from the file) and its metadata.

    Floating tensors in another precision (float16, bfloat16, float64) are cast to float32,
    the precision every zoo model is built in; integer tensors are refused except BatchNorm's
    step counters (a weight stored as integers is a corrupt or foreign file, not a model).
    """
    path = _existing(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = CheckpointMeta.from_strings(f.metadata(), str(path))
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except SafetensorError as err:
        raise CheckpointError(
            f"{path}: unreadable safetensors file ({err}); re-download or re-convert it"
        ) from err
    return {k: _checked(k, t, path) for k, t in state.items()}, meta


_COUNTERS = ("num_batches_tracked",)  # BatchNorm's bookkeeping: the only integer tensors


def _checked(key: str, tensor: torch.Tensor, path: Path) -> torch.Tensor:
    if tensor.is_floating_point():
        return tensor if tensor.dtype == torch.float32 else tensor.float()
    if key.rsplit(".", 1)[-1] in _COUNTERS and tensor.dtype in (torch.int64, torch.int32):
        return tensor
    raise CheckpointError(
        f"{path}: tensor {key!r} is {str(tensor.dtype).removeprefix('torch.')}; a zoo checkpoint "
        "holds floating-point tensors (integers only for BatchNorm's num_batches_tracked): "
        "re-convert the source with `zoo convert`"
    )


def _existing(path: str | Path) -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    return path
