"""TensorFlow Lite models: a pure-Python flatbuffer reader and a graph-driven mapping onto the
MobileNet ``*_tf`` twins (no ``tflite``, ``flatbuffers`` or TFLite runtime needed).

Reader: :func:`read_tflite` parses the parts of TFLite's schema a converter needs (operator codes,
the subgraph's tensors and operators with their Conv/Depthwise/Pool options, quantization
parameters, buffers) with bounds checks everywhere: a truncated or foreign file is a
:class:`TFLiteFormatError` (a ``ValueError``) that says so, never an ``IndexError``.
:meth:`TFLiteModel.dequantize` gives a constant tensor as float32: ``(q - zero_point) * scale``
(per tensor or per channel) for uint8/int8 weights and int32 biases, float tensors as they are.

Mapping: :func:`plan_mobilenet` walks the graph's operators in execution order against the
twin's modules in execution order: the k-th CONV_2D / DEPTHWISE_CONV_2D is the twin's k-th
conv, an ADD closes a residual block, AVERAGE_POOL_2D (or MEAN) is the global pool and the last
conv (or FULLY_CONNECTED) is the classifier. Each op's kind, kernel, stride, padding, dilation,
fused activation, data flow (its input is the previous op's output; an ADD adds the block's
input) and every tensor shape (weights, and activations by a meta-device forward of the twin at
the graph's input size) must match the twin's module, or the conversion fails naming the op.
Folded BatchNorm: the conv gets the weight and the TFLite bias becomes the twin's BN as
``weight=1, bias=b, running_mean=0, running_var=1-eps`` (see ``zoo.models.mobilenet``).
A model split over several files (MobileNet v1 1.0: backbone up to the average pool + head) is
chained: each file's input must be the previous file's output, with the same shape and the same
quantization. Every constant tensor of the graph is used exactly once (structural constants such
as RESHAPE's target shape are reported as ignored); the softmax and the input quantization are
not part of a PyTorch model that returns logits and are reported as notes.
"""

from __future__ import annotations

import io
import math
import struct
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zoo.convert.core import ConversionError
from zoo.registry import ModelSpec

IDENTIFIER = b"TFL3"


class TFLiteFormatError(ValueError):
    """The file is not a readable TFLite flatbuffer (truncated, corrupt or another format)."""


# --- the FlatBuffers wire format -----------------------------------------------------------------


class _Buffer:
    """Bounds-checked little-endian reads from the file's bytes."""

    def __init__(self, data: bytes, path: str) -> None:
        self.data = data
        self.path = path
        self.end = 0  # the furthest byte read: where the flatbuffer's parts end

    def need(self, pos: int, size: int, what: str) -> None:
        if pos < 0 or size < 0 or pos + size > len(self.data):
            raise TFLiteFormatError(
                f"{self.path}: corrupt or truncated TFLite file: {what} at byte {pos} "
                f"(+{size}) lies outside the file's {len(self.data)} bytes; re-download it"
            )
        self.end = max(self.end, pos + size)

    def unpack(self, fmt: str, pos: int, what: str) -> Any:
        size = struct.calcsize("<" + fmt)
        self.need(pos, size, what)
        return struct.unpack_from("<" + fmt, self.data, pos)[0]


class _Table:
    """One flatbuffer table: fields are found through its vtable by slot number."""

    def __init__(self, buf: _Buffer, pos: int, what: str) -> None:
        self.buf, self.pos, self.what = buf, pos, what
        vtable = pos - buf.unpack("i", pos, f"{what} table")
        self.vt_size = buf.unpack("H", vtable, f"{what} vtable")
        if self.vt_size < 4 or self.vt_size % 2:
            raise TFLiteFormatError(f"{buf.path}: corrupt TFLite file: bad vtable of {what}")
        buf.need(vtable, self.vt_size, f"{what} vtable")
        self.vtable = vtable

    def _field(self, slot: int) -> int | None:
        entry = 4 + 2 * slot
        if entry >= self.vt_size:
            return None
        offset = self.buf.unpack("H", self.vtable + entry, f"{self.what} vtable")
        return self.pos + offset if offset else None

    def scalar(self, slot: int, fmt: str, default: Any = 0) -> Any:
        pos = self._field(slot)
        return default if pos is None else self.buf.unpack(fmt, pos, f"{self.what} field {slot}")

    def _target(self, slot: int) -> int | None:
        pos = self._field(slot)
        if pos is None:
            return None
        return pos + self.buf.unpack("I", pos, f"{self.what} field {slot}")

    def table(self, slot: int, what: str) -> _Table | None:
        pos = self._target(slot)
        return None if pos is None else _Table(self.buf, pos, what)

    def _vector(self, slot: int, item_size: int) -> tuple[int, int]:
        pos = self._target(slot)
        if pos is None:
            return 0, 0
        length = self.buf.unpack("I", pos, f"{self.what} vector {slot}")
        self.buf.need(pos + 4, length * item_size, f"{self.what} vector {slot}")
        return pos + 4, length

    def scalars(self, slot: int, fmt: str) -> tuple:
        start, length = self._vector(slot, struct.calcsize("<" + fmt))
        return struct.unpack_from(f"<{length}{fmt}", self.buf.data, start) if length else ()

    def tables(self, slot: int, what: str) -> list[_Table]:
        start, length = self._vector(slot, 4)
        return [
            _Table(self.buf, start + 4 * i + self.buf.unpack("I", start + 4 * i, what), what)
            for i in range(length)
        ]

    def raw(self, slot: int) -> bytes:
        start, length = self._vector(slot, 1)
        return bytes(self.buf.data[start : start + length])

    def string(self, slot: int) -> str:
        return self.raw(slot).decode("utf-8", errors="replace")


