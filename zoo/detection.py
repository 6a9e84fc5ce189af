"""``zoo.detection.fasterrcnn``: torchvision's Faster R-CNN on a zoo ``features_only`` backbone.

Nothing of the detector is re-implemented: the RPN, RoI heads, anchors, box coder, losses and
the resize/normalise transform are torchvision's. zoo supplies the backbone: its feature maps at
strides 4-32 (``out_indices=(1, 2, 3, 4)``) under torchvision's own ``FeaturePyramidNetwork``
(plus its max-pool level, as ``BackboneWithFPN``). torchvision's ``BackboneWithFPN`` /
``IntermediateLayerGetter`` cannot be used directly: they need the stages as direct children in
order, which zoo's MobileNets (stages inside ``blocks``) do not have.

The detector normalises its input itself with the backbone weights' own mean/std (``_tf``
weights: 0.5/0.5), from images in [0, 1] as torchvision's detectors expect.
"""

from __future__ import annotations

import os
from collections import OrderedDict

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from zoo.factory import get_model
from zoo.models.features import NUM_STAGES, FeatureListNet
from zoo.transfer import freeze_bn as _freeze_bn
from zoo.transfer import freeze_stages


class FeaturePyramidBackbone(nn.Module):
    """A zoo ``features_only`` backbone under torchvision's FPN: maps named "0".."3" + "pool"."""

    def __init__(self, body: FeatureListNet, out_channels: int = 256) -> None:
        super().__init__()
        self.body = body
        self.fpn = FeaturePyramidNetwork(
            [f.num_chs for f in body.feature_info], out_channels, extra_blocks=LastLevelMaxPool()
        )
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(self.body(x))))


class LastFeatureBackbone(nn.Module):
    """A zoo ``features_only`` backbone's last map alone, named "0" (Faster R-CNN without FPN)."""

    def __init__(self, body: FeatureListNet) -> None:
        super().__init__()
        self.body = body
        self.out_channels = body.feature_info[-1].num_chs

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return OrderedDict([("0", self.body(x)[-1])])


def fasterrcnn(
    backbone: str = "resnet50_v1d",
    *,
    num_classes: int,
    pretrained_backbone: bool | str | os.PathLike = False,
    fpn: bool = True,
    trainable_layers: int = 3,
    freeze_bn: bool | None = None,
    min_size: int = 800,
    max_size: int = 1333,
) -> FasterRCNN:
    """torchvision's ``FasterRCNN`` on the zoo architecture ``backbone``.

    ``num_classes`` includes the background (81 for COCO, 21 for VOC). ``pretrained_backbone``:
    anything ``get_model``'s ``pretrained`` accepts (True, a tag, a path). ``trainable_layers``:
    how many of the 5 stages, counted from the top, train (torchvision's meaning: 3 = the stem
    and the stride-4 stage frozen). ``freeze_bn`` (default: when the backbone is pretrained, as
    torchvision) freezes every BatchNorm of the backbone. ``min_size``/``max_size``: the
    transform's resize (torchvision's 800/1333; 320 for small images).
    """
    if num_classes < 2:
        raise ValueError("num_classes includes the background: at least 2 (81 for COCO)")
    if not 0 <= trainable_layers <= NUM_STAGES:
        raise ValueError(f"trainable_layers must be in 0..{NUM_STAGES}, got {trainable_layers}")
    out_indices = (1, 2, 3, 4) if fpn else (4,)
    body = get_model(
        backbone, pretrained=pretrained_backbone, features_only=True, out_indices=out_indices
    )
    if freeze_bn if freeze_bn is not None else pretrained_backbone is not False:
        _freeze_bn(body)
    freeze_stages(body, NUM_STAGES - trainable_layers)
    pre = body.pretrained_cfg.preprocess
    if fpn:
        neck: nn.Module = FeaturePyramidBackbone(body)
        anchors = AnchorGenerator(((32,), (64,), (128,), (256,), (512,)), ((0.5, 1.0, 2.0),) * 5)
        pool = MultiScaleRoIAlign(["0", "1", "2", "3"], output_size=7, sampling_ratio=2)
    else:
        neck = LastFeatureBackbone(body)
        anchors = AnchorGenerator(((32, 64, 128, 256, 512),), ((0.5, 1.0, 2.0),))
        pool = MultiScaleRoIAlign(["0"], output_size=7, sampling_ratio=2)
    return FasterRCNN(
        neck,
        num_classes=num_classes,
        min_size=min_size,
        max_size=max_size,
        image_mean=list(pre.mean),
        image_std=list(pre.std),
        rpn_anchor_generator=anchors,
        box_roi_pool=pool,
    )


__all__ = ["FeaturePyramidBackbone", "LastFeatureBackbone", "fasterrcnn"]
