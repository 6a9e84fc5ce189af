"""Reading a ``.tflite`` file into typed records: operator codes, the subgraph's tensors and
operators with their options, quantization parameters and constant buffers.

:meth:`TFLiteModel.dequantize` gives a constant tensor as float32: ``(q - zero_point) * scale``
(per tensor or per channel) for uint8/int8 weights and int32 biases, float tensors as they are.
"""

from __future__ import annotations

import io
import math
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from zoo.convert.tflite.flatbuffer import Buffer, Table, TFLiteFormatError
from zoo.convert.tflite.schema import (
    BUILTIN_OPS,
    CUSTOM,
    IDENTIFIER,
    OPTIONS,
    TENSOR_TYPES,
    BufferField,
    ModelField,
    OperatorCodeField,
    OperatorField,
    QuantizationField,
    SubGraphField,
    TensorField,
)

# the TensorTypes zoo can hold as torch tensors, by the schema's type names
_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32, "float16": torch.float16, "int32": torch.int32,
    "uint8": torch.uint8, "int64": torch.int64, "bool": torch.bool, "int16": torch.int16,
    "int8": torch.int8, "float64": torch.float64,
}  # fmt: skip


@dataclass(frozen=True)
class Quantization:
    scale: tuple[float, ...]
    zero_point: tuple[int, ...]
    quantized_dimension: int = 0

    def describe(self) -> str:
        if len(self.scale) == 1:
            return f"scale {self.scale[0]:.9g}, zero point {self.zero_point[0]}"
        return f"per-channel ({len(self.scale)} scales) on dim {self.quantized_dimension}"


@dataclass(frozen=True)
class Tensor:
    index: int
    name: str
    shape: tuple[int, ...]
    type: str  # "uint8", "int32", "float32", ...
    buffer: int
    quantization: Quantization | None  # None: not quantized


@dataclass(frozen=True)
class Operator:
    index: int
    op: str  # "CONV_2D", ... ("CUSTOM:<name>" for custom ops)
    inputs: tuple[int, ...]  # tensor indices; -1 marks an omitted optional input
    outputs: tuple[int, ...]
    options: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        return f"op {self.index} ({self.op})"