# --- the TFLite schema (the parts a weight converter needs) --------------------------------------

# BuiltinOperator values (tensorflow/lite/schema/schema.fbs); others are named BUILTIN_<code>.
BUILTIN_OPS = {
    0: "ADD", 1: "AVERAGE_POOL_2D", 2: "CONCATENATION", 3: "CONV_2D", 4: "DEPTHWISE_CONV_2D",
    6: "DEQUANTIZE", 9: "FULLY_CONNECTED", 14: "LOGISTIC", 17: "MAX_POOL_2D", 18: "MUL",
    19: "RELU", 21: "RELU6", 22: "RESHAPE", 25: "SOFTMAX", 34: "PAD", 40: "MEAN", 43: "SQUEEZE",
    114: "QUANTIZE", 117: "HARD_SWISH",
}  # fmt: skip
# TensorType -> (name, torch dtype or None when zoo cannot hold it)
TENSOR_TYPES: dict[int, tuple[str, torch.dtype | None]] = {
    0: ("float32", torch.float32), 1: ("float16", torch.float16), 2: ("int32", torch.int32),
    3: ("uint8", torch.uint8), 4: ("int64", torch.int64), 5: ("string", None),
    6: ("bool", torch.bool), 7: ("int16", torch.int16), 8: ("complex64", None),
    9: ("int8", torch.int8), 10: ("float64", torch.float64),
}  # fmt: skip
ACTIVATIONS = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH", 5: "SIGN_BIT"}
PADDINGS = {0: "SAME", 1: "VALID"}


def _conv_options(t: _Table) -> dict[str, Any]:
    return {
        "padding": PADDINGS.get(t.scalar(0, "b"), "?"),
        "stride": (t.scalar(2, "i"), t.scalar(1, "i")),  # (h, w)
        "activation": ACTIVATIONS.get(t.scalar(3, "b"), "?"),
        "dilation": (t.scalar(5, "i", 1), t.scalar(4, "i", 1)),
    }


def _depthwise_options(t: _Table) -> dict[str, Any]:
    return {
        "padding": PADDINGS.get(t.scalar(0, "b"), "?"),
        "stride": (t.scalar(2, "i"), t.scalar(1, "i")),
        "depth_multiplier": t.scalar(3, "i"),
        "activation": ACTIVATIONS.get(t.scalar(4, "b"), "?"),
        "dilation": (t.scalar(6, "i", 1), t.scalar(5, "i", 1)),
    }


def _pool_options(t: _Table) -> dict[str, Any]:
    return {
        "padding": PADDINGS.get(t.scalar(0, "b"), "?"),
        "stride": (t.scalar(2, "i"), t.scalar(1, "i")),
        "filter": (t.scalar(4, "i"), t.scalar(3, "i")),
        "activation": ACTIVATIONS.get(t.scalar(5, "b"), "?"),
    }


def _activation_only(t: _Table) -> dict[str, Any]:  # AddOptions, FullyConnectedOptions
    return {"activation": ACTIVATIONS.get(t.scalar(0, "b"), "?")}


