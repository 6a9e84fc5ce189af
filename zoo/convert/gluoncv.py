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


STRUCTURAL_RENAMERS: dict[str, Callable[[str], str | None]] = {"resnet": rename_resnet}
# Families whose GluonCV legacy names are reproducible (MobileNetV3's are process-dependent).
LEGACY_FAMILIES = {"resnet"}

_LEGACY_KEY = re.compile(
    r"(?:\w+_)?([a-z]+)(\d+)_(weight|bias|gamma|beta|running_mean|running_var)"
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
