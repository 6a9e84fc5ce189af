"""MobileNetV3 large and small (Howard et al. 2019) with GluonCV's exact numerics.

GluonCV facts reproduced: widths rounded up to multiples of 8 (``ceil(x / 8) * 8``); hard-swish
``x * relu6(x + 3) / 6`` and hard-sigmoid ``relu6(x + 3) / 6``; squeeze-excite with biased 1x1
convs, ReLU inside, hard-sigmoid gate and ``make_divisible(hidden // 4)`` channels; the head is a
1x1 conv to 960 (large) / 576 (small) + BN + hard-swish, global average pool, a bias-free 1x1 conv
to 1280 without BN, hard-swish, dropout 0.2 and a biased classifier.

Module layout: one positional ``features`` list, index for index GluonCV's (and like
torchvision's): stem conv/BN/act at 0-2, the inverted-residual units from 3, then the final 1x1
conv/BN/act, the pool and the 1280-wide ``conv_head`` conv with its act. Readable names cannot
be used for the tail because GluonCV's keys there are flat and positional: ``features.18.weight``
is the final 960-wide conv of the large model but the 1280-wide head conv of the small one, and a
key renamer sees no more than the key. Inside a unit the names are readable (``expand``, ``dw``,
``se``, ``project``; GluonCV's ``conv1``/``conv2``). ``forward_features`` runs ``features`` up to
the final act (960/576 channels, ``num_features``); ``forward_head`` the pool, head conv, act,
dropout and ``fc`` (input ``head_hidden_size`` = 1280).
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
    init_weights,
    make_norm,
    require,
)
from zoo.models.mobilenet import InvertedResidual, conv2d, dilate, make_act, stage_ends
from zoo.preprocess import Preprocess
from zoo.registry import register_family


@dataclass(frozen=True, kw_only=True)
class MobileNetV3Config(CommonConfig):
    size: Literal["large", "small"]
    multiplier: float = 1.0  # widths: make_divisible(c * multiplier), head_chs unscaled
    head_chs: int = 1280  # the 1x1 conv after the global pool

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.size in ("large", "small"), "size must be 'large' or 'small'")
        require(self.multiplier > 0, "multiplier must be positive")
        require(self.head_chs >= 1, "head_chs must be positive")


CONFIGS: dict[str, MobileNetV3Config] = {
    "mobilenetv3_large": MobileNetV3Config(size="large", drop_rate=0.2),
    "mobilenetv3_small": MobileNetV3Config(size="small", drop_rate=0.2),
}

# The paper's Tables 1 and 2: (kernel, expanded width, output width, squeeze-excite, act, stride).
V3_BLOCKS: dict[str, tuple[tuple[int, int, int, bool, str, int], ...]] = {
    "large": (
        (3, 16, 16, False, "relu", 1),
        (3, 64, 24, False, "relu", 2),
        (3, 72, 24, False, "relu", 1),
        (5, 72, 40, True, "relu", 2),
        (5, 120, 40, True, "relu", 1),
        (5, 120, 40, True, "relu", 1),
        (3, 240, 80, False, "hard_swish", 2),
        (3, 200, 80, False, "hard_swish", 1),
        (3, 184, 80, False, "hard_swish", 1),
        (3, 184, 80, False, "hard_swish", 1),
        (3, 480, 112, True, "hard_swish", 1),
        (3, 672, 112, True, "hard_swish", 1),
        (5, 672, 160, True, "hard_swish", 2),
        (5, 960, 160, True, "hard_swish", 1),
        (5, 960, 160, True, "hard_swish", 1),
    ),
    "small": (
        (3, 16, 16, True, "relu", 2),
        (3, 72, 24, False, "relu", 2),
        (3, 88, 24, False, "relu", 1),
        (5, 96, 40, True, "hard_swish", 2),
        (5, 240, 40, True, "hard_swish", 1),
        (5, 240, 40, True, "hard_swish", 1),
        (5, 120, 48, True, "hard_swish", 1),
        (5, 144, 48, True, "hard_swish", 1),
        (5, 288, 96, True, "hard_swish", 2),
        (5, 576, 96, True, "hard_swish", 1),
        (5, 576, 96, True, "hard_swish", 1),
    ),
}
FINAL_CHS = {"large": 960, "small": 576}  # the 1x1 conv after the units


def make_divisible(x: float, divisor: int = 8) -> int:
    """GluonCV's rounding: up to the next multiple of ``divisor``."""
    return int(math.ceil(x / divisor) * divisor)


