"""GluonCV (MXNet ``.params``) -> zoo key mapping, for both key styles real files come in.

* Structural keys (``layer1.0.bn1.gamma``, ``features.4.0.body.3.weight``), written by
  ``save_parameters``: explicit per-family rename rules below.
* Legacy prefixed keys (``conv0_weight``, ``layers1_batchnorm3_running_var``), written by the old
  ``save_params``: GluonCV's auto-generated names carry no structure, but such files list the
  parameters in registration order, which zoo's modules follow. They are paired in order, and
  every pair is checked for kind (BN statistic / affine vs conv / dense) and shape.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

import torch

from zoo.convert.core import ConversionError

# GluonCV's BN names -> PyTorch's; conv/dense names are already PyTorch's.
_BN_SUFFIX = {"gamma": "weight", "beta": "bias"}

# ResNetV1 (resnet*_v1) and ResNext keep a flat `features` list and a `body` list per block.
_BODY = {"0": "conv1", "1": "bn1", "3": "conv2", "4": "bn2", "6": "conv3", "7": "bn3"}
_SE = {"0": "fc1", "2": "fc2"}
_FEATURES_BLOCK = re.compile(r"features\.([4-7])\.(\d+)\.(body|downsample|se)\.(\d+)\.(\w+)")
_FEATURES_STEM = {"features.0": "conv1", "features.1": "bn1", "output": "fc"}


def _bn_suffix(key: str) -> str:
    head, _, leaf = key.rpartition(".")
    return f"{head}.{_BN_SUFFIX.get(leaf, leaf)}"


def rename_resnet(key: str) -> str | None:
    key = _bn_suffix(key)
    head, _, leaf = key.rpartition(".")
    if head in _FEATURES_STEM:
        return f"{_FEATURES_STEM[head]}.{leaf}"
    match = _FEATURES_BLOCK.fullmatch(key)
    if match:
        stage, block, part, index, leaf = match.groups()
        layer = f"layer{int(stage) - 3}.{block}"
        if part == "body":
            return f"{layer}.{_BODY[index]}.{leaf}" if index in _BODY else None
        if part == "se":
            return f"{layer}.se.{_SE[index]}.{leaf}" if index in _SE else None
        return f"{layer}.downsample.{index}.{leaf}"
    if key.startswith(("features.", "output.")):
        return None
    # ResNetV1b (v1b/c/d/e/s) already uses zoo's names.
    return key


# MobileNet v1: GluonCV's `features` is flat: stem conv/BN/ReLU at 0-2, then six entries per
# depthwise-separable block (dw conv, BN, ReLU, pw conv, BN, ReLU) from index 3.
_V1_UNIT = {0: "dw.conv", 1: "dw.bn", 3: "pw.conv", 4: "pw.bn"}
_V1_FEATURE = re.compile(r"features\.(\d+)")


def rename_mobilenet(key: str) -> str | None:
    head, _, leaf = _bn_suffix(key).rpartition(".")
    flat = {"features.0": "stem.conv", "features.1": "stem.bn", "output": "fc"}
    if head in flat:
        return f"{flat[head]}.{leaf}"
    match = _V1_FEATURE.fullmatch(head)
    if match and int(match.group(1)) >= 3:
        block, offset = divmod(int(match.group(1)) - 3, 6)
        return f"blocks.{block}.{_V1_UNIT[offset]}.{leaf}" if offset in _V1_UNIT else None
    return None


# MobileNet v2: stem at features.0-2, the 17 LinearBottlenecks at features.3-19 (each an `out`
# list of conv/BN/ReLU6 triples; the first, t=1, has no expand conv), the 1280 conv at 20-21.
_V2_BLOCK = re.compile(r"features\.(\d+)\.out\.(\d+)")
_V2_FLAT = {
    "features.0": "stem.conv", "features.1": "stem.bn",
    "features.20": "conv_head.conv", "features.21": "conv_head.bn", "output.0": "fc",
}  # fmt: skip


def rename_mobilenetv2(key: str) -> str | None:
    head, _, leaf = _bn_suffix(key).rpartition(".")
    if head in _V2_FLAT:
        return f"{_V2_FLAT[head]}.{leaf}"
    match = _V2_BLOCK.fullmatch(head)
    if match is None or not 3 <= int(match.group(1)) <= 19:
        return None
    block = int(match.group(1)) - 3
    unit, kind = divmod(int(match.group(2)), 3)  # kind: 0 conv, 1 BN, 2 ReLU6
    units = ("dw", "project") if block == 0 else ("expand", "dw", "project")
    if kind > 1 or unit >= len(units):
        return None
    return f"blocks.{block}.{units[unit]}.{('conv', 'bn')[kind]}.{leaf}"


# MobileNet v3: zoo keeps GluonCV's positional `features` (its flat tail keys mean different
# layers in large and small); only the names inside a unit and the classifier differ.
_V3_UNIT = [
    (re.compile(r"^(features\.\d+)\.conv1\."), r"\1.dw."),
    (re.compile(r"^(features\.\d+)\.conv2\."), r"\1.project."),
    (re.compile(r"^(features\.\d+)\.se\.conv([12])\."), r"\1.se.fc\2."),
    (re.compile(r"^output\.0\."), "fc."),
]


def rename_mobilenetv3(key: str) -> str | None:
    key = _bn_suffix(key)
    for pattern, replacement in _V3_UNIT:
        key = pattern.sub(replacement, key)
    return key


# Inception v3: zoo uses torchvision's names. GluonCV's `features` list holds the stem convs
# (HybridSequential conv/BN/ReLU) and the Mixed blocks (HybridConcurrent of branches); a branch
# path inside a block names the conv/BN/ReLU triple, whose `.0` is the conv and `.1` the BN.
_INCEPTION_STEM = {
    "0": "Conv2d_1a_3x3", "1": "Conv2d_2a_3x3", "2": "Conv2d_2b_3x3",
    "4": "Conv2d_3b_1x1", "5": "Conv2d_4a_3x3",
}  # fmt: skip
_INCEPTION_BRANCHES = {
    "A": {
        "0.0": "branch1x1", "1.0": "branch5x5_1", "1.1": "branch5x5_2",
        "2.0": "branch3x3dbl_1", "2.1": "branch3x3dbl_2", "2.2": "branch3x3dbl_3",
        "3.1": "branch_pool",
    },
    "B": {
        "0.0": "branch3x3",
        "1.0": "branch3x3dbl_1", "1.1": "branch3x3dbl_2", "1.2": "branch3x3dbl_3",
    },
    "C": {
        "0.0": "branch1x1",
        **{f"1.{i}": f"branch7x7_{i + 1}" for i in range(3)},
        **{f"2.{i}": f"branch7x7dbl_{i + 1}" for i in range(5)},
        "3.1": "branch_pool",
    },
    "D": {
        "0.0": "branch3x3_1", "0.1": "branch3x3_2",
        **{f"1.{i}": f"branch7x7x3_{i + 1}" for i in range(4)},
    },
    "E": {
        "0.0": "branch1x1",
        "1.0.0": "branch3x3_1", "1.1.0.0": "branch3x3_2a", "1.1.1.0": "branch3x3_2b",
        "2.0.0": "branch3x3dbl_1", "2.0.1": "branch3x3dbl_2",
        "2.1.0.0": "branch3x3dbl_3a", "2.1.1.0": "branch3x3dbl_3b",
        "3.1": "branch_pool",
    },
}  # fmt: skip
_INCEPTION_MIXED = {
    "7": ("Mixed_5b", "A"), "8": ("Mixed_5c", "A"), "9": ("Mixed_5d", "A"),
    "10": ("Mixed_6a", "B"), "11": ("Mixed_6b", "C"), "12": ("Mixed_6c", "C"),
    "13": ("Mixed_6d", "C"), "14": ("Mixed_6e", "C"), "15": ("Mixed_7a", "D"),
    "16": ("Mixed_7b", "E"), "17": ("Mixed_7c", "E"),
}  # fmt: skip
_INCEPTION_KEY = re.compile(r"features\.(\d+)\.(?:([\d.]+)\.)?([01])\.(\w+)")


def rename_inception(key: str) -> str | None:
    key = _bn_suffix(key)
    if key.startswith("output."):
        return "fc." + key.removeprefix("output.")
    match = _INCEPTION_KEY.fullmatch(key)
    if match is None:
        return None
    index, branch, part, leaf = match.groups()
    part = ("conv", "bn")[int(part)]
    if branch is None:
        return f"{_INCEPTION_STEM[index]}.{part}.{leaf}" if index in _INCEPTION_STEM else None
    if index not in _INCEPTION_MIXED:
        return None
    block, kind = _INCEPTION_MIXED[index]
    name = _INCEPTION_BRANCHES[kind].get(branch)
    return f"{block}.{name}.{part}.{leaf}" if name else None


STRUCTURAL_RENAMERS: dict[str, Callable[[str], str | None]] = {
    "resnet": rename_resnet,
    "mobilenet": rename_mobilenet,
    "mobilenetv2": rename_mobilenetv2,
    "mobilenetv3": rename_mobilenetv3,
    "inception": rename_inception,
}
# Families whose GluonCV legacy names are reproducible (MobileNetV3's are process-dependent).
LEGACY_FAMILIES = {"resnet", "mobilenet", "mobilenetv2"}

# The counter is optional: MobileNetV2's classifier is `output_pred_weight`.
_LEGACY_KEY = re.compile(
    r"(?:\w+_)?([a-z]+)(\d*)_(weight|bias|gamma|beta|running_mean|running_var)"
)


def is_legacy(keys: list[str]) -> bool:
    return bool(keys) and all("." not in k for k in keys)


def legacy_renamer(
    source_keys: list[str], target_shapes: Mapping[str, torch.Size], family: str, path: str
) -> Callable[[str], str | None]:
    """Pair legacy keys with zoo keys in registration order, checking each pair's kind."""
    if family not in LEGACY_FAMILIES:
        raise ConversionError(
            f"{path}: legacy prefixed GluonCV keys are not supported for the {family} family "
            "(its GluonCV names depend on the process that made them); re-save the file with "
            "GluonCV's save_parameters to get structural keys"
        )
    targets = [k for k in target_shapes if not k.endswith("num_batches_tracked")]
    if len(source_keys) != len(targets):
        raise ConversionError(
            f"{path}: {len(source_keys)} legacy tensors, the model has {len(targets)}"
        )
    table: dict[str, str] = {}
    for source, target in zip(source_keys, targets, strict=True):
        match = _LEGACY_KEY.fullmatch(source)
        if match is None:
            raise ConversionError(f"{path}: {source!r} is not a GluonCV legacy parameter name")
        kind, leaf = match.group(1), _BN_SUFFIX.get(match.group(3), match.group(3))
        target_is_bn = target.rpartition(".")[0] + ".running_mean" in target_shapes
        if not target.endswith("." + leaf) or (kind == "batchnorm") != target_is_bn:
            raise ConversionError(
                f"{path}: legacy key {source!r} lines up with {target!r}, which is a different "
                "kind of tensor; the file's order does not match this architecture"
            )
        table[source] = target
    return table.get
