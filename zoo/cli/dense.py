"""``zoo finetune-dense``: detection (Faster R-CNN + FPN) or segmentation (FCN / DeepLabV3)
fine-tuning of a zoo backbone on a COCO-format folder, into a run directory."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def add_finetune_dense_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", choices=["detection", "segmentation"], help="what to train")
    p.add_argument("--model", metavar="ARCH", help="backbone architecture, e.g. mobilenetv2_1_0_tf")
    p.add_argument("--pretrained", metavar="TAG|PATH", help="backbone weights (default: random)")
    p.add_argument(
        "--data", metavar="DIR", help="COCO-format folder: images/, annotations/*.json, splits/"
    )
    p.add_argument("--head", help="segmentation: fcn (default) or deeplabv3")
    # Defaults live in zoo.dense.loop.DenseArgs (one place); None here = not given.
    p.add_argument("--masks", help="segmentation label set: DIR/masks_<masks>/ (default voc21)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--clip-grad-norm", type=float, help="0 = no gradient clipping")
    p.add_argument("--min-size", type=int, help="detection: resize short side")
    p.add_argument("--crop", type=int, help="segmentation: training crop")
    p.add_argument("--trainable-layers", type=int, help="detection: stages trained")
    p.add_argument("--seed", type=int)
    p.add_argument("--out", metavar="RUN_DIR", help="run directory (default runs/ARCH-TASK-TIME)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run at its next epoch")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.add_argument("--json", action="store_true", help="print metrics as JSON")


def run_finetune_dense(args: argparse.Namespace) -> int:
    from zoo.dense.loop import DenseArgs, train_dense

    if args.resume:
        result = train_dense(None, Path(args.resume), resume=True, progress=not args.quiet)
        out = Path(args.resume)
    else:
        if not (args.task and args.model and args.data):
            raise ValueError("--task, --model and --data are required (or --resume RUN_DIR)")
        given = {
            name: getattr(args, name)
            for name in ("masks", "epochs", "batch_size", "lr", "clip_grad_norm", "min_size",
                         "crop", "trainable_layers", "seed")
            if getattr(args, name) is not None
        }  # fmt: skip
        dense = DenseArgs(
            task=args.task,
            model=args.model,
            data=str(Path(args.data).expanduser().resolve()),
            pretrained=args.pretrained,
            head=args.head or "",
            **given,
        )
        stamp = time.strftime("%Y%m%d-%H%M%S")
        out = Path(args.out) if args.out else Path("runs") / f"{args.model}-{args.task}-{stamp}"
        result = train_dense(dense, out, progress=not args.quiet)
    if args.json:
        print(json.dumps({"run_dir": str(out), **result}, indent=2))
    else:
        keys = ("person_ap_50", "map_50", "coco_map", "miou", "pixel_acc")
        shown = ", ".join(f"{k} {result[k]:.2f}%" for k in keys if k in result)
        print(f"{result['model']} / {result['head']}: {shown}")
        print(f"run directory: {out}  (final.safetensors, metrics.json, plot.png)")
    return 0
