"""MobileNet v1 and v2 with GluonCV's exact numerics, and their TensorFlow-padding twins.

Both versions are rows of one ``CONFIGS`` table (``version=1`` or ``2``) and share the layers
below; the differences from GluonCV's networks that real-world weights need are config switches,
not second networks:

* ``padding="same"``: TensorFlow's "SAME" padding. A stride-2 conv pads
  ``total = max((ceil(n / s) - 1) * s + k - n, 0)`` with ``total // 2`` before and the rest after
  (so on an even input 0 top/left and 1 bottom/right), computed from the input size at every
  forward (:class:`Conv2dSame`). Stride-1 convs with odd kernels pad ``k // 2`` on each side in
  both conventions, so they stay plain ``nn.Conv2d``.
* ``act="relu6"``: TensorFlow's MobileNetV1 uses ReLU6 (GluonCV's v1 uses ReLU; both v2s ReLU6).
* ``classifier_bias``: GluonCV's v2 classifier is a bias-free 1x1 conv; TensorFlow's has a bias.

``output_stride`` 16 or 8 (backbones for segmentation) turns the strides that would go beyond it
into dilations of the depthwise convs, as timm's and torchvision's dilated MobileNets do: the
block that would have downsampled keeps the previous dilation, the blocks after it use the new
one. :func:`pad_same` is a ``torch.fx`` leaf, so a traced ``_tf`` twin still computes its SAME
padding from each input's size.

The ``*_tf`` twins keep every BatchNorm. TensorFlow's released MobileNets have BN folded into
the conv biases; such weights load losslessly as ``weight=1, bias=b, running_mean=0,
running_var=1-eps`` (the BN is then exactly ``x + b`` in inference) while the model keeps real
BN layers that fine-tune (batch statistics, trainable affine) like the original TF training graph.
A bias-on-conv / ``nn.Identity`` norm representation would load the same numbers but fine-tune
without normalisation, and would be a second network layout for the converters to know.
The twins use TensorFlow-slim's BN epsilon (1e-3) and training dropout; their classifier has
1000 outputs by default (TF's weights have 1001 with class 0 = background: the weight loader drops
that row using the weights' ``label_offset``).

Widths: GluonCV's ``int(c * multiplier)``. TensorFlow's rules (v1 ``max(int(c * m), 8)``, v2
``make_divisible(c * m, 8)``) give the same widths for the twins' multipliers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from zoo.models.layers import (
    ClassifierModel,
    CommonConfig,
    FeatureInfo,
    SqueezeExcite,
    init_weights,
    make_norm,
    require,
)
from zoo.preprocess import Preprocess
from zoo.registry import register_family

Padding = Literal["symmetric", "same"]
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "hard_swish": nn.Hardswish,  # x * relu6(x + 3) / 6, as GluonCV's HardSwish
    "hard_sigmoid": nn.Hardsigmoid,  # relu6(x + 3) / 6
}


@dataclass(frozen=True, kw_only=True)
class MobileNetConfig(CommonConfig):
    version: Literal[1, 2]
    multiplier: float = 1.0  # width multiplier: every width is int(c * multiplier)
    act: Literal["relu", "relu6"] = "relu6"  # GluonCV v1: relu; v2 and TensorFlow: relu6
    padding: Padding = "symmetric"  # "same": TensorFlow's SAME padding (the *_tf twins)
    classifier_bias: bool = True  # GluonCV's v2 classifier is a bias-free 1x1 conv

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.version in (1, 2), "version must be 1 or 2")
        require(self.multiplier > 0, "multiplier must be positive")
        require(self.act in ("relu", "relu6"), "act must be 'relu' or 'relu6'")
        require(self.padding in ("symmetric", "same"), "padding must be 'symmetric' or 'same'")


_V1 = {"version": 1, "act": "relu"}
_V2 = {"version": 2, "act": "relu6", "classifier_bias": False}
# TensorFlow-slim: SAME padding, ReLU6, biased logits conv, BN eps 1e-3.
_TF = {"padding": "same", "act": "relu6", "classifier_bias": True, "bn_eps": 1e-3}

CONFIGS: dict[str, MobileNetConfig] = {
    "mobilenet1_0": MobileNetConfig(**_V1, multiplier=1.0),
    "mobilenet0_75": MobileNetConfig(**_V1, multiplier=0.75),
    "mobilenet0_5": MobileNetConfig(**_V1, multiplier=0.5),
    "mobilenet0_25": MobileNetConfig(**_V1, multiplier=0.25),
    "mobilenetv2_1_0": MobileNetConfig(**_V2, multiplier=1.0),
    "mobilenetv2_0_75": MobileNetConfig(**_V2, multiplier=0.75),
    "mobilenetv2_0_5": MobileNetConfig(**_V2, multiplier=0.5),
    "mobilenetv2_0_25": MobileNetConfig(**_V2, multiplier=0.25),
    # TensorFlow twins; drop_rate is TF-slim's training dropout (keep_prob 0.999 / 0.8).
    "mobilenet1_0_tf": MobileNetConfig(version=1, multiplier=1.0, drop_rate=0.001, **_TF),
    "mobilenet0_75_tf": MobileNetConfig(version=1, multiplier=0.75, drop_rate=0.001, **_TF),
    "mobilenet0_5_tf": MobileNetConfig(version=1, multiplier=0.5, drop_rate=0.001, **_TF),
    "mobilenet0_25_tf": MobileNetConfig(version=1, multiplier=0.25, drop_rate=0.001, **_TF),
    "mobilenetv2_1_0_tf": MobileNetConfig(version=2, multiplier=1.0, drop_rate=0.2, **_TF),
}

# The input size TensorFlow trained (and released) each twin at.
TF_CROP = {
    "mobilenet1_0_tf": 224,
    "mobilenet0_75_tf": 192,
    "mobilenet0_5_tf": 160,
    "mobilenet0_25_tf": 128,
    "mobilenetv2_1_0_tf": 224,
}

# MobileNetV1 (Howard et al. 2017, Table 1): (output width, stride) of the 13 separable blocks
# after the 32-wide stride-2 stem conv.
V1_BLOCKS: tuple[tuple[int, int], ...] = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    *((512, 1),) * 5, (1024, 2), (1024, 1),
)  # fmt: skip
# MobileNetV2 (Sandler et al. 2018, Table 2): (expansion t, output width c, repeats n, stride s).
V2_STAGES: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
    (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1),
)  # fmt: skip


# --- layers shared with zoo.models.mobilenetv3 ---------------------------------------------------


def make_act(name: str | None) -> nn.Module:
    if name is None:
        return nn.Identity()
    return ACTIVATIONS[name](inplace=True)


def same_pad_amount(size: int, kernel: int, stride: int, dilation: int = 1) -> int:
    """Total padding of TensorFlow's "SAME" along one axis (before = total // 2)."""
    return max((math.ceil(size / stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)


def pad_same(
    x: torch.Tensor, kernel: Sequence[int], stride: Sequence[int], dilation: Sequence[int]
) -> torch.Tensor:
    """Pad ``x`` (N, C, H, W) as TensorFlow's "SAME": the odd pixel goes bottom/right."""
    pad_h = same_pad_amount(x.shape[-2], kernel[0], stride[0], dilation[0])
    pad_w = same_pad_amount(x.shape[-1], kernel[1], stride[1], dilation[1])
    if pad_h or pad_w:
        x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
    return x


# A traced graph calls pad_same as one node: the padding stays a function of the input size
# (symbolic tracing would otherwise fail on the Python arithmetic, or bake in one size).
torch.fx.wrap("pad_same")


class Conv2dSame(nn.Conv2d):
    """A conv with TensorFlow "SAME" padding, computed from each input's size (as timm's)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, padding=0, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = pad_same(x, self.kernel_size, self.stride, self.dilation)
        return self._conv_forward(x, self.weight, self.bias)


def conv2d(
    in_chs: int, out_chs: int, kernel: int, stride: int = 1, groups: int = 1,
    *, padding: Padding = "symmetric", bias: bool = False, dilation: int = 1,
) -> nn.Conv2d:  # fmt: skip
    """A conv padded symmetrically by ``dilation * (kernel // 2)`` (GluonCV) or as TensorFlow's
    "SAME"."""
    if padding == "same" and (stride > 1 or kernel % 2 == 0):  # else SAME is symmetric
        return Conv2dSame(
            in_chs, out_chs, kernel, stride, dilation=dilation, groups=groups, bias=bias
        )
    pad = dilation * (kernel // 2)
    return nn.Conv2d(in_chs, out_chs, kernel, stride, pad, dilation, groups=groups, bias=bias)


def dilate(strides: Sequence[int], output_stride: int, reduction: int = 2) -> list[tuple[int, int]]:
    """(stride, dilation) of each block after a stem of ``reduction``: a stride that would take
    the reduction beyond ``output_stride`` becomes 1 and multiplies the dilation of the blocks
    after it (the block itself keeps the previous dilation, as timm and GluonCV)."""
    plan, dilation = [], 1
    for stride in strides:
        if reduction * stride > output_stride:
            plan.append((1, dilation))
            dilation *= stride
        else:
            plan.append((stride, dilation))
            reduction *= stride
    return plan


class ConvBnAct(nn.Module):
    """conv -> BN -> activation (``act=None``: linear, as a bottleneck's projection)."""

    def __init__(
        self, in_chs: int, out_chs: int, kernel: int = 1, stride: int = 1, groups: int = 1,
        *, norm: Callable[[int], nn.Module], act: str | None, padding: Padding = "symmetric",
        dilation: int = 1,
    ) -> None:  # fmt: skip
        super().__init__()
        self.conv = conv2d(
            in_chs, out_chs, kernel, stride, groups, padding=padding, dilation=dilation
        )
        self.bn = norm(out_chs)
        self.act = make_act(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class InvertedResidual(nn.Module):
    """[1x1 expand] -> kxk depthwise -> [squeeze-excite] -> linear 1x1 projection (+ shortcut).

    The expand conv exists when the hidden width differs from the input's (MobileNetV2's t=1
    block has none); the shortcut when the stride is 1 and the widths match.
    """

    def __init__(
        self, in_chs: int, mid_chs: int, out_chs: int, kernel: int, stride: int,
        *, norm: Callable[[int], nn.Module], act: str, se_chs: int = 0,
        padding: Padding = "symmetric", dilation: int = 1,
    ) -> None:  # fmt: skip
        super().__init__()
        self.has_shortcut = stride == 1 and in_chs == out_chs
        self.expand = ConvBnAct(in_chs, mid_chs, norm=norm, act=act) if mid_chs != in_chs else None
        self.dw = ConvBnAct(
            mid_chs, mid_chs, kernel, stride, groups=mid_chs,
            norm=norm, act=act, padding=padding, dilation=dilation,
        )  # fmt: skip
        # GluonCV's MobileNetV3 SE: ReLU inside, hard-sigmoid gate, biased 1x1 convs.
        self.se = SqueezeExcite(mid_chs, se_chs, gate=F.hardsigmoid) if se_chs else None
        self.project = ConvBnAct(mid_chs, out_chs, norm=norm, act=None)

    @property
    def last_norm(self) -> nn.Module:
        return self.project.bn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x if self.expand is None else self.expand(x)
        out = self.dw(out)
        if self.se is not None:
            out = self.se(out)
        out = self.project(out)
        return out + x if self.has_shortcut else out


def stage_ends(
    stem: tuple[str, int], blocks: Sequence[tuple[str, int, int]], output_stride: int = 32
) -> list[FeatureInfo]:
    """FeatureInfo of the last module at each nominal resolution.

    ``stem`` is (module, width) of the stride-2 stem; ``blocks`` (module, width, nominal stride)
    in order. A dilated stage (``output_stride`` < 32) is still a stage; its reduction is capped.
    The head conv after the blocks (v2's 1280, v3's 960/576) is not a stage, as in timm's v2.
    """
    info: list[FeatureInfo] = []
    previous, reduction = (*stem, 2), 2
    for module, chs, stride in blocks:
        if stride > 1:
            info.append(FeatureInfo(*previous))
            reduction *= stride
        previous = (module, chs, min(reduction, output_stride))
    info.append(FeatureInfo(*previous))
    return info


# --- the networks -------------------------------------------------------------------------------


class DepthwiseSeparable(nn.Module):
    """MobileNetV1 block: 3x3 depthwise conv-BN-act, then 1x1 pointwise conv-BN-act."""

    def __init__(
        self, in_chs: int, out_chs: int, stride: int, dilation: int, cfg: MobileNetConfig
    ) -> None:
        super().__init__()
        norm = make_norm(cfg.norm_layer, cfg.bn_eps)
        self.dw = ConvBnAct(
            in_chs, in_chs, 3, stride, groups=in_chs,
            norm=norm, act=cfg.act, padding=cfg.padding, dilation=dilation,
        )  # fmt: skip
        self.pw = ConvBnAct(in_chs, out_chs, norm=norm, act=cfg.act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw(self.dw(x))


class _MobileNetBase(ClassifierModel):
    config: MobileNetConfig

    def _make_stem(self, cfg: MobileNetConfig, width: int) -> None:
        norm = make_norm(cfg.norm_layer, cfg.bn_eps)
        self.stem = ConvBnAct(
            cfg.in_chans, width, 3, 2, norm=norm, act=cfg.act, padding=cfg.padding
        )
        self.first_conv = "stem.conv"

    @property
    def classifier_bias(self) -> bool:
        return self.config.classifier_bias

    def feature_sequence(self) -> list[str]:
        return ["stem", *(f"blocks.{i}" for i in range(len(self.blocks)))]


class MobileNetV1(_MobileNetBase):
    """stem 3x3/2 conv -> 13 depthwise-separable blocks -> global average pool -> fc."""

    def __init__(self, cfg: MobileNetConfig) -> None:
        super().__init__()
        require(cfg.version == 1, "MobileNetV1 needs a version=1 config")
        self.config = cfg
        self.drop_rate = cfg.drop_rate
        m = cfg.multiplier
        in_chs = int(32 * m)
        self._make_stem(cfg, in_chs)
        blocks, described = [], []
        plan = dilate([s for _, s in V1_BLOCKS], cfg.output_stride)
        for index, ((width, nominal), (stride, dilation)) in enumerate(
            zip(V1_BLOCKS, plan, strict=True)
        ):
            out_chs = int(width * m)
            blocks.append(DepthwiseSeparable(in_chs, out_chs, stride, dilation, cfg))
            described.append((f"blocks.{index}", out_chs, nominal))
            in_chs = out_chs
        self.blocks = nn.Sequential(*blocks)
        self.feature_info = stage_ends(("stem", int(32 * m)), described, cfg.output_stride)
        self.num_features = in_chs
        self.reset_classifier(cfg.num_classes)
        init_weights(self)  # no residual branches: zero_init_last has nothing to zero

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(x))


class MobileNetV2(_MobileNetBase):
    """stem 3x3/2 -> 17 inverted residuals -> 1x1 conv to 1280 -> global pool -> classifier."""

    def __init__(self, cfg: MobileNetConfig) -> None:
        super().__init__()
        require(cfg.version == 2, "MobileNetV2 needs a version=2 config")
        self.config = cfg
        self.drop_rate = cfg.drop_rate
        norm = make_norm(cfg.norm_layer, cfg.bn_eps)
        m = cfg.multiplier
        in_chs = int(32 * m)
        self._make_stem(cfg, in_chs)
        rows = [
            (t, int(width * m), s if i == 0 else 1)
            for t, width, repeats, s in V2_STAGES
            for i in range(repeats)
        ]
        blocks, described = [], []
        plan = dilate([s for _, _, s in rows], cfg.output_stride)
        for (t, out_chs, nominal), (stride, dilation) in zip(rows, plan, strict=True):
            block = InvertedResidual(
                in_chs, in_chs * t, out_chs, 3, stride,
                norm=norm, act=cfg.act, padding=cfg.padding, dilation=dilation,
            )  # fmt: skip
            described.append((f"blocks.{len(blocks)}", out_chs, nominal))
            blocks.append(block)
            in_chs = out_chs
        self.blocks = nn.Sequential(*blocks)
        self.feature_info = stage_ends(("stem", int(32 * m)), described, cfg.output_stride)
        head_chs = int(1280 * m) if m > 1.0 else 1280
        self.conv_head = ConvBnAct(in_chs, head_chs, norm=norm, act=cfg.act)
        self.num_features = head_chs
        self.reset_classifier(cfg.num_classes)
        residual = [b.last_norm for b in blocks if b.has_shortcut]
        init_weights(self, zero_gamma=residual if cfg.zero_init_last else None)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_head(self.blocks(self.stem(x)))


def describe(name: str, cfg: MobileNetConfig) -> str:
    """One line for docstrings and `zoo info`, derived from the config."""
    text = f"MobileNetV{cfg.version} width x{cfg.multiplier}"
    if cfg.padding == "same":
        text += " (TensorFlow twin: SAME padding, ReLU6, BN eps 1e-3)"
    return text


_GLUON = Preprocess(crop=224, resize=256)
PREPROCESS = {
    name: (
        Preprocess.from_crop_pct(
            TF_CROP[name], 0.875, interpolation="bilinear", mean=(0.5,) * 3, std=(0.5,) * 3
        )
        if name in TF_CROP
        else _GLUON
    )
    for name in CONFIGS
}
_DOCS = {name: describe(name, cfg) for name, cfg in CONFIGS.items()}

register_family(
    "mobilenet",
    {n: c for n, c in CONFIGS.items() if c.version == 1},
    MobileNetV1,
    preprocess=PREPROCESS,
    docs=_DOCS,
)
_V2_CONFIGS = {n: c for n, c in CONFIGS.items() if c.version == 2}
register_family(
    "mobilenetv2",
    _V2_CONFIGS,
    MobileNetV2,
    preprocess=PREPROCESS,
    docs=_DOCS,
)
