"""``zoo.segmentation.fcn`` / ``deeplabv3``: torchvision's heads on a dilated zoo backbone.

The heads, the upsampling to the input size and the ``{"out": ..., "aux": ...}`` contract are
torchvision's (``FCN``, ``DeepLabV3``, ``FCNHead``, ``DeepLabHead``); zoo supplies a
``features_only`` backbone whose last stage is dilated to ``output_stride`` (8 by default, as
torchvision's and GluonCV's segmentation ResNets). The auxiliary head, when asked for, reads the
stride-16 stage, as torchvision's reads ``layer3``.

Inputs are normalised by the caller with the backbone weights' own mean/std:
``model.backbone.body.pretrained_cfg.preprocess`` (``zoo.get_transforms`` gives the same).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
from torch import nn
from torchvision.models.segmentation import FCN, DeepLabV3
from torchvision.models.segmentation.deeplabv3 import DeepLabHead
from torchvision.models.segmentation.fcn import FCNHead

from zoo.factory import get_model
from zoo.models.features import FeatureListNet
from zoo.transfer import freeze_bn as _freeze_bn


class DenseBackbone(nn.Module):
    """A zoo ``features_only`` backbone as torchvision's segmentation models read it:
    ``{"out": last map}`` (+ ``"aux"``: the stride-16 map)."""

    def __init__(self, body: FeatureListNet) -> None:
        super().__init__()
        self.body = body
        self.aux = len(body.feature_info) == 2

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.body(x)
        out = {"out": features[-1]}
        if self.aux:
            out["aux"] = features[0]
        return out


def _build(
    model_type: Callable[..., nn.Module],
    head: Callable[[int, int], nn.Module],
    backbone: str,
    num_classes: int,
    pretrained_backbone: bool | str | os.PathLike,
    output_stride: int,
    aux_loss: bool,
    freeze_bn: bool | None,
) -> nn.Module:
    if num_classes < 1:
        raise ValueError("num_classes must be >= 1 (21 for VOC: background + 20)")
    body = get_model(
        backbone,
        pretrained=pretrained_backbone,
        features_only=True,
        out_indices=(3, 4) if aux_loss else (4,),
        output_stride=output_stride,
    )
    if freeze_bn if freeze_bn is not None else pretrained_backbone is not False:
        _freeze_bn(body)  # as the detector: pretrained statistics (and folded _tf BN) kept
    aux = FCNHead(body.feature_info[0].num_chs, num_classes) if aux_loss else None
    return model_type(DenseBackbone(body), head(body.feature_info[-1].num_chs, num_classes), aux)


def fcn(
    backbone: str = "resnet50_v1d",
    *,
    num_classes: int,
    pretrained_backbone: bool | str | os.PathLike = False,
    output_stride: int = 8,
    aux_loss: bool = False,
    freeze_bn: bool | None = None,
) -> FCN:
    """torchvision's ``FCN`` (``FCNHead``) on a zoo backbone dilated to ``output_stride``.

    ``model(x)["out"]`` is ``N x num_classes x H x W`` at the input size. ``pretrained_backbone``
    accepts whatever ``get_model``'s ``pretrained`` accepts. ``freeze_bn`` (default: when the
    backbone is pretrained) freezes its BatchNorms: needed for the ``_tf`` weights, whose BN is
    folded into the convs (batch statistics would collapse their features).
    """
    return _build(
        FCN, FCNHead, backbone, num_classes, pretrained_backbone, output_stride, aux_loss, freeze_bn
    )


def deeplabv3(
    backbone: str = "resnet50_v1d",
    *,
    num_classes: int,
    pretrained_backbone: bool | str | os.PathLike = False,
    output_stride: int = 8,
    aux_loss: bool = False,
    freeze_bn: bool | None = None,
) -> DeepLabV3:
    """torchvision's ``DeepLabV3`` (ASPP ``DeepLabHead``) on a dilated zoo backbone, as fcn."""
    return _build(
        DeepLabV3,
        DeepLabHead,
        backbone,
        num_classes,
        pretrained_backbone,
        output_stride,
        aux_loss,
        freeze_bn,
    )


__all__ = ["DenseBackbone", "deeplabv3", "fcn"]
