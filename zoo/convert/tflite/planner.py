"""Mapping a TFLite MobileNet graph (one file, or a chain of files) onto a ``*_tf`` twin.

:func:`plan` walks the graph's operators in execution order against the twin's modules in
execution order: the k-th CONV_2D / DEPTHWISE_CONV_2D is the twin's k-th conv, an ADD closes a
residual block, AVERAGE_POOL_2D (or MEAN) is the global pool and the last conv (or
FULLY_CONNECTED) is the classifier. Each op's kind, kernel, stride, padding, dilation, fused
activation, data flow (its input is the previous op's output; an ADD adds the block's input)
and every tensor shape (weights, and activations by a meta-device forward of the twin at the
graph's input size) must match the twin's module, or the conversion fails naming the op.
Folded BatchNorm: the conv gets the weight and the TFLite bias becomes the twin's BN as
``weight=1, bias=b, running_mean=0, running_var=1-eps`` (see ``zoo.models.mobilenet``).
Chained files: each file's input must be the previous file's output, with the same shape and
the same quantization. Every constant tensor of the graph is used exactly once (structural
constants such as RESHAPE's target shape are reported as ignored); the softmax and the input
quantization are not part of a PyTorch model that returns logits and are reported as notes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from zoo.convert.core import ConversionError, Plan
from zoo.convert.tflite.reader import Operator, SubGraph, Tensor, TFLiteModel
from zoo.registry import ModelSpec

_PASS_THROUGH = ("QUANTIZE", "DEQUANTIZE", "RESHAPE", "SQUEEZE")


@dataclass(frozen=True)
class GraphFile:
    """One opened file's single subgraph, with the source key of each of its tensors."""

    model: TFLiteModel
    graph: SubGraph
    keys: tuple[str, ...]  # tensor index -> source key

    @property
    def name(self) -> str:
        return Path(self.model.path).name

    def input(self) -> Tensor:
        return self.graph.tensors[self.graph.inputs[0]]

    def output(self) -> Tensor:
        return self.graph.tensors[self.graph.outputs[0]]

    def constants(self) -> Iterator[tuple[Tensor, str]]:
        """(tensor, source key) of every constant tensor."""
        for tensor, key in zip(self.graph.tensors, self.keys, strict=True):
            if self.model.is_constant(tensor):
                yield tensor, key


def source_keys(graph: SubGraph, prefix: str) -> tuple[str, ...]:
    """Source keys: the tensor's name (file-qualified for multi-file models), made unique."""
    seen: dict[str, int] = {}
    keys = []
    for tensor in graph.tensors:
        key = prefix + (tensor.name or f"tensor{tensor.index}")
        if key in seen:
            key = f"{key}#{tensor.index}"
        seen[key] = tensor.index
        keys.append(key)
    return tuple(keys)


def to_torch_layout(op: str, weight: torch.Tensor) -> torch.Tensor:
    """TFLite weight layouts -> PyTorch: conv OHWI -> OIHW, depthwise 1HWC -> (C, 1, H, W)."""
    if op == "CONV_2D":
        return weight.permute(0, 3, 1, 2).contiguous()
    if op == "DEPTHWISE_CONV_2D":
        return weight.permute(3, 0, 1, 2).contiguous()
    return weight  # FULLY_CONNECTED: (out, in) already


def plan(files: Sequence[GraphFile], spec: ModelSpec, num_classes: int | None = None) -> Plan:
    """Map the file(s), chained in whichever order they connect, onto ``spec``'s twin."""
    return _GraphWalk(chain(files)).run(spec, num_classes)


def chain(files: Sequence[GraphFile]) -> list[GraphFile]:
    """Order the files so that each one's input is the previous one's output."""
    for file in files:
        graph = file.graph
        if len(graph.inputs) != 1 or len(graph.outputs) != 1:
            raise ConversionError(
                f"{file.model.path}: {len(graph.inputs)} inputs and {len(graph.outputs)} "
                "outputs; a classifier has one of each"
            )

    def is_image(file: GraphFile) -> bool:
        shape = file.input().shape
        return len(shape) == 4 and shape[-1] == 3

    first = [file for file in files if is_image(file)]
    if len(first) != 1:
        names = ", ".join(file.name for file in files)
        raise ConversionError(
            f"{names}: expected exactly one file whose input is an RGB image, found {len(first)}"
        )
    order, rest = first, [file for file in files if file is not first[0]]
    while rest:
        out = order[-1].output()
        follows = [file for file in rest if file.input().shape == out.shape]
        if len(follows) != 1:
            raise ConversionError(
                f"{order[-1].name} ends in {list(out.shape)}; "
                f"{len(follows)} of the other files start there (need exactly one to chain)"
            )
        order.append(follows[0])
        rest.remove(follows[0])
    return order


