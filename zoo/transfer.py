"""Transfer learning on zoo models: frozen BN, frozen stages, SyncBN, backbone vs head LRs.

Works on a classifier from ``get_model`` and on a ``features_only`` backbone alike. Stage ``i``
is the ``feature_info`` stage at nominal stride ``2 ** (i + 1)`` (as ``out_indices``), and
"the first ``n`` stages" are every module ``forward`` runs up to the end of stage ``n - 1``:
``freeze_stages(model, 2)`` on a ResNet freezes the stem and ``layer1`` (torchvision's
``trainable_layers=3``).

None of these change what ``zoo.save_model`` writes: ``FrozenBatchNorm2d`` and ``SyncBatchNorm``
have BatchNorm's state-dict keys, and ``model.config`` keeps describing the network to rebuild
(ordinary BatchNorm), so a file saved from a frozen or synced model loads anywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from zoo.models.features import NUM_STAGES, FeatureListNet
from zoo.models.layers import ClassifierModel

M = TypeVar("M", bound=nn.Module)


def freeze_bn(model: M) -> M:
    """Every BatchNorm (and SyncBatchNorm) in ``model`` -> ``FrozenBatchNorm2d`` with the same
    statistics, affine parameters and eps (1e-3 for the ``_tf`` twins and Inception): fixed
    running statistics in training too, and no trainable γ/β. Returns ``model`` (changed in
    place; a bare BN is returned as its frozen copy)."""
    if isinstance(model, nn.modules.batchnorm._BatchNorm):
        return _frozen(model)  # type: ignore[return-value]
    for name, child in model.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            setattr(model, name, _frozen(child))
        else:
            freeze_bn(child)
    return model


def _frozen(bn: nn.modules.batchnorm._BatchNorm) -> FrozenBatchNorm2d:
    if not bn.track_running_stats or bn.running_mean is None:
        raise ValueError("freeze_bn needs BatchNorm layers with running statistics")
    frozen = FrozenBatchNorm2d(bn.num_features, eps=bn.eps).to(bn.running_mean.device)
    frozen.running_mean.copy_(bn.running_mean.detach())
    frozen.running_var.copy_(bn.running_var.detach())
    if bn.affine:
        frozen.weight.copy_(bn.weight.detach())
        frozen.bias.copy_(bn.bias.detach())
    return frozen


def stage_modules(model: ClassifierModel | FeatureListNet, n: int) -> list[str]:
    """Names of the modules that make up the first ``n`` stages (stem included)."""
    stages = model.stage_info if isinstance(model, FeatureListNet) else model.feature_info
    if not 0 <= n <= NUM_STAGES:
        raise ValueError(f"stages to freeze must be in 0..{NUM_STAGES}, got {n}")
    if n == 0:
        return []
    sequence = model.feature_sequence()
    last = stages[n - 1].module
    if last not in sequence:
        raise ValueError(f"stage {n - 1} ({last}) is not part of this backbone")
    return sequence[: sequence.index(last) + 1]


def freeze_stages(model: M, n: int) -> M:
    """Freeze the first ``n`` stages: no gradients for their parameters, and their BatchNorms
    frozen (``FrozenBatchNorm2d``), so neither weights nor statistics change in training —
    even after ``model.train()``. ``n=0`` freezes nothing, 5 the whole backbone."""
    for name in stage_modules(model, n):  # type: ignore[arg-type]
        module = model.get_submodule(name)
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            parent, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, leaf, _frozen(module))
            continue
        freeze_bn(module)
        for p in module.parameters():
            p.requires_grad_(False)
    return model


def sync_batchnorm(model: M) -> M:
    """BatchNorm -> ``SyncBatchNorm`` for multi-GPU DDP (CUDA only: it does not run on CPU).
    Frozen BNs stay frozen. Same state-dict keys, so checkpoints and ``save_model`` are
    unaffected."""
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)


def head_names(model: nn.Module) -> set[str]:
    """Parameter names of the classifier (the part a new task re-initialises)."""
    if not isinstance(model, ClassifierModel):
        return set()  # a features_only backbone has no head
    head = model.get_classifier()
    ids = {id(p) for p in head.parameters()}
    return {n for n, p in model.named_parameters() if id(p) in ids}


def head_from_classes(model: ClassifierModel, classes: Sequence[str]) -> bool:
    """Make the classifier's rows for ``classes`` (class folder names: WordNet ids or the weights'
    class names, as ``zoo.evaluate`` maps them) the new head, in that order.

    When the new task's classes are among the pretrained ones (Imagenette in ImageNet), a fresh
    head throws away a classifier that is already right: at step 0 the model then does exactly
    what the pretrained one restricted to these classes does (its zero-shot accuracy), and
    fine-tuning starts from there instead of from chance. Returns False, leaving ``model``
    unchanged, when the weights carry no class names or some class is not among them.
    """
    from zoo.inference import class_mapping
    from zoo.labels import resolve_labels

    cfg = model.pretrained_cfg
    if cfg is None or not classes:
        return False
    try:
        rows = class_mapping(classes, resolve_labels(cfg.labels, cfg.label_names))
    except ValueError:  # no label set, or a class it does not have
        return False
    old = model.get_classifier()
    if getattr(old, "weight", None) is None:  # a headless model: nothing to keep
        return False
    index = torch.tensor(rows) + cfg.label_offset  # skip rows before class 0 ("background")
    weight = old.weight.detach()[index].clone()
    bias = None if old.bias is None else old.bias.detach()[index].clone()
    model.reset_classifier(len(classes))
    new = model.get_classifier()
    with torch.no_grad():
        new.weight.copy_(weight)
        if bias is not None and new.bias is not None:
            new.bias.copy_(bias)
    return True


def param_groups(
    model: nn.Module,
    *,
    weight_decay: float,
    no_bias_decay: bool = False,
    backbone_lr_mult: float = 1.0,
    head_lr_mult: float = 1.0,
) -> list[dict]:
    """Optimizer groups: backbone and head, each split into decaying / non-decaying parameters
    when ``no_bias_decay`` (biases and BN γ/β, everything 1-D, get no decay: the paper's §3.1).

    Each group carries ``lr_scale`` (its multiplier of the schedule's LR) and ``name``; frozen
    parameters (``requires_grad=False``) are left out; empty groups are dropped.
    """
    if backbone_lr_mult < 0 or head_lr_mult <= 0:
        raise ValueError("backbone_lr_mult must be >= 0 and head_lr_mult > 0")
    heads = head_names(model)
    groups = []
    for part, mult in (("backbone", backbone_lr_mult), ("head", head_lr_mult)):
        params = [
            p
            for n, p in model.named_parameters()
            if p.requires_grad and (n in heads) == (part == "head")
        ]
        if part == "backbone" and mult == 0:
            for p in params:  # an LR of zero is a frozen backbone: say so to autograd
                p.requires_grad_(False)
            continue
        splits = (
            [("decay", [p for p in params if p.ndim > 1], weight_decay),
             ("no_decay", [p for p in params if p.ndim <= 1], 0.0)]
            if no_bias_decay
            else [("all", params, weight_decay)]
        )  # fmt: skip
        for kind, group, decay in splits:
            if group:
                groups.append(
                    {
                        "params": group,
                        "weight_decay": decay,
                        "lr_scale": mult,
                        "name": f"{part}.{kind}",
                    }
                )
    return groups


__all__ = [
    "freeze_bn",
    "freeze_stages",
    "head_from_classes",
    "head_names",
    "param_groups",
    "stage_modules",
    "sync_batchnorm",
]
