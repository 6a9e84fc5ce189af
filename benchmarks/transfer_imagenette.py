"""Benchmark: classification transfer on Imagenette with real ``_tf`` ImageNet weights.

Three numbers on the same val images (the first ``--val-per-class`` of each class of Imagenette's
val split; all 3,925 with ``--val-per-class 0``), 10 classes:

1. zero-shot: the ImageNet classifier restricted to the 10 Imagenette classes (WordNet ids),
   at the weights' own preprocessing (224 px) and at the fine-tuning eval size (160 px);
2. ``zoo finetune``: the ``finetune`` recipe from the ``tflite_in1k`` weights (new 10-way head,
   backbone at 0.1x LR), the first ``--limit-per-class`` train images per class, 160 px;
3. the same recipe and data from random init (``zoo train --recipe finetune``).

The weights come through zoo's hub with ``ZOO_MIRROR`` = ../shared/weights/tflite_mobilenet,
offline, in a temporary ``ZOO_HOME`` (as benchmarks/tflite_imagenette.py). The data is an
ImageFolder of symlinks (train subset, val subset) in a temporary folder. ImageNet-trained
weights may have seen some of these images (Imagenette is drawn from ImageNet).

    python benchmarks/transfer_imagenette.py [--model mobilenetv2_1_0_tf] [--limit-per-class 100]
        [--val-per-class 30] [--epochs 1] [--json benchmarks/results/transfer_imagenette.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's zoo, not an installed one

SHARED = ROOT.parent / "shared"
DATA = SHARED / "data" / "imagenette2_160"
WEIGHTS = SHARED / "weights" / "tflite_mobilenet"


def subset(dst: Path, train: int, val: int) -> Path:
    """An ImageFolder of symlinks: the first N files (sorted) of each class of each split."""
    for split, n in (("train", train), ("val", val)):
        for wnid in sorted(os.listdir(DATA / split)):
            (dst / split / wnid).mkdir(parents=True)
            names = sorted(os.listdir(DATA / split / wnid))
            for name in names[:n] if n else names:
                (dst / split / wnid / name).symlink_to(DATA / split / wnid / name)
    return dst


def zero_shot(model_name: str, img_size: int, data: Path) -> dict:
    import zoo
    from zoo.training.data import eval_resize

    model = zoo.get_model(model_name, pretrained=True)
    own = zoo.evaluate(model, data / "val", progress=False)
    pre = model.pretrained_cfg.preprocess
    model.pretrained_cfg = dataclasses.replace(
        model.pretrained_cfg,
        preprocess=dataclasses.replace(pre, crop=img_size, resize=eval_resize(img_size)),
    )
    small = zoo.evaluate(model, data / "val", progress=False)
    return {
        f"top1_10way_{pre.crop}px": round(own.top1_restricted, 2),
        f"top1_10way_{img_size}px": round(small.top1_restricted, 2),
        "images": own.images,
    }


def run(model_name: str, pretrained: str | None, data: Path, epochs: float, out: Path) -> dict:
    from zoo.training.loop import train

    start = time.perf_counter()
    result = train(
        model_name,
        data,
        recipe="finetune",
        pretrained=pretrained,
        epochs=epochs,
        out=out,
        progress=False,
    )
    m = result.metrics
    return {
        "top1": m["top1"],
        "top5": m["top5"],
        "best_top1": m["best_top1"],
        "train_images_per_second": m["images_per_second"],
        "wall_seconds": round(time.perf_counter() - start, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="mobilenetv2_1_0_tf")
    parser.add_argument("--limit-per-class", type=int, default=100)
    parser.add_argument("--val-per-class", type=int, default=30, help="0: the full val split")
    parser.add_argument("--epochs", type=float, default=1)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        os.environ.update(
            ZOO_HOME=str(tmp / "home"), ZOO_MIRROR=str(WEIGHTS), ZOO_OFFLINE="1",
            ZOO_QUIET="1",
        )  # fmt: skip
        import torch

        import zoo
        from zoo.training.recipe import resolve

        recipe = resolve("finetune", epochs=args.epochs)
        data = subset(tmp / "data", args.limit_per_class, args.val_per_class)
        val_images = sum(len(os.listdir(p)) for p in (data / "val").iterdir())
        results = {
            "model": args.model,
            "weights": "tflite_in1k (TensorFlow's quantized MobileNet, dequantized)",
            "train": f"imagenette2_160/train, first {args.limit_per_class} images per class",
            "val": f"imagenette2_160/val, first {args.val_per_class or 'all'} images per class "
            f"({val_images} images)",
            "recipe": recipe.to_dict(),
            "command_finetune": (
                f"zoo finetune --model {args.model} --pretrained tflite_in1k --data SUBSET "
                f"--epochs {args.epochs}  (SUBSET: the train/val symlink folder described above)"
            ),
            "command_random_init": (
                f"zoo train --recipe finetune --model {args.model} --data SUBSET "
                f"--epochs {args.epochs}"
            ),
            "torch": torch.__version__,
            "zoo": zoo.__version__,
            "cpu": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(),
        }
        steps = {
            "zero_shot": lambda: zero_shot(args.model, recipe.img_size, data),
            "finetune": lambda: run(args.model, "tflite_in1k", data, args.epochs, tmp / "ft"),
            "random_init": lambda: run(args.model, None, data, args.epochs, tmp / "scratch"),
        }
        for key, step in steps.items():  # each result printed as it comes (runs are long)
            results[key] = step()
            print(json.dumps({key: results[key]}), flush=True)
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
