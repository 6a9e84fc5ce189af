"""ResNet v1/v1b/v1c/v1d/v1e/v1s, ResNeXt and SE-ResNeXt with GluonCV's exact numerics.

Every variant is one row of ``CONFIGS``; the network is written once. The paper's tweaks
(He et al. 2018, §4) are config switches:

* ResNet-B (``_v1b``): stride on the 3x3 conv of the bottleneck (``stride_in_1x1=False``).
* ResNet-C (``_v1c``): deep stem of three 3x3 convs (``stem="deep"``, ``stem_width=32``).
* ResNet-D (``_v1d``): 2x2 average pool before the 1x1 shortcut conv (``avg_down=True``).
* ``_v1e`` = deep stem of width 64 + ``avg_down``; ``_v1s`` = deep stem of width 64.
* ``_v1`` is the original network: stride on the first 1x1, and GluonCV's biased 1x1 convs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
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


@dataclass(frozen=True, kw_only=True)
class ResNetConfig(CommonConfig):
    block: Literal["basic", "bottleneck"]
    layers: tuple[int, int, int, int]
    stem: Literal["plain", "deep"] = "plain"  # 7x7 conv, or three 3x3 convs (ResNet-C)
    stem_width: int = 64  # deep stem: widths stem_width, stem_width, 2 * stem_width
    avg_down: bool = False  # ResNet-D shortcut: AvgPool(2, ceil) -> 1x1 conv stride 1 -> BN
    stride_in_1x1: bool = False  # original ResNet (v1): bottleneck stride on the first 1x1
    conv1x1_bias: bool = False  # GluonCV v1 bottlenecks: 1x1 convs carry a bias
    cardinality: int = 1  # ResNeXt groups of the 3x3 conv
    base_width: int = 64  # ResNeXt width per group at the first stage
    se_reduction: int = 0  # Squeeze-and-Excitation reduction; 0 = no SE

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.block in ("basic", "bottleneck"), "block must be 'basic' or 'bottleneck'")
        require(self.stem in ("plain", "deep"), "stem must be 'plain' or 'deep'")
        require(len(self.layers) == 4 and min(self.layers) >= 1, "layers: four positive counts")
        require(self.stem_width >= 1 and self.cardinality >= 1, "widths must be positive")
        require(
            self.block == "bottleneck" or (self.cardinality, self.base_width) == (1, 64),
            "cardinality/base_width apply to bottleneck blocks only",
        )


_B18 = {"block": "basic", "layers": (2, 2, 2, 2)}
_B34 = {"block": "basic", "layers": (3, 4, 6, 3)}
_B50 = {"block": "bottleneck", "layers": (3, 4, 6, 3)}
_B101 = {"block": "bottleneck", "layers": (3, 4, 23, 3)}
_B152 = {"block": "bottleneck", "layers": (3, 8, 36, 3)}
_V1 = {"stride_in_1x1": True, "conv1x1_bias": True}
_C = {"stem": "deep", "stem_width": 32}
_D = {"stem": "deep", "stem_width": 32, "avg_down": True}
_E = {"stem": "deep", "stem_width": 64, "avg_down": True}
_S = {"stem": "deep", "stem_width": 64}

CONFIGS: dict[str, ResNetConfig] = {
    "resnet18_v1": ResNetConfig(**_B18, **_V1),
    "resnet34_v1": ResNetConfig(**_B34, **_V1),
    "resnet50_v1": ResNetConfig(**_B50, **_V1),
    "resnet101_v1": ResNetConfig(**_B101, **_V1),
    "resnet152_v1": ResNetConfig(**_B152, **_V1),
    "resnet18_v1b": ResNetConfig(**_B18),
    "resnet34_v1b": ResNetConfig(**_B34),
    "resnet50_v1b": ResNetConfig(**_B50),
    "resnet101_v1b": ResNetConfig(**_B101),
    "resnet152_v1b": ResNetConfig(**_B152),
    "resnet18_v1c": ResNetConfig(**_B18, **_C),
    "resnet34_v1c": ResNetConfig(**_B34, **_C),
    "resnet50_v1c": ResNetConfig(**_B50, **_C),
    "resnet101_v1c": ResNetConfig(**_B101, **_C),
    "resnet152_v1c": ResNetConfig(**_B152, **_C),
    "resnet18_v1d": ResNetConfig(**_B18, **_D),
    "resnet34_v1d": ResNetConfig(**_B34, **_D),
    "resnet50_v1d": ResNetConfig(**_B50, **_D),
    "resnet101_v1d": ResNetConfig(**_B101, **_D),
    "resnet152_v1d": ResNetConfig(**_B152, **_D),
    "resnet50_v1e": ResNetConfig(**_B50, **_E),
    "resnet101_v1e": ResNetConfig(**_B101, **_E),
    "resnet152_v1e": ResNetConfig(**_B152, **_E),
    "resnet50_v1s": ResNetConfig(**_B50, **_S),
    "resnet101_v1s": ResNetConfig(**_B101, **_S),
    "resnet152_v1s": ResNetConfig(**_B152, **_S),
    "resnext50_32x4d": ResNetConfig(**_B50, cardinality=32, base_width=4),
    "resnext101_32x4d": ResNetConfig(**_B101, cardinality=32, base_width=4),
    "resnext101_64x4d": ResNetConfig(**_B101, cardinality=64, base_width=4),
    "se_resnext50_32x4d": ResNetConfig(**_B50, cardinality=32, base_width=4, se_reduction=16),
    "se_resnext101_32x4d": ResNetConfig(**_B101, cardinality=32, base_width=4, se_reduction=16),
    "se_resnext101_64x4d": ResNetConfig(**_B101, cardinality=64, base_width=4, se_reduction=16),
}


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(
        self, in_chs: int, planes: int, stride: int, dilation: int,
        downsample: nn.Module | None, cfg: ResNetConfig,
    ) -> None:  # fmt: skip
        super().__init__()
        norm = make_norm(cfg.norm_layer, cfg.bn_eps)
        d = dilation
        self.conv1 = nn.Conv2d(in_chs, planes, 3, stride, d, d, bias=False)
        self.bn1 = norm(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, d, d, bias=False)
        self.bn2 = norm(planes)
        self.se = SqueezeExcite(planes, planes // cfg.se_reduction) if cfg.se_reduction else None
        self.downsample = downsample
        self.relu = nn.ReLU(inplace=True)

    @property
    def last_norm(self) -> nn.Module:
        return self.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.se is not None:
            out = self.se(out)
        return self.relu(out + shortcut)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(
        self, in_chs: int, planes: int, stride: int, dilation: int,
        downsample: nn.Module | None, cfg: ResNetConfig,
    ) -> None:  # fmt: skip
        super().__init__()
        norm = make_norm(cfg.norm_layer, cfg.bn_eps)
        width = math.floor(planes * cfg.base_width / 64) * cfg.cardinality
        out_chs = planes * self.expansion
        stride_1x1, stride_3x3 = (stride, 1) if cfg.stride_in_1x1 else (1, stride)
        d = dilation
        self.conv1 = nn.Conv2d(in_chs, width, 1, stride_1x1, bias=cfg.conv1x1_bias)
        self.bn1 = norm(width)
        self.conv2 = nn.Conv2d(
            width, width, 3, stride_3x3, d, d, groups=cfg.cardinality, bias=False
        )
        self.bn2 = norm(width)
        self.conv3 = nn.Conv2d(width, out_chs, 1, bias=cfg.conv1x1_bias)
        self.bn3 = norm(out_chs)
        self.se = SqueezeExcite(out_chs, out_chs // cfg.se_reduction) if cfg.se_reduction else None
        self.downsample = downsample
        self.relu = nn.ReLU(inplace=True)

    @property
    def last_norm(self) -> nn.Module:
        return self.bn3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.se is not None:
            out = self.se(out)
        return self.relu(out + shortcut)


def _downsample(in_chs: int, out_chs: int, stride: int, cfg: ResNetConfig) -> nn.Sequential:
    norm = make_norm(cfg.norm_layer, cfg.bn_eps)
    if not cfg.avg_down:
        return nn.Sequential(nn.Conv2d(in_chs, out_chs, 1, stride, bias=False), norm(out_chs))
    # ResNet-D: the pool, not the conv, reduces resolution, so no activation is skipped.
    # GluonCV pools with ceil_mode and without counting padding; stride 1 keeps a no-op slot
    # so that the conv/BN keys are downsample.1/.2 in every stage, as in GluonCV and timm.
    pool = (
        nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False)
        if stride > 1
        else nn.Identity()
    )
    return nn.Sequential(pool, nn.Conv2d(in_chs, out_chs, 1, bias=False), norm(out_chs))


def _stem(cfg: ResNetConfig) -> tuple[nn.Module, int]:
    """The stem conv(s) before bn1, and its output width."""
    if cfg.stem == "plain":
        return nn.Conv2d(cfg.in_chans, 64, 7, 2, 3, bias=False), 64
    norm = make_norm(cfg.norm_layer, cfg.bn_eps)
    w = cfg.stem_width
    deep = nn.Sequential(
        nn.Conv2d(cfg.in_chans, w, 3, 2, 1, bias=False),
        norm(w),
        nn.ReLU(inplace=True),
        nn.Conv2d(w, w, 3, 1, 1, bias=False),
        norm(w),
        nn.ReLU(inplace=True),
        nn.Conv2d(w, 2 * w, 3, 1, 1, bias=False),
    )
    return deep, 2 * w


class ResNet(ClassifierModel):
    def __init__(self, cfg: ResNetConfig) -> None:
        super().__init__()
        self.config = cfg
        self.drop_rate = cfg.drop_rate
        norm = make_norm(cfg.norm_layer, cfg.bn_eps)
        self.conv1, in_chs = _stem(cfg)
        self.first_conv = "conv1.0" if cfg.stem == "deep" else "conv1"
        self.bn1 = norm(in_chs)
        self.act1 = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.feature_info = [FeatureInfo("act1", in_chs, 2)]
        block_type = BasicBlock if cfg.block == "basic" else Bottleneck
        reduction, dilation = 4, 1
        for index, (depth, planes) in enumerate(zip(cfg.layers, (64, 128, 256, 512), strict=True)):
            stride = 1 if index == 0 else 2
            previous_dilation = dilation
            if reduction * stride > cfg.output_stride:
                dilation, stride = dilation * stride, 1  # dilate instead of downsampling
            reduction *= stride
            out_chs = planes * block_type.expansion
            downsample = None
            if stride != 1 or in_chs != out_chs:
                downsample = _downsample(in_chs, out_chs, stride, cfg)
            # As torchvision and GluonCV: a dilated stage's first block keeps the old dilation.
            blocks = [block_type(in_chs, planes, stride, previous_dilation, downsample, cfg)]
            blocks += [
                block_type(out_chs, planes, 1, dilation, None, cfg) for _ in range(depth - 1)
            ]
            in_chs = out_chs
            self.add_module(f"layer{index + 1}", nn.Sequential(*blocks))
            self.feature_info.append(FeatureInfo(f"layer{index + 1}", out_chs, reduction))
        self.num_features = in_chs
        self.reset_classifier(cfg.num_classes)
        last_norms = [b.last_norm for b in self.modules() if isinstance(b, BasicBlock | Bottleneck)]
        init_weights(self, zero_gamma=last_norms if cfg.zero_init_last else None)

    @property
    def stages(self) -> list[nn.Sequential]:
        return [self.layer1, self.layer2, self.layer3, self.layer4]

    def feature_sequence(self) -> list[str]:
        return ["conv1", "bn1", "act1", "maxpool", "layer1", "layer2", "layer3", "layer4"]

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.act1(self.bn1(self.conv1(x)))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.forward_stem(x))
        for stage in self.stages:
            x = stage(x)
        return x


def describe(name: str, cfg: ResNetConfig) -> str:
    """One line for docstrings and `zoo info`, derived from the config (nothing typed twice)."""
    depth = 2 + sum(cfg.layers) * (2 if cfg.block == "basic" else 3)
    kind = "ResNet"
    if cfg.cardinality > 1:
        kind = f"{'SE-' if cfg.se_reduction else ''}ResNeXt"
    parts = [f"{kind}-{depth}"]
    if cfg.cardinality > 1:
        parts.append(f"{cfg.cardinality}x{cfg.base_width}d")
    tweaks = []
    if cfg.stride_in_1x1:
        tweaks.append("original v1: stride on the first 1x1")
    if cfg.conv1x1_bias:
        tweaks.append("biased 1x1 convs")
    if cfg.stem == "deep":
        tweaks.append(f"deep stem {cfg.stem_width}-{cfg.stem_width}-{2 * cfg.stem_width}")
    if cfg.avg_down:
        tweaks.append("average-pool shortcut (ResNet-D)")
    if cfg.se_reduction:
        tweaks.append(f"squeeze-excitation 1/{cfg.se_reduction}")
    return " ".join(parts) + (f" ({'; '.join(tweaks)})" if tweaks else "")


register_family(
    "resnet",
    CONFIGS,
    ResNet,
    preprocess=Preprocess(crop=224, resize=256),
    docs={name: describe(name, cfg) for name, cfg in CONFIGS.items()},
)