# op name -> (BuiltinOptions union type, parser)
OPTIONS = {
    "CONV_2D": (1, _conv_options),
    "DEPTHWISE_CONV_2D": (2, _depthwise_options),
    "AVERAGE_POOL_2D": (5, _pool_options),
    "MAX_POOL_2D": (5, _pool_options),
    "FULLY_CONNECTED": (8, _activation_only),
    "SOFTMAX": (9, lambda t: {"beta": t.scalar(0, "f", 0.0)}),
    "ADD": (11, _activation_only),
    "RESHAPE": (17, lambda t: {"new_shape": t.scalars(0, "i")}),
    "MEAN": (27, lambda t: {"keep_dims": bool(t.scalar(0, "B"))}),
    "SQUEEZE": (30, lambda t: {"squeeze_dims": t.scalars(0, "i")}),
}


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
    buffers: tuple[bytes, ...]
    associated_files: tuple[str, ...] = ()  # names in the zip TFLite metadata appends (labels)

    def data(self, tensor: Tensor) -> bytes:
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
        count = math.prod(tensor.shape)
        itemsize = torch.empty((), dtype=dtype).element_size()
        if len(data) != count * itemsize:
            raise TFLiteFormatError(
                f"{self.path}: tensor {tensor.name!r} of shape {list(tensor.shape)} ({name}) "
                f"needs {count * itemsize} bytes, its buffer has {len(data)}"
            )
        if count == 0:
            return torch.empty(tensor.shape, dtype=dtype)
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


_DTYPES = dict(TENSOR_TYPES.values())


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
    buf = _Buffer(data, path)
    try:
        model = _Table(buf, buf.unpack("I", 0, "root offset"), "Model")
        codes = [_operator_code(t) for t in model.tables(1, "OperatorCode")]
        buffers = tuple(_buffer_bytes(t, buf) for t in model.tables(4, "Buffer"))
        subgraphs = tuple(_subgraph(t, codes, buf) for t in model.tables(2, "SubGraph"))
        version = model.scalar(0, "I")
        description = model.string(3)
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


def _operator_code(t: _Table) -> str:
    # Old files only set the int8 deprecated_builtin_code; new ones set both (the deprecated one
    # capped at 127 for codes above it): the real code is the larger of the two.
    code = max(t.scalar(0, "b"), t.scalar(3, "i"))
    if code == 32:  # BuiltinOperator CUSTOM
        return f"CUSTOM:{t.string(1)}"
    return BUILTIN_OPS.get(code, f"BUILTIN_{code}")


def _buffer_bytes(t: _Table, buf: _Buffer) -> bytes:
    data = t.raw(0)
    if data:
        return data
    offset, size = t.scalar(1, "Q"), t.scalar(2, "Q")  # large models keep data after the buffer
    if offset > 1:
        buf.need(offset, size, "external buffer")
        return bytes(buf.data[offset : offset + size])
    return b""


def _subgraph(t: _Table, codes: list[str], buf: _Buffer) -> SubGraph:
    tensors = tuple(_tensor(i, tt) for i, tt in enumerate(t.tables(0, "Tensor")))
    operators = []
    for index, op in enumerate(t.tables(3, "Operator")):
        code_index = op.scalar(0, "I")
        if code_index >= len(codes):
            raise TFLiteFormatError(
                f"{buf.path}: operator {index} uses opcode {code_index}, the file has {len(codes)}"
            )
        name = codes[code_index]
        inputs, outputs = op.scalars(1, "i"), op.scalars(2, "i")
        for tensor in (*inputs, *outputs):
            if not -1 <= tensor < len(tensors):
                raise TFLiteFormatError(
                    f"{buf.path}: operator {index} ({name}) refers to tensor {tensor}, "
                    f"the subgraph has {len(tensors)}"
                )
        options: dict[str, Any] = {}
        if name in OPTIONS:
            union_type, parse = OPTIONS[name]
            table = op.table(4, f"{name} options")
            if table is not None:
                if op.scalar(3, "B") != union_type:
                    raise TFLiteFormatError(
                        f"{buf.path}: operator {index} ({name}) has options of union type "
                        f"{op.scalar(3, 'B')}, expected {union_type}"
                    )
                options = parse(table)
        operators.append(Operator(index, name, tuple(inputs), tuple(outputs), options))
    for tensor in (*t.scalars(1, "i"), *t.scalars(2, "i")):
        if not 0 <= tensor < len(tensors):
            raise TFLiteFormatError(f"{buf.path}: subgraph input/output {tensor} out of range")
    return SubGraph(t.string(4), tensors, t.scalars(1, "i"), t.scalars(2, "i"), tuple(operators))


