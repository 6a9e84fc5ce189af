"""Small reusable layers and the model contract shared by every family."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeAlias

import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from zoo.preprocess import Preprocess

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
    output_stride: int = 32  # 8 or 16 dilate the last stages instead of downsampling (backbones)

    def __post_init__(self) -> None:
        require(self.num_classes >= 0, "num_classes must be >= 0 (0 removes the classifier)")
        require(self.in_chans >= 1, "in_chans must be >= 1")
        require(0.0 <= self.drop_rate < 1.0, "drop_rate must be in [0, 1)")
        require(self.bn_eps > 0, "bn_eps must be positive")
        require(self.output_stride in (8, 16, 32), "output_stride must be 8, 16 or 32")
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
    reduction: int  # input size / feature size (after dilation: at most output_stride)


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


@dataclass(frozen=True)
class PretrainedCfg:
    """What a model's weights and head mean: transforms, predict, eval and save_model read it.

    The model keeps it current: :meth:`ClassifierModel.reset_classifier` drops the labels,
    :meth:`~ClassifierModel.drop_leading_classes` the offset, and
    :meth:`~ClassifierModel.adapt_input_conv` fits ``preprocess`` to the new channel count.
    """

    arch: str
    weights: str | None  # weights tag, path of a local file, or None for random init
    preprocess: Preprocess
    labels: str | tuple[str, ...] | None = None  # a label-set name, or one class id per class
    label_offset: int = 0  # classifier rows before class 0 (TensorFlow's "background")
    label_names: tuple[str, ...] | None = None  # display names, when they differ from the ids


class ClassifierModel(nn.Module):
    """The model contract (timm's): forward_features, forward_head, reset_classifier.

    Subclasses set ``config``, ``num_features`` and ``first_conv`` and build ``self.fc`` through
    :meth:`reset_classifier`; ``forward_features`` returns the last feature map. The methods that
    change the network (:meth:`reset_classifier`, :meth:`drop_leading_classes`,
    :meth:`adapt_input_conv`) also update ``config`` and ``pretrained_cfg``, so both always
    describe the model as it is (what ``zoo.save_model`` writes).
    """

    config: CommonConfig
    num_features: int
    drop_rate: float
    first_conv: str  # dotted path of the conv that reads the input image
    feature_info: list[FeatureInfo]
    pretrained_cfg: PretrainedCfg | None = None  # set by zoo.get_model

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def feature_sequence(self) -> list[str]:
        """Dotted names of the modules that ``forward_features`` runs one after the other, up to
        the last ``feature_info`` module (a head conv after it is not listed). Every
        ``feature_info`` module is one of them: features_only and freeze_stages cut here."""
        raise NotImplementedError

    def feature_sizes(self, size: int) -> tuple[int, ...]:
        """Spatial size of each ``feature_info`` map for an input side of ``size`` pixels.

        Padded families: ``ceil(size / reduction)``. Inception v3 (valid padding) overrides it.
        """
        return tuple(-(-size // f.reduction) for f in self.feature_info)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean((2, 3))
        if self.drop_rate > 0:
            x = nn.functional.dropout(x, self.drop_rate, self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    def get_classifier(self) -> nn.Module:
        return self.fc

    @property
    def classifier_in_features(self) -> int:
        """Width of what the classifier sees (MobileNetV3 puts a head conv after pooling)."""
        return self.num_features

    @property
    def classifier_bias(self) -> bool:
        return True

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier (0 removes it: the model then returns pooled features).

        The old labels no longer name the outputs: ``pretrained_cfg`` drops them.
        """
        require(num_classes >= 0, "num_classes must be >= 0")
        self.fc = nn.Identity()
        if num_classes:
            self.fc = nn.Linear(self.classifier_in_features, num_classes, self.classifier_bias)
            init_linear(self.fc)
        self.config = dataclasses.replace(self.config, num_classes=num_classes)
        if self.pretrained_cfg is not None:
            self.pretrained_cfg = dataclasses.replace(
                self.pretrained_cfg, labels=None, label_names=None, label_offset=0
            )

    def drop_leading_classes(self, count: int) -> None:
        """Remove the classifier's first ``count`` outputs (e.g. TensorFlow's background row).

        Labels stay while ``count`` is within ``label_offset`` (the rows before class 0);
        beyond it they no longer line up and are dropped.
        """
        require(0 <= count < self.num_classes, f"can drop 0 to {self.num_classes - 1} classes")
        fc = self.fc
        fc.weight = nn.Parameter(fc.weight.detach()[count:])
        if fc.bias is not None:
            fc.bias = nn.Parameter(fc.bias.detach()[count:])
        fc.out_features -= count
        self.config = dataclasses.replace(self.config, num_classes=self.num_classes - count)
        cfg = self.pretrained_cfg
        if cfg is None:
            return
        if count <= cfg.label_offset:
            self.pretrained_cfg = dataclasses.replace(cfg, label_offset=cfg.label_offset - count)
        else:
            self.pretrained_cfg = dataclasses.replace(
                cfg, labels=None, label_names=None, label_offset=0
            )

    def adapt_input_conv(self, in_chans: int) -> None:
        """Fit the first conv's filters to ``in_chans`` input channels.

        One channel: the filters summed over the old channels. More: the old filters repeated
        cyclically and rescaled by ``old / in_chans``, so a constant image gives the same
        response. ``pretrained_cfg.preprocess`` follows (:func:`preprocess_for_channels`).
        """
        require(in_chans >= 1, "in_chans must be >= 1")
        conv = self.get_submodule(self.first_conv)
        weight = conv.weight.detach()
        old = weight.shape[1]
        if in_chans == 1:
            new = weight.sum(dim=1, keepdim=True)
        else:
            repeats = -(-in_chans // old)
            new = weight.repeat(1, repeats, 1, 1)[:, :in_chans] * (old / in_chans)
        conv.weight = nn.Parameter(new)
        conv.in_channels = in_chans
        self.config = dataclasses.replace(self.config, in_chans=in_chans)
        if self.pretrained_cfg is not None:
            pre = preprocess_for_channels(self.pretrained_cfg.preprocess, in_chans)
            self.pretrained_cfg = dataclasses.replace(self.pretrained_cfg, preprocess=pre)


def preprocess_for_channels(pre: Preprocess, in_chans: int) -> Preprocess:
    """``pre`` with one mean/std value per input channel, mirroring :meth:`adapt_input_conv`.

    One channel gets the average (its filter is the sum of the old ones); channel ``i`` of more
    gets old channel ``i % old``'s values (its filter is that channel's, repeated).
    """
    if len(pre.mean) == in_chans:
        return pre
    if in_chans == 1:
        mean, std = (sum(pre.mean) / len(pre.mean),), (sum(pre.std) / len(pre.std),)
    else:
        mean = tuple(pre.mean[i % len(pre.mean)] for i in range(in_chans))
        std = tuple(pre.std[i % len(pre.std)] for i in range(in_chans))
    return dataclasses.replace(pre, mean=mean, std=std)


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
    "PretrainedCfg",
    "SqueezeExcite",
    "init_linear",
    "init_weights",
    "make_norm",
    "preprocess_for_channels",
]
