"""Which parameters decay, and the weights' moving average."""

from __future__ import annotations

import copy

import torch
from torch import nn

from zoo.training.recipe import Finetune


def param_groups(
    model: nn.Module, weight_decay: float, no_bias_decay: bool, finetune: Finetune | None = None
) -> list[dict]:
    """§3.1 "no bias decay": decay only conv and linear weights; biases and norm γ/β get none.

    A parameter is a "weight that decays" when it has more than one dimension: conv kernels and
    linear matrices do, biases and BatchNorm's γ/β (and anything else 1-D) do not.
    With ``finetune`` LR multipliers other than 1, backbone and classifier get separate groups
    whose ``lr_scale`` multiplies the schedule's LR (``zoo.transfer.param_groups``).
    """
    if finetune is not None and (finetune.backbone_lr_mult, finetune.head_lr_mult) != (1.0, 1.0):
        from zoo import transfer

        return transfer.param_groups(
            model,
            weight_decay=weight_decay,
            no_bias_decay=no_bias_decay,
            backbone_lr_mult=finetune.backbone_lr_mult,
            head_lr_mult=finetune.head_lr_mult,
        )
    params = [p for p in model.parameters() if p.requires_grad]
    if not no_bias_decay:
        return [{"params": params, "weight_decay": weight_decay}]
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def prepare_finetune(model: nn.Module, finetune: Finetune) -> nn.Module:
    """Freeze what the recipe's ``[finetune]`` section asks (stages, then every BatchNorm)."""
    if finetune.freeze_stages or finetune.freeze_bn:
        from zoo import transfer

        transfer.freeze_stages(model, finetune.freeze_stages)
        if finetune.freeze_bn:
            transfer.freeze_bn(model)
    return model


class EMA:
    """Exponential moving average of parameters; buffers (BN statistics) are copied as they are."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        ema_params = list(self.module.parameters())
        params = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(ema_params, params, 1.0 - self.decay)
        for mine, theirs in zip(self.module.buffers(), model.buffers(), strict=True):
            mine.copy_(theirs)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(state)