def _tensor(index: int, t: _Table) -> Tensor:
    type_code = t.scalar(1, "b")
    quant = None
    q = t.table(4, "QuantizationParameters")
    if q is not None:
        scale = tuple(float(s) for s in q.scalars(2, "f"))
        zero = tuple(int(z) for z in q.scalars(3, "q"))
        if scale and any(scale):
            if len(zero) != len(scale):
                zero = zero[:1] * len(scale) if len(zero) == 1 else (0,) * len(scale)
            quant = Quantization(scale, zero, q.scalar(6, "i"))
    return Tensor(
        index=index,
        name=t.string(3),
        shape=tuple(t.scalars(0, "i")),
        type=TENSOR_TYPES.get(type_code, (f"type{type_code}", None))[0],
        buffer=t.scalar(2, "I"),
        quantization=quant,
    )


# --- layouts ------------------------------------------------------------------------------------


def to_torch_layout(op: str, weight: torch.Tensor) -> torch.Tensor:
    """TFLite weight layouts -> PyTorch: conv OHWI -> OIHW, depthwise 1HWC -> (C, 1, H, W)."""
    if op == "CONV_2D":
        return weight.permute(0, 3, 1, 2).contiguous()
    if op == "DEPTHWISE_CONV_2D":
        return weight.permute(3, 0, 1, 2).contiguous()
    return weight  # FULLY_CONNECTED: (out, in) already


def read_constants(paths: str | Path | Sequence[str | Path]) -> dict[str, torch.Tensor]:
    """Every constant tensor of the file(s), dequantized, in TFLite layout, by source key."""
    if isinstance(paths, str | Path):
        paths = [paths]
    out: dict[str, torch.Tensor] = {}
    for model, graph, prefix in _open_all(paths):
        for tensor, key in zip(graph.tensors, _keys(graph, prefix), strict=True):
            if model.is_constant(tensor):
                out[key] = model.dequantize(tensor)
    return out


def _open_all(paths: Sequence[str | Path]) -> list[tuple[TFLiteModel, SubGraph, str]]:
    paths = [Path(p) for p in paths]
    opened = []
    for path in paths:
        model = read_tflite(path)
        if len(model.subgraphs) != 1:
            raise ConversionError(
                f"{path}: {len(model.subgraphs)} subgraphs; only single-graph models convert"
            )
        prefix = f"{path.name}:" if len(paths) > 1 else ""
        opened.append((model, model.subgraphs[0], prefix))
    return opened


def _keys(graph: SubGraph, prefix: str) -> list[str]:
    """Source keys: the tensor's name (file-qualified for multi-file models), made unique."""
    seen: dict[str, int] = {}
    keys = []
    for tensor in graph.tensors:
        key = prefix + (tensor.name or f"tensor{tensor.index}")
        if key in seen:
            key = f"{key}#{tensor.index}"
        seen[key] = tensor.index
        keys.append(key)
    return keys


# --- the graph walk onto a twin ------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """What a graph-driven format hands to the exact-once mapping."""

    config: Any  # the arch config the state dict fits
    source: dict[str, torch.Tensor]  # source key -> tensor in zoo layout
    targets: dict[str, str]  # source key -> zoo key
    defaults: dict[str, torch.Tensor]  # zoo keys the format fills (folded BN's identity stats)
    ignored: tuple[str, ...] = ()  # source keys dropped on purpose (structural constants)
    notes: tuple[str, ...] = ()


@dataclass
class _Step:
    kind: str  # "conv", "add", "pool", "logits"
    name: str  # module name in the twin
    module: nn.Module | None = None
    block_start: bool = False  # the first conv of a residual block (its input is the shortcut)


def _twin_steps(model: nn.Module) -> list[_Step]:
    """The twin's ops in execution order (MobileNet v1/v2 and their TensorFlow twins)."""
    from zoo.models.mobilenet import ConvBnAct

    steps = [_Step("conv", "stem", model.stem)]
    for i, block in enumerate(model.blocks):
        first = True
        for part, unit in block.named_children():
            if isinstance(unit, ConvBnAct):
                steps.append(_Step("conv", f"blocks.{i}.{part}", unit, block_start=first))
                first = False
            elif unit is not None and not isinstance(unit, nn.Identity):
                raise ConversionError(
                    f"blocks.{i}.{part} ({type(unit).__name__}) has no TFLite mapping"
                )
        if getattr(block, "has_shortcut", False):
            steps.append(_Step("add", f"blocks.{i}"))
    if getattr(model, "conv_head", None) is not None:
        steps.append(_Step("conv", "conv_head", model.conv_head))
    steps.append(_Step("pool", "global_pool"))
    if isinstance(model.fc, nn.Linear):
        steps.append(_Step("logits", "fc", model.fc))
    return steps


