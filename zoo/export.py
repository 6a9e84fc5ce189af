"""``zoo.export_model``: a zoo model to ONNX, TorchScript or a ``torch.export`` ExportedProgram.

* What is exported is the model with its BatchNorms folded into the convs (``zoo.optimize``'s
  fold; fp32, default memory format), so no runtime needs to fold them again.
* The batch dimension is dynamic; the spatial size is the one exported at (the weights' crop
  unless ``img_size`` says otherwise). The ``_tf`` twins' TensorFlow "SAME" padding is computed
  from the input size, so in the file it is fixed for the export size: feed that size only.
* ONNX goes through PyTorch's ``torch.export``-based exporter (``torch.onnx.export(...,
  dynamo=True)``; the TorchScript-based one is deprecated) and needs the ``export`` extra
  (``onnx``, ``onnxscript``, ``onnxruntime``). TorchScript is made by tracing.
* The file records what it is (``zoo.json``: arch, weights, input size, preprocessing, labels,
  the SAME-padding note) in ONNX ``metadata_props`` or the TorchScript / ExportedProgram
  archive's extra files.
* Before the file gets its final name, it is loaded back with its runtime (ONNX Runtime for
  ONNX) and run at another batch size; its outputs must match the eager PyTorch model's within
  ``atol``, else nothing is written.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zoo.models.mobilenet import Conv2dSame
from zoo.optimization import fold_batchnorm

FORMATS = ("onnx", "torchscript", "exported-program")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt", "exported-program": ".pt2"}
METADATA_KEY = "zoo.json"
EXPORT_BATCH, CHECK_BATCH = 2, 3  # the check runs another batch size: the batch is dynamic


@dataclass(frozen=True)
class ExportResult:
    path: Path
    format: str
    input_size: tuple[int, int, int]
    max_abs_diff: float  # exported file vs the eager PyTorch model, on CHECK_BATCH images
    metadata: dict[str, Any]


REQUIRES = {"onnx": ("onnx", "onnxscript", "onnxruntime")}  # the `export` extra


def _require(fmt: str) -> None:
    import importlib.util

    missing = [m for m in REQUIRES.get(fmt, ()) if importlib.util.find_spec(m) is None]
    if missing:
        raise ModuleNotFoundError(
            f"{fmt} export needs {', '.join(missing)}: pip install 'zoo[export]'"
        )


def metadata(model: nn.Module, input_size: tuple[int, int, int], fmt: str) -> dict[str, Any]:
    cfg = model.pretrained_cfg
    same = any(isinstance(m, Conv2dSame) for m in model.modules())
    return {
        "arch": cfg.arch,
        "weights": None if cfg.weights is None else str(cfg.weights),
        "format": fmt,
        "input_size": list(input_size),
        "dynamic": ["batch"],
        "preprocess": dataclasses.asdict(cfg.preprocess),
        "labels": cfg.labels if isinstance(cfg.labels, str | None) else list(cfg.labels),
        "label_offset": cfg.label_offset,
        "num_classes": model.config.num_classes,
        "same_padding_fixed_at": list(input_size[1:]) if same else None,
        "bn_folded": True,
    }


def _export_onnx(model: nn.Module, x: torch.Tensor, path: Path, meta: dict[str, Any]) -> None:
    batch = torch.export.Dim("batch")
    with _quiet():
        program = torch.onnx.export(
            model, (x,), dynamo=True, dynamic_shapes=({0: batch},),
            input_names=["image"], output_names=["logits"], verbose=False,
        )  # fmt: skip
    program.model.metadata_props[METADATA_KEY] = json.dumps(meta)
    program.save(str(path))


def _run_onnx(path: Path, x: torch.Tensor) -> torch.Tensor:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {"image": x.numpy()})[0])


def _export_torchscript(
    model: nn.Module, x: torch.Tensor, path: Path, meta: dict[str, Any]
) -> None:
    with _quiet(), torch.no_grad():
        traced = torch.jit.trace(model, x)
    torch.jit.save(traced, str(path), _extra_files={METADATA_KEY: json.dumps(meta)})


def _run_torchscript(path: Path, x: torch.Tensor) -> torch.Tensor:
    with _quiet(), torch.no_grad():
        return torch.jit.load(str(path))(x)


def _export_program(model: nn.Module, x: torch.Tensor, path: Path, meta: dict[str, Any]) -> None:
    batch = torch.export.Dim("batch")
    program = torch.export.export(model, (x,), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(path), extra_files={METADATA_KEY: json.dumps(meta)})


def _run_program(path: Path, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.export.load(str(path)).module()(x)


_WRITERS: dict[str, tuple[Callable[..., None], Callable[[Path, torch.Tensor], torch.Tensor]]] = {
    "onnx": (_export_onnx, _run_onnx),
    "torchscript": (_export_torchscript, _run_torchscript),
    "exported-program": (_export_program, _run_program),
}


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    # jit.trace's deprecation notice and TracerWarnings about SAME padding (documented above).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The ``zoo.json`` record of an exported file (.onnx, .pt2, else TorchScript)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    if path.suffix == ".onnx":
        _require("onnx")
        import onnx

        props = {
            p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props
        }
        return json.loads(props[METADATA_KEY])
    extra = {METADATA_KEY: ""}
    if path.suffix == ".pt2":
        torch.export.load(str(path), extra_files=extra)
    else:
        with _quiet():
            torch.jit.load(str(path), _extra_files=extra)
    return json.loads(extra[METADATA_KEY])


def export_model(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    format: str,
    img_size: int | None = None,
    atol: float = 1e-4,
) -> ExportResult:
    """Export a zoo model (from ``zoo.get_model``) after checking the file's outputs."""
    if format not in FORMATS:
        raise ValueError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    cfg, config = getattr(model, "pretrained_cfg", None), getattr(model, "config", None)
    if cfg is None or config is None:
        raise TypeError("export_model takes a zoo model (from zoo.get_model)")
    _require(format)
    size = cfg.preprocess.crop if img_size is None else img_size
    if size < 1:
        raise ValueError("img_size must be positive")
    path = Path(path)
    if format == "exported-program" and path.suffix != ".pt2":
        raise ValueError(f"{path}: an exported program's file name must end in .pt2")
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder: give the output file's name")
    input_size = (config.in_chans, size, size)
    reference = copy.deepcopy(model).eval().float().cpu()
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(EXPORT_BATCH, *input_size, generator=generator)
    check = torch.randn(CHECK_BATCH, *input_size, generator=generator)
    folded = copy.deepcopy(reference)
    fold_batchnorm(folded, x[:1])
    folded.requires_grad_(False)
    meta = metadata(model, input_size, format)
    write, run = _WRITERS[format]
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written and checked under a temporary name in the same folder, then renamed; the
    # temporary name ends as the format's runtime expects (torch.export.load wants ".pt2").
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp{SUFFIXES[format]}")
    try:
        write(folded, x, tmp, meta)
        with torch.no_grad():
            expected = reference(check)
        diff = float((run(tmp, check) - expected).abs().max())
        if not diff <= atol:
            raise ValueError(
                f"{format} export of {cfg.arch} differs from PyTorch by {diff:.3g} "
                f"(> {atol:g}); nothing written"
            )
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return ExportResult(path, format, input_size, diff, meta)


__all__ = ["FORMATS", "ExportResult", "export_model", "read_metadata"]
