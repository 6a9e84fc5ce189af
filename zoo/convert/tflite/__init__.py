"""TensorFlow Lite models: a pure-Python flatbuffer reader and a graph-driven mapping onto the
MobileNet ``*_tf`` twins (no ``tflite``, ``flatbuffers`` or TFLite runtime needed).

* :mod:`~zoo.convert.tflite.flatbuffer`: the FlatBuffers wire format, bounds-checked: a truncated
  or foreign file is a :class:`TFLiteFormatError` (a ``ValueError``) that says so.
* :mod:`~zoo.convert.tflite.schema`: the parts of TFLite's schema a converter needs.
* :mod:`~zoo.convert.tflite.reader`: :func:`read_tflite` -> typed records, with dequantization.
* :mod:`~zoo.convert.tflite.planner`: which constant fills which tensor of the twin, checked op
  by op against the twin's modules.

This module opens the files (a model split over several, MobileNet v1 1.0's backbone and head,
is chained) and is what ``zoo.convert.FORMATS["tflite"]`` registers.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from zoo.convert.core import ConversionError, Plan
from zoo.convert.tflite.flatbuffer import TFLiteFormatError
from zoo.convert.tflite.planner import GraphFile, plan, source_keys, to_torch_layout
from zoo.convert.tflite.reader import (
    Operator,
    Quantization,
    SubGraph,
    Tensor,
    TFLiteModel,
    parse_tflite,
    read_tflite,
)
from zoo.registry import ModelSpec

__all__ = [
    "GraphFile",
    "Operator",
    "Plan",
    "Quantization",
    "SubGraph",
    "TFLiteFormatError",
    "TFLiteModel",
    "Tensor",
    "open_graphs",
    "parse_tflite",
    "plan_mobilenet",
    "read_constants",
    "read_tflite",
    "to_torch_layout",
]


def open_graphs(paths: str | Path | Sequence[str | Path]) -> list[GraphFile]:
    """Read each file; its tensors' source keys are file-qualified when there are several."""
    paths = [Path(paths)] if isinstance(paths, str | Path) else [Path(p) for p in paths]
    files = []
    for path in paths:
        model = read_tflite(path)
        if len(model.subgraphs) != 1:
            raise ConversionError(
                f"{path}: {len(model.subgraphs)} subgraphs; only single-graph models convert"
            )
        graph = model.subgraphs[0]
        _check_references(model, graph, path)
        prefix = f"{path.name}:" if len(paths) > 1 else ""
        files.append(GraphFile(model, graph, source_keys(graph, prefix)))
    return files


def read_constants(paths: str | Path | Sequence[str | Path]) -> dict[str, torch.Tensor]:
    """Every constant tensor of the file(s), dequantized, in TFLite layout, by source key."""
    return {
        key: file.model.dequantize(tensor)
        for file in open_graphs(paths)
        for tensor, key in file.constants()
    }


def plan_mobilenet(
    paths: Sequence[str | Path], spec: ModelSpec, num_classes: int | None = None
) -> Plan:
    """Map a TFLite MobileNet (one file, or a chain of files) onto ``spec``'s twin."""
    return plan(open_graphs(paths), spec, num_classes)


def _check_references(model: TFLiteModel, graph: SubGraph, path: Path) -> None:
    """Refuse a file whose tensors reference far more constant data than it holds (one large
    buffer named by thousands of tensors): each would be dequantized on its own."""
    held = path.stat().st_size
    referenced = sum(len(model.data(tensor)) for tensor in graph.tensors)
    if referenced > 2 * held + (1 << 20):
        raise TFLiteFormatError(
            f"{path}: its tensors reference {referenced} bytes of constants, the file holds "
            f"{held}: buffers shared between many tensors (corrupt or hostile file)"
        )