# --- the twin's side ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Step:
    kind: str  # "conv", "add", "pool", "logits"
    name: str  # module name in the twin
    module: nn.Module | None = None
    block_start: bool = False  # the first conv of a residual block (its input is the shortcut)


class _Ends(NamedTuple):
    """A conv step's activation shapes (NCHW) at the graph's input size."""

    input: tuple[int, ...]
    output: tuple[int, ...]


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


def _meta_shapes(model: nn.Module, steps: list[_Step], height: int, width: int) -> dict[str, _Ends]:
    """The activation shapes of each conv step at the graph's input size, on meta."""
    shapes: dict[str, _Ends] = {}
    hooks = [
        step.module.register_forward_hook(
            lambda _m, args, out, key=step.name: shapes.__setitem__(
                key, _Ends(tuple(args[0].shape), tuple(out.shape))
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


# --- the walk ------------------------------------------------------------------------------------


class _Param(NamedTuple):
    """A constant an op consumes: its source key and its values in zoo layout."""

    key: str
    value: torch.Tensor


class _GraphWalk:
    def __init__(self, files: list[GraphFile]) -> None:
        self.files = files
        self.source: dict[str, torch.Tensor] = {}
        self.targets: dict[str, str] = {}
        self.used_by: dict[str, str] = {}
        self.defaults: dict[str, torch.Tensor] = {}
        self.ignored: list[str] = []
        self.notes: list[str] = []

    def _where(self, file: GraphFile, op: Operator) -> str:
        """One op of one file, as errors name it."""
        return f"{file.name} {op.describe()}" if len(self.files) > 1 else op.describe()

    def run(self, spec: ModelSpec, num_classes: int | None) -> Plan:
        first = self.files[0]
        image = first.input()
        if len(image.shape) != 4 or image.shape[0] != 1:
            raise ConversionError(f"{first.model.path}: input shape {list(image.shape)}, not NHWC")
        classes = self._num_classes(num_classes)
        config = replace(spec.config, num_classes=classes)
        with torch.device("meta"):
            twin = spec.build(config)
        steps = _twin_steps(twin)
        shapes = _meta_shapes(twin, steps, image.shape[1], image.shape[2])
        self._note_input(image)
        self._walk(steps, shapes)
        return Plan(
            config, self.source, self.targets, self.defaults, tuple(self.ignored), tuple(self.notes)
        )

    def _num_classes(self, asked: int | None) -> int:
        """Outputs of the graph's last CONV_2D / FULLY_CONNECTED (the classifier)."""
        last = [
            (file, op)
            for file in self.files
            for op in file.graph.operators
            if op.op in ("CONV_2D", "FULLY_CONNECTED")
        ]
        if not last:
            raise ConversionError(f"{self.files[0].model.path}: no CONV_2D or FULLY_CONNECTED op")
        file, op = last[-1]
        shape = file.graph.tensors[op.inputs[1]].shape if len(op.inputs) > 1 else ()
        if not shape:
            raise ConversionError(f"{self._where(file, op)}: no weight input")
        if asked is not None and asked != shape[0]:
            raise ConversionError(
                f"{self._where(file, op)}: the source's classifier has {shape[0]} outputs, "
                f"num_classes={asked} was asked for"
            )
        return shape[0]

    def _note_input(self, image: Tensor) -> None:
        quant = image.quantization
        described = f"{image.type}" + (f", {quant.describe()}" if quant else "")
        self.notes.append(
            f"input {list(image.shape)} {described} not kept: zoo models take float pixels, "
            "normalised by the weights' preprocessing"
        )

    def _const(self, file: GraphFile, index: int, where: str) -> str:
        """Record that ``where`` consumes constant tensor ``index``; returns its source key."""
        tensor = file.graph.tensors[index]
        if not file.model.is_constant(tensor):
            raise ConversionError(f"{where}: tensor {tensor.name!r} should be a constant")
        key = file.keys[index]
        if key in self.used_by:
            raise ConversionError(
                f"{where}: constant {key!r} is already used by {self.used_by[key]}; "
                "each weight must be used exactly once"
            )
        self.used_by[key] = where
        return key

    def _walk(self, steps: list[_Step], shapes: dict[str, _Ends]) -> None:
        step_index = 0
        current = -1  # the tensor (of the file being walked) that flows through the graph
        block_input = -1  # the input of the residual block being walked
        done = False  # the logits were mapped: only pass-through ops and a softmax may follow
        previous: GraphFile | None = None
        for file, op in ((f, op) for f in self.files for op in f.graph.operators):
            where = self._where(file, op)
            if file is not previous:
                current = self._enter(file, previous, current)
                previous = file
            tensor_in = op.inputs[0] if op.inputs else -1
            if tensor_in != current and op.op != "ADD":
                raise ConversionError(
                    f"{where}: its input is tensor {tensor_in}, not the output of the previous op "
                    f"({current}); zoo maps sequential graphs only"
                )
            if op.op in _PASS_THROUGH or (op.op == "SOFTMAX" and done):
                for extra in op.inputs[1:]:
                    if extra >= 0 and file.model.is_constant(file.graph.tensors[extra]):
                        self.ignored.append(self._const(file, extra, where))
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
                self._conv(file, op, step, shapes[step.name], where)
            elif step.kind == "add":
                self._add(op, step, current, block_input, where)
            elif step.kind == "pool":
                self._pool(file, op, where)
            else:
                self._logits(file, op, step, where)
                done = True
            current = op.outputs[0]
        if step_index < len(steps):
            missing = ", ".join(f"{s.kind} {s.name}" for s in steps[step_index:][:4])
            raise ConversionError(
                f"the graph ends before the twin does: nothing maps onto {missing}"
            )
        last = self.files[-1]
        if previous is not last:
            raise ConversionError(f"{last.model.path}: the file has no operators")
        if current not in last.graph.outputs:
            raise ConversionError(f"{last.model.path}: the last op's output is not the output")
        for file in self.files:
            for _, key in file.constants():
                if key not in self.used_by:  # the exact-once mapping names them as unmapped
                    self.source[key] = torch.empty(0)

    def _enter(self, file: GraphFile, previous: GraphFile | None, current: int) -> int:
        """Start of a file: the first file's input, or the junction with the previous file."""
        tensor = file.graph.inputs[0]
        if previous is None:
            return tensor
        if current not in previous.graph.outputs:
            raise ConversionError(
                f"{previous.model.path}: its last op's output is not the file's output"
            )
        out, into = previous.graph.tensors[current], file.graph.tensors[tensor]
        if (out.shape, out.type, out.quantization) != (into.shape, into.type, into.quantization):
            raise ConversionError(
                f"cannot chain {previous.name} -> {file.name}: "
                f"{list(out.shape)} {out.type} ({out.quantization}) vs {list(into.shape)} "
                f"{into.type} ({into.quantization})"
            )
        describe = into.quantization.describe() if into.quantization else "float"
        self.notes.append(
            f"chained {previous.name} -> {file.name} at "
            f"{list(into.shape)} ({describe} on both sides)"
        )
        return tensor

    def _weight_bias(
        self, file: GraphFile, op: Operator, where: str
    ) -> tuple[_Param, _Param | None]:
        if len(op.inputs) < 2:
            raise ConversionError(f"{where}: no weight input")
        w_key = self._const(file, op.inputs[1], where)
        weight = _Param(
            w_key, to_torch_layout(op.op, file.model.dequantize(file.graph.tensors[op.inputs[1]]))
        )
        bias = None
        if len(op.inputs) > 2 and op.inputs[2] >= 0:
            b_key = self._const(file, op.inputs[2], where)
            bias = _Param(b_key, file.model.dequantize(file.graph.tensors[op.inputs[2]]))
        return weight, bias

    def _conv(self, file: GraphFile, op: Operator, step: _Step, ends: _Ends, where: str) -> None:
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
        weight, bias = self._weight_bias(file, op, where)
        self._shape(where, f"{name}.conv.weight", weight.value.shape, conv.weight.shape)
        sides = zip(("input", "output"), (op.inputs[0], op.outputs[0]), ends, strict=True)
        for what, index, ours in sides:
            nhwc = file.graph.tensors[index].shape
            nchw = (nhwc[0], nhwc[3], nhwc[1], nhwc[2]) if len(nhwc) == 4 else tuple(nhwc)
            self._shape(where, f"{name} {what} (as NCHW)", nchw, ours)
        self._map(weight, f"{name}.conv.weight")
        channels = conv.out_channels
        eps = float(bn.eps)
        if bias is None:
            self.defaults[f"{name}.bn.bias"] = torch.zeros(channels)
        else:
            self._shape(where, f"{name}.bn.bias", bias.value.shape, (channels,))
            self._map(bias, f"{name}.bn.bias")
        # Folded BN: x + b in inference, still a BN for fine-tuning (zoo.models.mobilenet).
        self.defaults[f"{name}.bn.weight"] = torch.ones(channels)
        self.defaults[f"{name}.bn.running_mean"] = torch.zeros(channels)
        self.defaults[f"{name}.bn.running_var"] = torch.full((channels,), 1.0 - eps)

    def _add(self, op: Operator, step: _Step, current: int, block_input: int, where: str) -> None:
        if op.op != "ADD":
            raise ConversionError(f"{where}: the twin's {step.name} ends in a residual ADD here")
        if sorted(op.inputs) != sorted((current, block_input)):
            raise ConversionError(
                f"{where}: adds tensors {list(op.inputs)}, the twin's {step.name} adds its "
                f"output ({current}) and its input ({block_input})"
            )
        if op.options.get("activation", "NONE") != "NONE":
            raise ConversionError(f"{where}: fused {op.options['activation']} after a residual add")

    def _pool(self, file: GraphFile, op: Operator, where: str) -> None:
        src = file.graph.tensors[op.inputs[0]].shape
        out = file.graph.tensors[op.outputs[0]].shape
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
            key = self._const(file, op.inputs[1], where)
            axes_tensor = file.model.array(file.graph.tensors[op.inputs[1]])
            axes = {int(a) % 4 for a in axes_tensor.flatten()}
            if axes != {1, 2} or len(src) != 4:
                raise ConversionError(f"{where}: MEAN over axes {sorted(axes)}, not a global pool")
            self.ignored.append(key)
        else:
            raise ConversionError(f"{where}: the twin's global average pool comes here")

    def _logits(self, file: GraphFile, op: Operator, step: _Step, where: str) -> None:
        fc = step.module
        if op.op not in ("CONV_2D", "FULLY_CONNECTED"):
            raise ConversionError(f"{where}: the twin's classifier (fc) comes here")
        if op.options.get("activation", "NONE") != "NONE":
            raise ConversionError(f"{where}: fused {op.options['activation']} on the logits")
        if op.op == "CONV_2D":
            src = file.graph.tensors[op.inputs[0]].shape
            if tuple(src[1:3]) != (1, 1) or tuple(op.options.get("stride")) != (1, 1):
                raise ConversionError(f"{where}: a classifier conv must be 1x1 on pooled features")
        weight, bias = self._weight_bias(file, op, where)
        if weight.value.dim() == 4:
            if tuple(weight.value.shape[2:]) != (1, 1):
                raise ConversionError(f"{where}: classifier kernel {list(weight.value.shape[2:])}")
            weight = weight._replace(value=weight.value.reshape(weight.value.shape[:2]))
        self._shape(where, "fc.weight", weight.value.shape, fc.weight.shape)
        self._map(weight, "fc.weight")
        if (bias is None) != (fc.bias is None):
            raise ConversionError(
                f"{where}: classifier bias {'absent' if bias is None else 'present'} in the "
                f"source, {'absent' if fc.bias is None else 'present'} in the twin"
            )
        if bias is not None:
            self._shape(where, "fc.bias", bias.value.shape, fc.bias.shape)
            self._map(bias, "fc.bias")

    def _shape(self, where: str, what: str, theirs, ours) -> None:
        if tuple(theirs) != tuple(ours):
            raise ConversionError(f"{where}: {what} {list(theirs)} vs the twin's {list(ours)}")

    def _map(self, param: _Param, target: str) -> None:
        self.source[param.key] = param.value
        self.targets[param.key] = target