def _meta_shapes(
    model: nn.Module, steps: list[_Step], height: int, width: int
) -> dict[str, tuple[tuple, tuple]]:
    """(input, output) shapes (NCHW) of each conv step at the graph's input size, on meta."""
    shapes: dict[str, tuple[tuple, tuple]] = {}
    hooks = [
        step.module.register_forward_hook(
            lambda _m, args, out, key=step.name: shapes.__setitem__(
                key, (tuple(args[0].shape), tuple(out.shape))
            )
        )
        for step in steps
        if step.kind == "conv"
    ]
    try:
        with torch.no_grad():
            x = torch.empty(1, model.config.in_chans, height, width, device="meta")
            model.eval().forward_features(x)
    finally:
        for hook in hooks:
            hook.remove()
    return shapes


_PASS_THROUGH = ("QUANTIZE", "DEQUANTIZE", "RESHAPE", "SQUEEZE")


def _module_padding(conv: nn.Conv2d) -> set[str]:
    """The TensorFlow paddings this PyTorch conv is equivalent to."""
    from zoo.models.mobilenet import Conv2dSame

    kernel, stride = conv.kernel_size, conv.stride
    if isinstance(conv, Conv2dSame):
        return {"SAME"} | ({"VALID"} if kernel == (1, 1) else set())
    if conv.padding == (0, 0):
        return {"VALID"} | ({"SAME"} if kernel == (1, 1) else set())
    symmetric = tuple(k // 2 for k in kernel)
    if conv.padding == symmetric and stride == (1, 1) and all(k % 2 for k in kernel):
        return {"SAME"}  # odd kernel, stride 1: SAME pads k // 2 on each side
    return set()


def _module_activation(act: nn.Module) -> str:
    if isinstance(act, nn.ReLU6):
        return "RELU6"
    if isinstance(act, nn.ReLU):
        return "RELU"
    if isinstance(act, nn.Identity):
        return "NONE"
    return type(act).__name__


def plan_mobilenet(
    paths: Sequence[str | Path], spec: ModelSpec, num_classes: int | None = None
) -> Plan:
    """Map a TFLite MobileNet (one file, or a chain of files) onto ``spec``'s twin."""
    walk = _GraphWalk(_chain(_open_all(paths)))
    return walk.run(spec, num_classes)


def _chain(opened: list[tuple[TFLiteModel, SubGraph, str]]):
    """Order the files so that each one's input is the previous one's output."""
    for model, graph, _ in opened:
        if len(graph.inputs) != 1 or len(graph.outputs) != 1:
            raise ConversionError(
                f"{model.path}: {len(graph.inputs)} inputs and {len(graph.outputs)} outputs; "
                "a classifier has one of each"
            )

    def is_image(item) -> bool:
        shape = item[1].tensors[item[1].inputs[0]].shape
        return len(shape) == 4 and shape[-1] == 3

    first = [item for item in opened if is_image(item)]
    if len(first) != 1:
        names = ", ".join(Path(m.path).name for m, _, _ in opened)
        raise ConversionError(
            f"{names}: expected exactly one file whose input is an RGB image, found {len(first)}"
        )
    order, rest = first, [item for item in opened if item is not first[0]]
    while rest:
        out = order[-1][1].tensors[order[-1][1].outputs[0]]
        follows = [item for item in rest if item[1].tensors[item[1].inputs[0]].shape == out.shape]
        if len(follows) != 1:
            raise ConversionError(
                f"{Path(order[-1][0].path).name} ends in {list(out.shape)}; "
                f"{len(follows)} of the other files start there (need exactly one to chain)"
            )
        order.append(follows[0])
        rest.remove(follows[0])
    return order


class _GraphWalk:
    def __init__(self, chain: list[tuple[TFLiteModel, SubGraph, str]]) -> None:
        self.chain = chain
        self.source: dict[str, torch.Tensor] = {}
        self.targets: dict[str, str] = {}
        self.used_by: dict[str, str] = {}
        self.defaults: dict[str, torch.Tensor] = {}
        self.ignored: list[str] = []
        self.notes: list[str] = []

    # one op of one file, with everything needed to name it in errors
    def _where(self, model: TFLiteModel, op: Operator) -> str:
        file = f"{Path(model.path).name} " if len(self.chain) > 1 else ""
        return f"{file}{op.describe()}"

    def run(self, spec: ModelSpec, num_classes: int | None) -> Plan:
        first_model, first_graph, _ = self.chain[0]
        image = first_graph.tensors[first_graph.inputs[0]]
        if len(image.shape) != 4 or image.shape[0] != 1:
            raise ConversionError(f"{first_model.path}: input shape {list(image.shape)}, not NHWC")
        classes = self._num_classes(num_classes)
        config = replace(spec.config, num_classes=classes)
        with torch.device("meta"):
            twin = spec.build(config)
        steps = _twin_steps(twin)
        shapes = _meta_shapes(twin, steps, image.shape[1], image.shape[2])
        self._check_input(first_model, image)
        self._walk(steps, shapes)
        return Plan(
            config, self.source, self.targets, self.defaults, tuple(self.ignored), tuple(self.notes)
        )

    def _num_classes(self, asked: int | None) -> int:
        """Outputs of the graph's last CONV_2D / FULLY_CONNECTED (the classifier)."""
        last = None
        for model, graph, _ in self.chain:
            for op in graph.operators:
                if op.op in ("CONV_2D", "FULLY_CONNECTED"):
                    last = (model, graph, op)
        if last is None:
            raise ConversionError(f"{self.chain[0][0].path}: no CONV_2D or FULLY_CONNECTED op")
        model, graph, op = last
        shape = graph.tensors[op.inputs[1]].shape if len(op.inputs) > 1 else ()
        if not shape:
            raise ConversionError(f"{self._where(model, op)}: no weight input")
        if asked is not None and asked != shape[0]:
            raise ConversionError(
                f"{self._where(model, op)}: the source's classifier has {shape[0]} outputs, "
                f"num_classes={asked} was asked for"
            )
        return shape[0]

    def _check_input(self, model: TFLiteModel, image: Tensor) -> None:
        quant = image.quantization
        described = f"{image.type}" + (f", {quant.describe()}" if quant else "")
        self.notes.append(
            f"input {list(image.shape)} {described} not kept: zoo models take float pixels, "
            "normalised by the weights' preprocessing"
        )

    def _const(self, model: TFLiteModel, graph: SubGraph, keys, index: int, where: str) -> str:
        """Record that ``where`` consumes constant tensor ``index``; returns its source key."""
        tensor = graph.tensors[index]
        if not model.is_constant(tensor):
            raise ConversionError(f"{where}: tensor {tensor.name!r} should be a constant")
        key = keys[index]
        if key in self.used_by:
            raise ConversionError(
                f"{where}: constant {key!r} is already used by {self.used_by[key]}; "
                "each weight must be used exactly once"
            )
        self.used_by[key] = where
        return key

    def _walk(self, steps: list[_Step], shapes: dict[str, tuple]) -> None:
        step_index = 0
        current = -1  # the tensor (of the file being walked) that flows through the graph
        block_input = -1  # the input of the residual block being walked
        done = False  # the logits were mapped: only pass-through ops and a softmax may follow
        previous = None
        for model, graph, keys, op in self._ops():
            where = self._where(model, op)
            if model is not previous:
                current = self._enter(model, graph, previous, current)
                previous = model
            tensor_in = op.inputs[0] if op.inputs else -1
            if tensor_in != current and op.op != "ADD":
                raise ConversionError(
                    f"{where}: its input is tensor {tensor_in}, not the output of the previous op "
                    f"({current}); zoo maps sequential graphs only"
                )
            if op.op in _PASS_THROUGH or (op.op == "SOFTMAX" and done):
                for extra in op.inputs[1:]:
                    if extra >= 0 and model.is_constant(graph.tensors[extra]):
                        self.ignored.append(self._const(model, graph, keys, extra, where))
                if op.op == "SOFTMAX":
                    self.notes.append(f"{where} dropped: zoo models return logits")
                current = op.outputs[0]
                continue
            if done:
                raise ConversionError(f"{where}: unexpected after the classifier")
            if step_index >= len(steps):
                raise ConversionError(f"{where}: the twin has no further layer to map it onto")
            step = steps[step_index]
            step_index += 1
            if step.kind == "conv":
                if step.block_start:
                    block_input = current
                self._conv(model, graph, keys, op, step, shapes[step.name], where)
            elif step.kind == "add":
                self._add(graph, op, step, current, block_input, where)
            elif step.kind == "pool":
                self._pool(model, graph, keys, op, where)
            else:
                self._logits(model, graph, keys, op, step, where)
                done = True
            current = op.outputs[0]
        if step_index < len(steps):
            missing = ", ".join(f"{s.kind} {s.name}" for s in steps[step_index:][:4])
            raise ConversionError(
                f"the graph ends before the twin does: nothing maps onto {missing}"
            )
        last_model, last_graph, _ = self.chain[-1]
        if previous is not last_model:
            raise ConversionError(f"{last_model.path}: the file has no operators")
        if current not in last_graph.outputs:
            raise ConversionError(f"{last_model.path}: the last op's output is not the output")
        constants = [
            key
            for model, graph, prefix in self.chain
            for tensor, key in zip(graph.tensors, _keys(graph, prefix), strict=True)
            if model.is_constant(tensor)
        ]
        for key in constants:
            if key not in self.used_by:  # the exact-once mapping names them as unmapped
                self.source[key] = torch.empty(0)

    def _ops(self):
        for model, graph, prefix in self.chain:
            keys = _keys(graph, prefix)
            for op in graph.operators:
                yield model, graph, keys, op

    def _enter(self, model, graph, previous_model, current) -> int:
        """Start of a file: the first file's input, or the junction with the previous file."""
        tensor = graph.inputs[0]
        if previous_model is None:
            return tensor
        prev_graph = next(g for m, g, _ in self.chain if m is previous_model)
        if current not in prev_graph.outputs:
            raise ConversionError(
                f"{previous_model.path}: its last op's output is not the file's output"
            )
        out, into = prev_graph.tensors[current], graph.tensors[tensor]
        if (out.shape, out.type, out.quantization) != (into.shape, into.type, into.quantization):
            raise ConversionError(
                f"cannot chain {Path(previous_model.path).name} -> {Path(model.path).name}: "
                f"{list(out.shape)} {out.type} ({out.quantization}) vs {list(into.shape)} "
                f"{into.type} ({into.quantization})"
            )
        describe = into.quantization.describe() if into.quantization else "float"
        self.notes.append(
            f"chained {Path(previous_model.path).name} -> {Path(model.path).name} at "
            f"{list(into.shape)} ({describe} on both sides)"
        )
        return tensor

    def _weight_bias(self, model, graph, keys, op: Operator, where: str):
        if len(op.inputs) < 2:
            raise ConversionError(f"{where}: no weight input")
        w_key = self._const(model, graph, keys, op.inputs[1], where)
        weight = to_torch_layout(op.op, model.dequantize(graph.tensors[op.inputs[1]]))
        bias_key = bias = None
        if len(op.inputs) > 2 and op.inputs[2] >= 0:
            bias_key = self._const(model, graph, keys, op.inputs[2], where)
            bias = model.dequantize(graph.tensors[op.inputs[2]])
        return w_key, weight, bias_key, bias

    def _conv(self, model, graph, keys, op, step: _Step, in_out, where: str) -> None:
        unit = step.module
        conv, bn = unit.conv, unit.bn
        depthwise = conv.groups > 1
        expected = "DEPTHWISE_CONV_2D" if depthwise else "CONV_2D"
        name = step.name
        if op.op != expected:
            raise ConversionError(f"{where}: the twin's next layer is {name}.conv, a {expected}")
        opts = op.options
        checks = [
            ("stride", tuple(opts.get("stride", ())), tuple(conv.stride)),
            ("dilation", tuple(opts.get("dilation", ())), tuple(conv.dilation)),
            ("activation", opts.get("activation"), _module_activation(unit.act)),
        ]
        if depthwise:
            multiplier = conv.out_channels // conv.in_channels
            checks.append(("depth multiplier", opts.get("depth_multiplier"), multiplier))
        for what, theirs, ours in checks:
            if theirs != ours:
                raise ConversionError(f"{where} -> {name}: {what} {theirs} vs the twin's {ours}")
        if opts.get("padding") not in _module_padding(conv):
            raise ConversionError(
                f"{where} -> {name}: padding {opts.get('padding')} but {name}.conv is "
                f"{type(conv).__name__}(padding={conv.padding}, stride={conv.stride})"
            )
        w_key, weight, bias_key, bias = self._weight_bias(model, graph, keys, op, where)
        self._shape(where, f"{name}.conv.weight", weight.shape, conv.weight.shape)
        ends = zip(("input", "output"), (op.inputs[0], op.outputs[0]), in_out, strict=True)
        for what, index, ours in ends:
            nhwc = graph.tensors[index].shape
            nchw = (nhwc[0], nhwc[3], nhwc[1], nhwc[2]) if len(nhwc) == 4 else tuple(nhwc)
            self._shape(where, f"{name} {what} (as NCHW)", nchw, ours)
        self._map(w_key, weight, f"{name}.conv.weight")
        channels = conv.out_channels
        eps = float(bn.eps)
        if bias_key is None:
            self.defaults[f"{name}.bn.bias"] = torch.zeros(channels)
        else:
            self._shape(where, f"{name}.bn.bias", bias.shape, (channels,))
            self._map(bias_key, bias, f"{name}.bn.bias")
        # Folded BN: x + b in inference, still a BN for fine-tuning (zoo.models.mobilenet).
        self.defaults[f"{name}.bn.weight"] = torch.ones(channels)
        self.defaults[f"{name}.bn.running_mean"] = torch.zeros(channels)
        self.defaults[f"{name}.bn.running_var"] = torch.full((channels,), 1.0 - eps)

    def _add(self, graph, op, step: _Step, current, block_input, where: str) -> None:
        if op.op != "ADD":
            raise ConversionError(f"{where}: the twin's {step.name} ends in a residual ADD here")
        if sorted(op.inputs) != sorted((current, block_input)):
            raise ConversionError(
                f"{where}: adds tensors {list(op.inputs)}, the twin's {step.name} adds its "
                f"output ({current}) and its input ({block_input})"
            )
        if op.options.get("activation", "NONE") != "NONE":
            raise ConversionError(f"{where}: fused {op.options['activation']} after a residual add")

    def _pool(self, model, graph, keys, op, where: str) -> None:
        src = graph.tensors[op.inputs[0]].shape
        out = graph.tensors[op.outputs[0]].shape
        if op.op == "AVERAGE_POOL_2D":
            opts = op.options
            ok = (
                len(src) == 4
                and tuple(opts.get("filter", ())) == tuple(src[1:3])
                and tuple(out[1:3]) == (1, 1)
                and opts.get("activation") == "NONE"
            )
            if not ok:
                raise ConversionError(
                    f"{where}: not a global average pool ({opts}, {list(src)} -> {list(out)})"
                )
        elif op.op == "MEAN" and len(op.inputs) == 2:
            key = self._const(model, graph, keys, op.inputs[1], where)
            axes = {int(a) % 4 for a in model.array(graph.tensors[op.inputs[1]]).flatten()}
            if axes != {1, 2} or len(src) != 4:
                raise ConversionError(f"{where}: MEAN over axes {sorted(axes)}, not a global pool")
            self.ignored.append(key)
        else:
            raise ConversionError(f"{where}: the twin's global average pool comes here")

    def _logits(self, model, graph, keys, op, step: _Step, where: str) -> None:
        fc = step.module
        if op.op not in ("CONV_2D", "FULLY_CONNECTED"):
            raise ConversionError(f"{where}: the twin's classifier (fc) comes here")
        if op.options.get("activation", "NONE") != "NONE":
            raise ConversionError(f"{where}: fused {op.options['activation']} on the logits")
        if op.op == "CONV_2D":
            src = graph.tensors[op.inputs[0]].shape
            if tuple(src[1:3]) != (1, 1) or tuple(op.options.get("stride")) != (1, 1):
                raise ConversionError(f"{where}: a classifier conv must be 1x1 on pooled features")
        w_key, weight, bias_key, bias = self._weight_bias(model, graph, keys, op, where)
        if weight.dim() == 4:
            if tuple(weight.shape[2:]) != (1, 1):
                raise ConversionError(f"{where}: classifier kernel {list(weight.shape[2:])}")
            weight = weight.reshape(weight.shape[:2])
        self._shape(where, "fc.weight", weight.shape, fc.weight.shape)
        self._map(w_key, weight, "fc.weight")
        if (bias_key is None) != (fc.bias is None):
            raise ConversionError(
                f"{where}: classifier bias {'absent' if bias_key is None else 'present'} in the "
                f"source, {'absent' if fc.bias is None else 'present'} in the twin"
            )
        if bias_key is not None:
            self._shape(where, "fc.bias", bias.shape, fc.bias.shape)
            self._map(bias_key, bias, "fc.bias")

    def _shape(self, where: str, what: str, theirs, ours) -> None:
        if tuple(theirs) != tuple(ours):
            raise ConversionError(f"{where}: {what} {list(theirs)} vs the twin's {list(ours)}")

    def _map(self, key: str, tensor: torch.Tensor, target: str) -> None:
        self.source[key] = tensor
        self.targets[key] = target
