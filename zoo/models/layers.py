"""Small reusable layers and the model contract shared by every family."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

NormLayer: TypeAlias = str | Callable[..., nn.Module]
NORM_LAYERS: dict[str, Callable[..., nn.Module]] = {
    "batchnorm": nn.BatchNorm2d,
    "frozen_batchnorm": FrozenBatchNorm2d,
    "syncbatchnorm": nn.SyncBatchNorm,
}


def make_norm(norm_layer: NormLayer, eps: float) -> Callable[[int], nn.Module]:
    """A ``channels -> module`` factory; strings name a layer in NORM_LAYERS."""
    if isinstance(norm_layer, str):
        try:
            norm_layer = NORM_LAYERS[norm_layer]
        except KeyError:
            raise ValueError(
                f"unknown norm_layer {norm_layer!r}; choose one of {sorted(NORM_LAYERS)} "
                "or pass a callable taking (num_features, eps=...)"
            ) from None
    return functools.partial(norm_layer, eps=eps)


@dataclass(frozen=True, kw_only=True)
class CommonConfig:
    """Options every architecture accepts; family configs extend this."""

    num_classes: int = 1000
    in_chans: int = 3
    drop_rate: float = 0.0
    zero_init_last: bool = False  # the paper's zero-gamma: last BN of each residual branch
    norm_layer: NormLayer = "batchnorm"
    bn_eps: float = 1e-5

    def __post_init__(self) -> None:
        require(self.num_classes >= 0, "num_classes must be >= 0 (0 removes the classifier)")
        require(self.in_chans >= 1, "in_chans must be >= 1")
        require(0.0 <= self.drop_rate < 1.0, "drop_rate must be in [0, 1)")
        require(self.bn_eps > 0, "bn_eps must be positive")
        require(
            callable(self.norm_layer) or self.norm_layer in NORM_LAYERS,
            f"norm_layer must be one of {sorted(NORM_LAYERS)} or a callable",
        )


def require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


@dataclass(frozen=True)
class FeatureInfo:
    """One stage whose output a backbone may use."""

    module: str  # dotted path of the module producing it
    num_chs: int
    reduction: int  # input size / feature size


class SqueezeExcite(nn.Module):
    """Channel attention: global pool, 1x1 conv down, ReLU, 1x1 conv up, gate."""

    def __init__(
        self,
        channels: int,
        reduced: int,
        gate: Callable[[torch.Tensor], torch.Tensor] = torch.sigmoid,
        act: type[nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, reduced, 1)
        self.act = act(inplace=True)
        self.fc2 = nn.Conv2d(reduced, channels, 1)
        self.gate = gate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.fc2(self.act(self.fc1(w))))


class ClassifierModel(nn.Module):
    """The model contract (timm's): forward_features, forward_head, reset_classifier.

    Subclasses set ``num_features`` and build ``self.fc`` through :meth:`reset_classifier`;
    ``forward_features`` returns the last feature map.
    """

    num_classes: int
    num_features: int
    drop_rate: float
    feature_info: list[FeatureInfo]
    pretrained_cfg: Any = None  # set by zoo.get_model: what the model was built from

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean((2, 3))
        if self.drop_rate > 0:
            x = nn.functional.dropout(x, self.drop_rate, self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.fc

    @property
    def classifier_in_features(self) -> int:
        """Width of what the classifier sees (MobileNetV3 puts a head conv after pooling)."""
        return self.num_features

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier (0 removes it: the model then returns pooled features)."""
        if num_classes < 0:
            raise ValueError("num_classes must be >= 0")
        self.num_classes = num_classes
        width = self.classifier_in_features
        self.fc = nn.Linear(width, num_classes) if num_classes else nn.Identity()
        if num_classes:
            init_linear(self.fc)


def init_linear(layer: nn.Linear | nn.Conv2d) -> None:
    # The paper's initialisation (§2): Xavier-uniform weights, zero biases.
    nn.init.xavier_uniform_(layer.weight)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


def init_weights(model: nn.Module, zero_gamma: list[nn.Module] | None = None) -> None:
    """Xavier-uniform convs and linears, BN gamma 1 / beta 0, zero gamma where asked."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            init_linear(m)
        elif isinstance(m, nn.BatchNorm2d) and m.affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    for bn in zero_gamma or []:
        if getattr(bn, "weight", None) is not None:
            nn.init.zeros_(bn.weight)


__all__ = [
    "NORM_LAYERS",
    "ClassifierModel",
    "CommonConfig",
    "FeatureInfo",
    "NormLayer",
    "SqueezeExcite",
    "init_linear",
    "init_weights",
    "make_norm",
]
