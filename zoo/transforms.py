"""Eval transforms that travel with the weights: ``zoo.get_transforms(model)``."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.transforms import InterpolationMode, v2

from zoo.preprocess import Preprocess

_MODES = {
    "nearest": InterpolationMode.NEAREST,
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
}


def build_transforms(pre: Preprocess) -> v2.Compose:
    """PIL image or uint8 CHW tensor -> normalised float32 CHW tensor.

    A one-channel preprocessing (a model adapted to ``in_chans=1``) converts to grayscale first.
    """
    gray = [v2.Grayscale(num_output_channels=1)] if len(pre.mean) == 1 else []
    return v2.Compose(
        [
            v2.ToImage(),
            *gray,
            v2.Resize(pre.resize, interpolation=_MODES[pre.interpolation], antialias=True),
            v2.CenterCrop(pre.crop),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=list(pre.mean), std=list(pre.std)),
        ]
    )


def get_transforms(model: nn.Module | str, *, pretrained: bool | str = False) -> v2.Compose:
    """The eval preprocessing of a built model's weights, or of ``name`` with ``pretrained``.

    A model without weights, or a name without ``pretrained``, gets its arch's default.
    """
    if isinstance(model, nn.Module):
        cfg = getattr(model, "pretrained_cfg", None)
        if cfg is None:
            raise ValueError("model has no pretrained_cfg; build it with zoo.get_model")
        return build_transforms(cfg.preprocess)
    from zoo.registry import get_spec
    from zoo.weights import find_entry

    spec = get_spec(model)
    if pretrained is False:
        return build_transforms(spec.preprocess)
    entry = find_entry(spec.name, None if pretrained is True else str(pretrained))
    return build_transforms(entry.preprocess)