@dataclass(frozen=True)
class SubGraph:
    name: str
    tensors: tuple[Tensor, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    operators: tuple[Operator, ...]


@dataclass(frozen=True)
class TFLiteModel:
    path: str
    version: int
    description: str
    subgraphs: tuple[SubGraph, ...]
    buffers: tuple[memoryview, ...]  # views into the file's bytes (zero-copy)
    associated_files: tuple[str, ...] = ()  # names in the zip TFLite metadata appends (labels)

    def data(self, tensor: Tensor) -> memoryview:
        """The tensor's constant bytes (empty for activations)."""
        if not 0 <= tensor.buffer < len(self.buffers):
            raise TFLiteFormatError(
                f"{self.path}: tensor {tensor.name!r} refers to buffer {tensor.buffer}, "
                f"the file has {len(self.buffers)}"
            )
        return self.buffers[tensor.buffer]

    def is_constant(self, tensor: Tensor) -> bool:
        return bool(self.data(tensor))

    def array(self, tensor: Tensor) -> torch.Tensor:
        """The constant as stored (raw quantized values, TFLite layout)."""
        name, dtype = tensor.type, _DTYPES.get(tensor.type)
        if dtype is None:
            raise TFLiteFormatError(f"{self.path}: tensor {tensor.name!r} has type {name}")
        data = self.data(tensor)
        if any(dim <= 0 for dim in tensor.shape):
            raise TFLiteFormatError(
                f"{self.path}: constant {tensor.name!r} has shape {list(tensor.shape)}: "
                "dimensions must be positive (corrupt file)"
            )
        count = math.prod(tensor.shape)
        itemsize = torch.empty((), dtype=dtype).element_size()
        if len(data) != count * itemsize:
            raise TFLiteFormatError(
                f"{self.path}: tensor {tensor.name!r} of shape {list(tensor.shape)} ({name}) "
                f"needs {count * itemsize} bytes, its buffer has {len(data)}"
            )
        return torch.frombuffer(bytearray(data), dtype=dtype).reshape(tensor.shape)

    def dequantize(self, tensor: Tensor) -> torch.Tensor:
        """float32 values: ``(q - zero_point) * scale`` for quantized tensors, floats as they are.

        Integer tensors without quantization (e.g. RESHAPE's target shape) are returned as is.
        """
        q = self.array(tensor)
        quant = tensor.quantization
        if quant is None:
            return q.float() if q.is_floating_point() else q
        scale = torch.tensor(quant.scale, dtype=torch.float64)
        zero = torch.tensor(quant.zero_point, dtype=torch.float64)
        if len(quant.scale) > 1:  # per channel along quantized_dimension
            dim = quant.quantized_dimension
            if not 0 <= dim < q.dim() or q.shape[dim] != len(quant.scale):
                raise TFLiteFormatError(
                    f"{self.path}: tensor {tensor.name!r}: {len(quant.scale)} scales do not fit "
                    f"dim {dim} of shape {list(tensor.shape)}"
                )
            view = [1] * q.dim()
            view[dim] = -1
            scale, zero = scale.reshape(view), zero.reshape(view)
        return ((q.to(torch.float64) - zero) * scale).to(torch.float32)


def read_tflite(path: str | Path) -> TFLiteModel:
    """Parse a ``.tflite`` flatbuffer (model structure, quantization and constant buffers)."""
    path = Path(path)
    data = path.read_bytes()
    return parse_tflite(data, str(path))


def parse_tflite(data: bytes, path: str = "<bytes>") -> TFLiteModel:
    if len(data) < 8:
        raise TFLiteFormatError(f"{path}: not a TFLite model (only {len(data)} bytes)")
    if data[4:8] != IDENTIFIER:
        raise TFLiteFormatError(
            f"{path}: not a TFLite model (file identifier {bytes(data[4:8])!r}, expected "
            f"{IDENTIFIER!r})"
        )
    buf = Buffer(data, path)
    try:
        model = Table(buf, buf.unpack("I", 0, "root offset"), "Model")
        codes = [_operator_code(t) for t in model.tables(ModelField.OPERATOR_CODES, "OperatorCode")]
        buffers = tuple(_buffer_bytes(t, buf) for t in model.tables(ModelField.BUFFERS, "Buffer"))
        subgraphs = tuple(
            _subgraph(t, codes, buf) for t in model.tables(ModelField.SUBGRAPHS, "SubGraph")
        )
        version = model.scalar(ModelField.VERSION, "I")
        description = model.string(ModelField.DESCRIPTION)
    except struct.error as err:  # defensive: every read is bounds-checked before unpacking
        raise TFLiteFormatError(f"{path}: corrupt TFLite file ({err})") from None
    if not subgraphs:
        raise TFLiteFormatError(f"{path}: the TFLite model has no subgraph")
    associated = _appended_zip(data, buf.end, path)
    return TFLiteModel(path, version, description, subgraphs, buffers, associated)


def _appended_zip(data: bytes, end: int, path: str) -> tuple[str, ...]:
    """Names in the zip of associated files (labels) that TFLite metadata appends after the
    flatbuffer; a cut-off zip means a truncated download even though the model itself parsed."""
    start = data.find(b"PK\x03\x04", end)
    if start < 0:
        return ()
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            bad = archive.testzip()
            names = tuple(archive.namelist())
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
        raise TFLiteFormatError(
            f"{path}: truncated or corrupt TFLite file: the zip of associated files appended at "
            f"byte {start} is incomplete ({err}); re-download it"
        ) from None
    if bad is not None:
        raise TFLiteFormatError(f"{path}: corrupt TFLite file: {bad} in its appended zip")
    return names


def _operator_code(t: Table) -> str:
    # Old files only set the int8 deprecated_builtin_code; new ones set both (the deprecated one
    # capped at 127 for codes above it): the real code is the larger of the two.
    code = max(
        t.scalar(OperatorCodeField.DEPRECATED_BUILTIN_CODE, "b"),
        t.scalar(OperatorCodeField.BUILTIN_CODE, "i"),
    )
    if code == CUSTOM:
        return f"CUSTOM:{t.string(OperatorCodeField.CUSTOM_CODE)}"
    return BUILTIN_OPS.get(code, f"BUILTIN_{code}")


def _buffer_bytes(t: Table, buf: Buffer) -> memoryview:
    """A view, never a copy: the Buffers vector may list one buffer table many times."""
    data = t.view(BufferField.DATA)
    if len(data):
        return data
    # large models keep the data after the flatbuffer, at an absolute offset
    offset, size = t.scalar(BufferField.OFFSET, "Q"), t.scalar(BufferField.SIZE, "Q")
    if offset > 1:
        buf.need(offset, size, "external buffer")
        return buf.view(offset, size)
    return memoryview(b"")


def _subgraph(t: Table, codes: list[str], buf: Buffer) -> SubGraph:
    tensors = tuple(
        _tensor(i, tt) for i, tt in enumerate(t.tables(SubGraphField.TENSORS, "Tensor"))
    )
    operators = tuple(
        _operator(index, op, codes, len(tensors), buf)
        for index, op in enumerate(t.tables(SubGraphField.OPERATORS, "Operator"))
    )
    inputs, outputs = t.scalars(SubGraphField.INPUTS, "i"), t.scalars(SubGraphField.OUTPUTS, "i")
    for tensor in (*inputs, *outputs):
        if not 0 <= tensor < len(tensors):
            raise TFLiteFormatError(f"{buf.path}: subgraph input/output {tensor} out of range")
    return SubGraph(t.string(SubGraphField.NAME), tensors, inputs, outputs, operators)


def _operator(index: int, op: Table, codes: list[str], num_tensors: int, buf: Buffer) -> Operator:
    code_index = op.scalar(OperatorField.OPCODE_INDEX, "I")
    if code_index >= len(codes):
        raise TFLiteFormatError(
            f"{buf.path}: operator {index} uses opcode {code_index}, the file has {len(codes)}"
        )
    name = codes[code_index]
    inputs, outputs = op.scalars(OperatorField.INPUTS, "i"), op.scalars(OperatorField.OUTPUTS, "i")
    for tensor in (*inputs, *outputs):
        if not -1 <= tensor < num_tensors:
            raise TFLiteFormatError(
                f"{buf.path}: operator {index} ({name}) refers to tensor {tensor}, "
                f"the subgraph has {num_tensors}"
            )
    options: dict[str, Any] = {}
    spec = OPTIONS.get(name)
    table = op.table(OperatorField.BUILTIN_OPTIONS, f"{name} options") if spec else None
    if spec is not None and table is not None:
        union_type = op.scalar(OperatorField.BUILTIN_OPTIONS_TYPE, "B")
        if union_type != spec.union_type:
            raise TFLiteFormatError(
                f"{buf.path}: operator {index} ({name}) has options of union type "
                f"{union_type}, expected {spec.union_type}"
            )
        options = spec.parse(table)
    return Operator(index, name, tuple(inputs), tuple(outputs), options)


def _tensor(index: int, t: Table) -> Tensor:
    type_code = t.scalar(TensorField.TYPE, "b")
    return Tensor(
        index=index,
        name=t.string(TensorField.NAME),
        shape=tuple(t.scalars(TensorField.SHAPE, "i")),
        type=TENSOR_TYPES.get(type_code, f"type{type_code}"),
        buffer=t.scalar(TensorField.BUFFER, "I"),
        quantization=_quantization(t.table(TensorField.QUANTIZATION, "QuantizationParameters")),
    )


def _quantization(q: Table | None) -> Quantization | None:
    """None when absent or all scales are 0 (TFLite's way of saying "not quantized")."""
    if q is None:
        return None
    scale = tuple(float(s) for s in q.scalars(QuantizationField.SCALE, "f"))
    zero = tuple(int(z) for z in q.scalars(QuantizationField.ZERO_POINT, "q"))
    if not scale or not any(scale):
        return None
    if len(zero) != len(scale):  # one zero point shared by every channel, or none given
        zero = zero[:1] * len(scale) if len(zero) == 1 else (0,) * len(scale)
    return Quantization(scale, zero, q.scalar(QuantizationField.QUANTIZED_DIMENSION, "i"))
