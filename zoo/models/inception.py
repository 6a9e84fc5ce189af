"""Inception v3 (Szegedy et al. 2016) with GluonCV's exact numerics.

GluonCV's network: every conv bias-free, then BatchNorm (eps 1e-3) and ReLU; max pools 3x3/2
without padding (floor mode); the A/C/E blocks' pool branches average 3x3/1 with padding 1,
counting the padding; no auxiliary head; no input transform; dropout 0.5 before the classifier.

Module names are torchvision's and timm's (``Conv2d_1a_3x3.conv``, ``Mixed_5b.branch1x1.bn``,
``fc``), so their checkpoints map one to one (their ``AuxLogits`` head is not part of this
network). GluonCV's head is a fixed ``AvgPool2D(8)``; here it is a global average pool, which is
the same on the 8x8 map of a 299x299 input and also works at other sizes.

``feature_info`` (timm's choice of stage outputs), with the nominal reductions 2/4/8/16/32 (the
real spatial sizes for a 299 input are 147, 71, 35, 17, 8: the valid convs and pools shave a few
pixels off each stage):

* ``Conv2d_2b_3x3`` (64 ch, /2), ``Conv2d_4a_3x3`` (192 ch, /4): the ends of the two stem halves;
* ``Mixed_5d`` (288 ch, /8), ``Mixed_6e`` (768 ch, /16), ``Mixed_7c`` (2048 ch, /32): the last
  block at each resolution of the 35x35, 17x17 and 8x8 grids.

Their real sizes for any input side ``n`` (at least 75) are :meth:`InceptionV3.feature_sizes`:
``a = (n - 3) // 2 + 1`` after the stride-2 stem conv, ``a - 2`` at ``Conv2d_2b_3x3``, then
each valid 3x3/2 pool or conv maps ``s`` to ``(s - 3) // 2 + 1`` and the valid 3x3 conv of the
stem's second half removes 2. The network cannot dilate (its grid reductions are valid convs and
pools): ``output_stride`` must be 32.

There are no residual branches, so ``zero_init_last`` changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from zoo.models.layers import ClassifierModel, CommonConfig, FeatureInfo, init_weights, make_norm
from zoo.preprocess import Preprocess
from zoo.registry import register_family

Norm = Callable[[int], nn.Module]


@dataclass(frozen=True, kw_only=True)
class InceptionV3Config(CommonConfig):
    bn_eps: float = 1e-3  # GluonCV's, TensorFlow's and torchvision's Inception BN epsilon

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.output_stride != 32:
            raise ValueError(
                f"inceptionv3 cannot dilate (output_stride={self.output_stride}): its grid "
                "reductions are valid convs and pools; use output_stride=32, or a ResNet or "
                "MobileNet backbone for dense prediction"
            )


CONFIGS: dict[str, InceptionV3Config] = {
    "inceptionv3": InceptionV3Config(drop_rate=0.5),
}


class BasicConv2d(nn.Module):
    """Bias-free conv -> BN -> ReLU."""

    def __init__(
        self, in_chs: int, out_chs: int, kernel: int | tuple[int, int],
        stride: int = 1, padding: int | tuple[int, int] = 0, *, norm: Norm,
    ) -> None:  # fmt: skip
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel, stride, padding, bias=False)
        self.bn = norm(out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)


def _avg_pool_3x3(x: torch.Tensor) -> torch.Tensor:
    # GluonCV's AvgPool2D(3, 1, 1) counts the zero padding (its default), as torchvision's.
    return F.avg_pool2d(x, 3, 1, 1, count_include_pad=True)


class InceptionA(nn.Module):
    """35x35 block: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1."""

    def __init__(self, in_chs: int, pool_features: int, *, norm: Norm) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(in_chs, 64, 1, norm=norm)
        self.branch5x5_1 = BasicConv2d(in_chs, 48, 1, norm=norm)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2, norm=norm)
        self.branch3x3dbl_1 = BasicConv2d(in_chs, 64, 1, norm=norm)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1, norm=norm)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1, norm=norm)
        self.branch_pool = BasicConv2d(in_chs, pool_features, 1, norm=norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [
                self.branch1x1(x),
                self.branch5x5_2(self.branch5x5_1(x)),
                self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                self.branch_pool(_avg_pool_3x3(x)),
            ],
            1,
        )


class InceptionB(nn.Module):
    """Grid reduction 35 -> 17: 3x3/2 | 1x1-3x3-3x3/2 | maxpool 3x3/2."""

    def __init__(self, in_chs: int, *, norm: Norm) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(in_chs, 384, 3, stride=2, norm=norm)
        self.branch3x3dbl_1 = BasicConv2d(in_chs, 64, 1, norm=norm)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1, norm=norm)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2, norm=norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [
                self.branch3x3(x),
                self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                F.max_pool2d(x, 3, 2),
            ],
            1,
        )


class InceptionC(nn.Module):
    """17x17 block with factorised 7x7 convs (1x7 and 7x1)."""

    def __init__(self, in_chs: int, channels_7x7: int, *, norm: Norm) -> None:
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(in_chs, 192, 1, norm=norm)
        self.branch7x7_1 = BasicConv2d(in_chs, c7, 1, norm=norm)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3), norm=norm)
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0), norm=norm)
        self.branch7x7dbl_1 = BasicConv2d(in_chs, c7, 1, norm=norm)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0), norm=norm)
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3), norm=norm)
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0), norm=norm)
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3), norm=norm)
        self.branch_pool = BasicConv2d(in_chs, 192, 1, norm=norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        dbl = x
        for conv in (
            self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3,
            self.branch7x7dbl_4, self.branch7x7dbl_5,
        ):  # fmt: skip
            dbl = conv(dbl)
        return torch.cat([self.branch1x1(x), b7, dbl, self.branch_pool(_avg_pool_3x3(x))], 1)


class InceptionD(nn.Module):
    """Grid reduction 17 -> 8: 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | maxpool 3x3/2."""

    def __init__(self, in_chs: int, *, norm: Norm) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_chs, 192, 1, norm=norm)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2, norm=norm)
        self.branch7x7x3_1 = BasicConv2d(in_chs, 192, 1, norm=norm)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3), norm=norm)
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0), norm=norm)
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2, norm=norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_1(x)
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(b7)))
        return torch.cat([b3, b7, F.max_pool2d(x, 3, 2)], 1)


class InceptionE(nn.Module):
    """8x8 block with expanded filter banks: the 3x3s split into parallel 1x3 and 3x1."""

    def __init__(self, in_chs: int, *, norm: Norm) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(in_chs, 320, 1, norm=norm)
        self.branch3x3_1 = BasicConv2d(in_chs, 384, 1, norm=norm)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1), norm=norm)
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0), norm=norm)
        self.branch3x3dbl_1 = BasicConv2d(in_chs, 448, 1, norm=norm)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1, norm=norm)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1), norm=norm)
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0), norm=norm)
        self.branch_pool = BasicConv2d(in_chs, 192, 1, norm=norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_1(x)
        dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        return torch.cat(
            [
                self.branch1x1(x),
                self.branch3x3_2a(b3),
                self.branch3x3_2b(b3),
                self.branch3x3dbl_3a(dbl),
                self.branch3x3dbl_3b(dbl),
                self.branch_pool(_avg_pool_3x3(x)),
            ],
            1,
        )


class InceptionV3(ClassifierModel):
    def __init__(self, cfg: InceptionV3Config) -> None:
        super().__init__()
        self.config = cfg
        self.drop_rate = cfg.drop_rate
        norm = make_norm(cfg.norm_layer, cfg.bn_eps)
        self.Conv2d_1a_3x3 = BasicConv2d(cfg.in_chans, 32, 3, stride=2, norm=norm)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3, norm=norm)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1, norm=norm)
        self.maxpool1 = nn.MaxPool2d(3, 2)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1, norm=norm)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3, norm=norm)
        self.maxpool2 = nn.MaxPool2d(3, 2)
        self.Mixed_5b = InceptionA(192, 32, norm=norm)
        self.Mixed_5c = InceptionA(256, 64, norm=norm)
        self.Mixed_5d = InceptionA(288, 64, norm=norm)
        self.Mixed_6a = InceptionB(288, norm=norm)
        self.Mixed_6b = InceptionC(768, 128, norm=norm)
        self.Mixed_6c = InceptionC(768, 160, norm=norm)
        self.Mixed_6d = InceptionC(768, 160, norm=norm)
        self.Mixed_6e = InceptionC(768, 192, norm=norm)
        self.Mixed_7a = InceptionD(768, norm=norm)
        self.Mixed_7b = InceptionE(1280, norm=norm)
        self.Mixed_7c = InceptionE(2048, norm=norm)
        self.first_conv = "Conv2d_1a_3x3.conv"
        self.feature_info = [
            FeatureInfo("Conv2d_2b_3x3", 64, 2),
            FeatureInfo("Conv2d_4a_3x3", 192, 4),
            FeatureInfo("Mixed_5d", 288, 8),
            FeatureInfo("Mixed_6e", 768, 16),
            FeatureInfo("Mixed_7c", 2048, 32),
        ]
        self.num_features = 2048
        self.reset_classifier(cfg.num_classes)
        init_weights(self)  # no residual branches: zero_init_last has nothing to zero

    @property
    def stages(self) -> list[nn.Module]:
        """Everything before the head, in order."""
        return [
            self.Conv2d_1a_3x3, self.Conv2d_2a_3x3, self.Conv2d_2b_3x3, self.maxpool1,
            self.Conv2d_3b_1x1, self.Conv2d_4a_3x3, self.maxpool2,
            self.Mixed_5b, self.Mixed_5c, self.Mixed_5d,
            self.Mixed_6a, self.Mixed_6b, self.Mixed_6c, self.Mixed_6d, self.Mixed_6e,
            self.Mixed_7a, self.Mixed_7b, self.Mixed_7c,
        ]  # fmt: skip

    def feature_sequence(self) -> list[str]:
        names = {id(m): n for n, m in self.named_children()}
        return [names[id(stage)] for stage in self.stages]

    def feature_sizes(self, size: int) -> tuple[int, ...]:
        def down(s: int) -> int:  # valid 3x3, stride 2
            return (s - 3) // 2 + 1

        s2 = down(size) - 2  # Conv2d_1a (3x3/2), Conv2d_2a (valid 3x3), Conv2d_2b (padded)
        s4 = down(s2) - 2  # maxpool1, Conv2d_3b (1x1), Conv2d_4a (valid 3x3)
        s8 = down(s4)  # maxpool2; the Mixed_5 blocks keep the size
        s16 = down(s8)  # Mixed_6a
        return (s2, s4, s8, s16, down(s16))  # Mixed_7a

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            x = stage(x)
        return x


register_family(
    "inception",
    CONFIGS,
    InceptionV3,
    preprocess=Preprocess.from_crop_pct(299, 0.875, round_up=True),  # GluonCV's: 342
    docs={"inceptionv3": "Inception v3 (299x299; GluonCV: no auxiliary head, BN eps 1e-3)"},
)
