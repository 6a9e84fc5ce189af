"""``zoo finetune``: classification transfer from pretrained weights, on the trainer.

It is ``zoo train`` with the ``finetune`` recipe and its switches as options: a new classifier
for the data's classes, the backbone at ``finetune.backbone_lr_mult`` of the LR, optional frozen
stages and frozen BN, the weights' own normalisation, and the same run directory (log, metrics,
plot, checkpoint, ``--resume``, ``zoo weights add``). ``zoo train --pretrained`` instead trains
every parameter at one LR with whatever recipe it is given.
"""

from __future__ import annotations

import argparse

from zoo.cli.train import add_recipe_scaling


def add_finetune_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", metavar="ARCH", help="architecture, e.g. mobilenetv2_1_0_tf")
    p.add_argument(
        "--pretrained",
        metavar="TAG|PATH",
        help="weights tag or .safetensors file to start from (required)",
    )
    p.add_argument("--data", metavar="DIR", help="folder with train/ and val/ (required)")
    p.add_argument("--recipe", default="finetune", help="recipe name or .toml (default finetune)")
    p.add_argument(
        "--limit-per-class", type=int, metavar="N", help="train on the first N images per class"
    )
    p.add_argument("--freeze-stages", type=int, metavar="N", help="freeze the first N of 5 stages")
    p.add_argument("--freeze-bn", action="store_true", help="freeze every BatchNorm")
    p.add_argument(
        "--backbone-lr-mult",
        type=float,
        metavar="X",
        help="backbone LR = X * LR (default: the recipe's finetune.backbone_lr_mult)",
    )
    add_recipe_scaling(p)
    p.add_argument("--out", metavar="RUN_DIR", help="run directory (default runs/ARCH-RECIPE-TIME)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped run exactly")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print metrics as JSON")


def finetune_overrides(args: argparse.Namespace) -> list[str]:
    """The options as recipe overrides, before any --set (which may still override them)."""
    pairs = [
        ("limit_per_class", args.limit_per_class),
        ("finetune.freeze_stages", args.freeze_stages),
        ("finetune.freeze_bn", "true" if args.freeze_bn else None),
        ("finetune.backbone_lr_mult", args.backbone_lr_mult),
    ]
    return [f"{key}={value}" for key, value in pairs if value is not None] + list(args.overrides)


def run_finetune(args: argparse.Namespace) -> int:
    from zoo.cli.train import run_train

    if not args.resume and not (args.model and args.data and args.pretrained):
        raise ValueError(
            "--model, --pretrained and --data are required (or --resume RUN_DIR); "
            "to train from random init use `zoo train`"
        )
    args.overrides = finetune_overrides(args)
    args.teacher = args.teacher_pretrained = None
    args.stop_after_steps = None
    return run_train(args)
