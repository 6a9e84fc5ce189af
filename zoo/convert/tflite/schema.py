"""The parts of TFLite's schema (tensorflow/lite/schema/schema.fbs) a weight converter needs.

Enum values and, per builtin operator, which ``BuiltinOptions`` union member holds its options
and which of that table's slots mean what. Plain data: the reader maps type names to dtypes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from zoo.convert.tflite.flatbuffer import Table

IDENTIFIER = b"TFL3"  # the file identifier at bytes 4..8

# BuiltinOperator values; others are named BUILTIN_<code>.
BUILTIN_OPS = {
    0: "ADD", 1: "AVERAGE_POOL_2D", 2: "CONCATENATION", 3: "CONV_2D", 4: "DEPTHWISE_CONV_2D",
    6: "DEQUANTIZE", 9: "FULLY_CONNECTED", 14: "LOGISTIC", 17: "MAX_POOL_2D", 18: "MUL",
    19: "RELU", 21: "RELU6", 22: "RESHAPE", 25: "SOFTMAX", 34: "PAD", 40: "MEAN", 43: "SQUEEZE",
    114: "QUANTIZE", 117: "HARD_SWISH",
}  # fmt: skip
CUSTOM = 32  # BuiltinOperator CUSTOM: the op is named by OperatorCode.custom_code

# TensorType values -> type names (the reader knows which of them torch can hold)
TENSOR_TYPES = {
    0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 5: "string", 6: "bool",
    7: "int16", 8: "complex64", 9: "int8", 10: "float64",
}  # fmt: skip
ACTIVATIONS = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH", 5: "SIGN_BIT"}
PADDINGS = {0: "SAME", 1: "VALID"}


# Field slots of the tables read (a union field takes two slots: its type, then its value).
class ModelField:
    VERSION, OPERATOR_CODES, SUBGRAPHS, DESCRIPTION, BUFFERS = range(5)


class OperatorCodeField:
    DEPRECATED_BUILTIN_CODE, CUSTOM_CODE, VERSION, BUILTIN_CODE = range(4)


class SubGraphField:
    TENSORS, INPUTS, OUTPUTS, OPERATORS, NAME = range(5)


class TensorField:
    SHAPE, TYPE, BUFFER, NAME, QUANTIZATION = range(5)


class QuantizationField:
    MIN, MAX, SCALE, ZERO_POINT, DETAILS_TYPE, DETAILS, QUANTIZED_DIMENSION = range(7)


class OperatorField:
    OPCODE_INDEX, INPUTS, OUTPUTS, BUILTIN_OPTIONS_TYPE, BUILTIN_OPTIONS = range(5)


class BufferField:
    DATA, OFFSET, SIZE = range(3)


def _padding(t: Table, slot: int) -> str:
    return PADDINGS.get(t.scalar(slot, "b"), "?")


def _activation(t: Table, slot: int) -> str:
    return ACTIVATIONS.get(t.scalar(slot, "b"), "?")


def _conv_options(t: Table) -> dict[str, Any]:
    return {
        "padding": _padding(t, 0),
        "stride": (t.scalar(2, "i"), t.scalar(1, "i")),  # (h, w)
        "activation": _activation(t, 3),
        "dilation": (t.scalar(5, "i", 1), t.scalar(4, "i", 1)),
    }


def _depthwise_options(t: Table) -> dict[str, Any]:
    return {
        "padding": _padding(t, 0),
        "stride": (t.scalar(2, "i"), t.scalar(1, "i")),
        "depth_multiplier": t.scalar(3, "i"),
        "activation": _activation(t, 4),
        "dilation": (t.scalar(6, "i", 1), t.scalar(5, "i", 1)),
    }


def _pool_options(t: Table) -> dict[str, Any]:
    return {
        "padding": _padding(t, 0),
        "stride": (t.scalar(2, "i"), t.scalar(1, "i")),
        "filter": (t.scalar(4, "i"), t.scalar(3, "i")),
        "activation": _activation(t, 5),
    }


def _activation_only(t: Table) -> dict[str, Any]:  # AddOptions, FullyConnectedOptions
    return {"activation": _activation(t, 0)}


class OptionsSpec(NamedTuple):
    union_type: int  # the BuiltinOptions union member the op's options must be
    parse: Callable[[Table], dict[str, Any]]


# op name -> how its options are stored; ops missing here keep no options
OPTIONS: dict[str, OptionsSpec] = {
    "CONV_2D": OptionsSpec(1, _conv_options),
    "DEPTHWISE_CONV_2D": OptionsSpec(2, _depthwise_options),
    "AVERAGE_POOL_2D": OptionsSpec(5, _pool_options),
    "MAX_POOL_2D": OptionsSpec(5, _pool_options),
    "FULLY_CONNECTED": OptionsSpec(8, _activation_only),
    "SOFTMAX": OptionsSpec(9, lambda t: {"beta": t.scalar(0, "f", 0.0)}),
    "ADD": OptionsSpec(11, _activation_only),
    "RESHAPE": OptionsSpec(17, lambda t: {"new_shape": t.scalars(0, "i")}),
    "MEAN": OptionsSpec(27, lambda t: {"keep_dims": bool(t.scalar(0, "B"))}),
    "SQUEEZE": OptionsSpec(30, lambda t: {"squeeze_dims": t.scalars(0, "i")}),
}