class MobileNetV3(ClassifierModel):
    def __init__(self, cfg: MobileNetV3Config) -> None:
        super().__init__()
        self.config = cfg
        self.drop_rate = cfg.drop_rate
        norm = make_norm(cfg.norm_layer, cfg.bn_eps)
        m = cfg.multiplier
        in_chs = make_divisible(16 * m)
        layers: list[nn.Module] = [
            conv2d(cfg.in_chans, in_chs, 3, 2),
            norm(in_chs),
            make_act("hard_swish"),
        ]
        self.first_conv = "features.0"
        described = []
        rows = V3_BLOCKS[cfg.size]
        plan = dilate([row[-1] for row in rows], cfg.output_stride)
        for row, (stride, dilation) in zip(rows, plan, strict=True):
            kernel, expanded, width, se, act, nominal = row
            mid_chs, out_chs = make_divisible(expanded * m), make_divisible(width * m)
            se_chs = make_divisible(mid_chs // 4) if se else 0
            described.append((f"features.{len(layers)}", out_chs, nominal))
            block = InvertedResidual(
                in_chs, mid_chs, out_chs, kernel, stride,
                norm=norm, act=act, se_chs=se_chs, dilation=dilation,
            )  # fmt: skip
            layers.append(block)
            in_chs = out_chs
        self.feature_info = stage_ends(
            ("features.2", make_divisible(16 * m)), described, cfg.output_stride
        )
        final_chs = make_divisible(FINAL_CHS[cfg.size] * m)
        layers += [conv2d(in_chs, final_chs, 1), norm(final_chs), make_act("hard_swish")]
        self.head_start = len(layers)  # features[head_start:] run in forward_head
        layers += [
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(final_chs, cfg.head_chs, 1, bias=False),
            make_act("hard_swish"),
        ]
        self.features = nn.Sequential(*layers)
        self.num_features = final_chs
        self.head_hidden_size = cfg.head_chs
        self.reset_classifier(cfg.num_classes)
        residual = [b.last_norm for b in self.blocks if b.has_shortcut]
        init_weights(self, zero_gamma=residual if cfg.zero_init_last else None)

    @property
    def blocks(self) -> list[InvertedResidual]:
        return [b for b in self.features if isinstance(b, InvertedResidual)]

    @property
    def conv_head(self) -> nn.Conv2d:
        return self.features[self.head_start + 1]

    @property
    def classifier_in_features(self) -> int:
        return self.head_hidden_size  # the classifier follows the 1280-wide head conv

    def feature_sequence(self) -> list[str]:
        last = int(self.feature_info[-1].module.split(".")[1])
        return [f"features.{i}" for i in range(last + 1)]

    # Indexing, not slicing: a slice is a new, unregistered Sequential that torch.fx cannot trace.
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(self.head_start):
            x = self.features[i](x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        for i in range(self.head_start, len(self.features)):
            x = self.features[i](x)
        x = x.flatten(1)
        if self.drop_rate > 0:
            x = nn.functional.dropout(x, self.drop_rate, self.training)
        return x if pre_logits else self.fc(x)


def describe(name: str, cfg: MobileNetV3Config) -> str:
    return f"MobileNetV3-{cfg.size.capitalize()} width x{cfg.multiplier}"


register_family(
    "mobilenetv3",
    CONFIGS,
    MobileNetV3,
    preprocess=Preprocess(crop=224, resize=256),
    docs={name: describe(name, cfg) for name, cfg in CONFIGS.items()},
)
