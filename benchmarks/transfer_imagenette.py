"""Benchmark: classification transfer on Imagenette with real ``_tf`` ImageNet weights.

Three numbers on the same val images (the first ``--val-per-class`` of each class of Imagenette's
val split; all 3,925 with ``--val-per-class 0``), 10 classes, all at the ``finetune`` recipe's
eval size (its ``eval_img_size``: resize, centre crop, the weights' own mean/std), fp32:

1. zero-shot: the ImageNet classifier restricted to the 10 Imagenette classes (WordNet ids);
   also at the weights' own preprocessing (224 px) for reference;
2. ``zoo finetune``: the ``finetune`` recipe from the ``tflite_in1k`` weights (new 10-way head,
   backbone at the recipe's lower LR, frozen BN), the first ``--limit-per-class`` train images
   per class;
3. random init: the same recipe, data and schedule from random weights, with BN live and one LR
   for every layer (``finetune.freeze_bn=false``, ``finetune.backbone_lr_mult=1``): frozen BN
   and a slow backbone only make sense for weights worth protecting.

The weights come through zoo's hub with ``ZOO_MIRROR`` = ../shared/weights/tflite_mobilenet,
offline, in a temporary ``ZOO_HOME`` (as benchmarks/tflite_imagenette.py). The data is an
ImageFolder of symlinks (train subset, val subset) in a temporary folder. ImageNet-trained
weights may have seen some of these images (Imagenette is drawn from ImageNet).

Each step can run on its own (``--steps``), so that none takes long on a busy machine; with
``--json`` naming an existing results file of the same setup, the steps not run are kept from it.
``--md`` renders the results file as a table.

    python benchmarks/transfer_imagenette.py [--model mobilenetv2_1_0_tf] [--limit-per-class 100]
        [--val-per-class 30] [--epochs 1] [--steps zero_shot finetune random_init]
        [--set KEY=VALUE ...]  (recipe overrides for both training runs)
        [--json benchmarks/results/transfer_imagenette.json]
        [--md benchmarks/results/transfer_imagenette.md]
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
STEPS = ("zero_shot", "finetune", "random_init")
# Random init: nothing pretrained to protect, so BN trains and every layer gets the recipe's LR.
RANDOM_INIT_OVERRIDES = ("finetune.freeze_bn=false", "finetune.backbone_lr_mult=1.0")


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
    at_size = dataclasses.replace(pre, crop=img_size, resize=eval_resize(img_size))
    small = own
    if at_size != pre:  # the recipe's eval preprocessing differs from the weights' own
        model.pretrained_cfg = dataclasses.replace(model.pretrained_cfg, preprocess=at_size)
        small = zoo.evaluate(model, data / "val", progress=False)
    return {
        "top1": round(small.top1_restricted, 2),
        f"top1_at_{pre.crop}px": round(own.top1_restricted, 2),
        "images": own.images,
        "right": right_per_image(small),
    }


def right_per_image(result) -> str:
    """'1'/'0' per val image (``zoo.evaluate``'s order): kept so that two models are compared on
    the same images (a paired test), not only by their totals."""
    return "".join("1" if r else "0" for r in result.right)


def paired(a: str, b: str) -> dict:
    """Images only ``a`` gets right vs only ``b``, and the exact two-sided McNemar p-value."""
    import math

    only_a = sum(x == "1" and y == "0" for x, y in zip(a, b, strict=True))
    only_b = sum(x == "0" and y == "1" for x, y in zip(a, b, strict=True))
    n, k = only_a + only_b, min(only_a, only_b)
    p = min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n) if n else 1.0
    return {"only_finetune_right": only_a, "only_zero_shot_right": only_b, "mcnemar_p": round(p, 4)}


def run(
    model_name: str, pretrained: str | None, data: Path, epochs: float, overrides: tuple, out: Path
) -> dict:
    from zoo.training.loop import train

    start = time.perf_counter()
    result = train(
        model_name,
        data,
        recipe="finetune",
        pretrained=pretrained,
        overrides=overrides,
        epochs=epochs,
        out=out,
        progress=False,
    )
    m = result.metrics
    import zoo

    model = zoo.get_model(model_name, pretrained=str(out / "final.safetensors"))
    return {
        "right": right_per_image(zoo.evaluate(model, data / "val", progress=False)),
        "top1": m["top1"],
        "top5": m["top5"],
        "best_top1": m["best_top1"],
        "overrides": list(overrides),
        "train_images_per_second": m["images_per_second"],
        "wall_seconds": round(time.perf_counter() - start, 1),
    }


def setup(args: argparse.Namespace, recipe: dict) -> dict:
    """What makes two runs comparable: results of different setups are never mixed."""
    return {
        "model": args.model,
        "weights": "tflite_in1k (TensorFlow's quantized MobileNet, dequantized)",
        "train": f"imagenette2_160/train, first {args.limit_per_class} images per class",
        "val": f"imagenette2_160/val, first {args.val_per_class or 'all'} images per class",
        "epochs": args.epochs,
        "recipe": recipe,
    }


def render_md(results: dict) -> str:
    s = results["setup"]
    rows = [
        ("zero-shot (ImageNet head, 10 classes)", "zero_shot", ""),
        ("`zoo finetune` from tflite_in1k", "finetune", results.get("command_finetune", "")),
        ("same recipe from random init", "random_init", results.get("command_random_init", "")),
    ]
    lines = [
        "# Classification transfer on Imagenette",
        "",
        "Generated by `python benchmarks/transfer_imagenette.py --json "
        "benchmarks/results/transfer_imagenette.json --md benchmarks/results/"
        "transfer_imagenette.md`; do not edit by hand.",
        "",
        f"Model `{s['model']}`, weights {s['weights']}. Train: {s['train']}; "
        f"val: {s['val']} ({results.get('val_images', '?')} images, the same for all three). "
        f"{s['epochs']:g} epoch(s), recipe `finetune` (train {s['recipe']['img_size']} / eval "
        f"{s['recipe']['eval_img_size'] or s['recipe']['img_size']} px, batch "
        f"{s['recipe']['batch_size']}, lr {s['recipe']['optim']['lr']}, backbone at "
        f"{s['recipe']['finetune']['backbone_lr_mult']:g}x, "
        f"{s['recipe']['precision']}). Val top-1 over the 10 Imagenette classes.",
        "",
        "| run | val top-1 | command | wall |",
        "|---|---|---|---|",
    ]
    for label, key, command in rows:
        r = results.get(key)
        shown = f"`{command}`" if command else "`zoo eval` (restricted to the 10 classes)"
        if r is None:
            lines.append(f"| {label} | not run | {shown} | |")
            continue
        wall = f"{r['wall_seconds']:.0f} s" if "wall_seconds" in r else ""
        lines.append(f"| {label} | {r['top1']:.2f} % | {shown} | {wall} |")
    zs = results.get("zero_shot")
    if zs:
        at = [k for k in zs if k.startswith("top1_at_")]
        lines += [
            "",
            f"Zero-shot at the weights' own preprocessing ({at[0][8:-2]} px): {zs[at[0]]:.2f} %.",
        ]
    if zs and results.get("finetune") and "right" in zs and "right" in results["finetune"]:
        pair = paired(results["finetune"]["right"], zs["right"])
        verdict = "a real difference" if pair["mcnemar_p"] < 0.05 else "no detectable difference"
        lines += [
            "",
            f"Paired on the same images: only `zoo finetune` right on {pair['only_finetune_right']}"
            f", only zero-shot right on {pair['only_zero_shot_right']} (exact McNemar p = "
            f"{pair['mcnemar_p']}: {verdict}"
            " at 5 %).",
        ]
    lines += [
        "",
        "ImageNet-trained weights may have seen some of these images (Imagenette is drawn from "
        "ImageNet). Machine: "
        f"{results.get('cpu', '?')}, {results.get('threads', '?')} threads, shared with other "
        "work (wall times are not speed figures).",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="mobilenetv2_1_0_tf")
    parser.add_argument("--limit-per-class", type=int, default=100)
    parser.add_argument("--val-per-class", type=int, default=30, help="0: the full val split")
    parser.add_argument("--epochs", type=float, default=1)
    parser.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS))
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="a recipe override for both training runs, e.g. img_size=224",
    )  # fmt: skip
    parser.add_argument("--json", type=Path, help="write (or complete) the results here")
    parser.add_argument("--md", type=Path, help="render the results as a Markdown table here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        os.environ.update(
            ZOO_HOME=str(tmp / "home"), ZOO_MIRROR=str(WEIGHTS), ZOO_OFFLINE="1",
            ZOO_QUIET="1",
        )  # fmt: skip
        import torch

        import zoo
        from zoo.training.recipe import RecipeError, resolve

        overrides = tuple(args.set)
        try:
            recipe = resolve("finetune", overrides=overrides, epochs=args.epochs)
        except RecipeError as err:
            print(f"transfer_imagenette.py: {err}", file=sys.stderr)
            return 2
        # as read back from JSON (tuples become lists), so that an equal setup compares equal
        mine = json.loads(json.dumps(setup(args, recipe.to_dict())))
        results: dict = {"setup": mine}
        if args.json and args.json.is_file():
            old = json.loads(args.json.read_text(encoding="utf-8"))
            if old.get("setup") == mine:  # keep the steps not run now
                results = old
            else:
                print(f"{args.json}: another setup; its results are replaced", file=sys.stderr)
        data = subset(tmp / "data", args.limit_per_class, args.val_per_class)
        results.update(
            val_images=sum(len(os.listdir(p)) for p in (data / "val").iterdir()),
            command_finetune=(
                f"zoo finetune --model {args.model} --pretrained tflite_in1k --data SUBSET "
                f"--epochs {args.epochs:g}" + "".join(f" --set {o}" for o in overrides)
            ),
            command_random_init=(
                f"zoo train --recipe finetune --model {args.model} --data SUBSET "
                f"--epochs {args.epochs:g}"
                + "".join(f" --set {o}" for o in (*overrides, *RANDOM_INIT_OVERRIDES))
            ),
            torch=torch.__version__,
            zoo=zoo.__version__,
            cpu=platform.processor() or platform.machine(),
            threads=torch.get_num_threads(),
        )
        steps = {
            "zero_shot": lambda: zero_shot(args.model, recipe.eval_size, data),
            "finetune": lambda: run(
                args.model, "tflite_in1k", data, args.epochs, overrides, tmp / "ft"
            ),
            "random_init": lambda: run(
                args.model,
                None,
                data,
                args.epochs,
                (*overrides, *RANDOM_INIT_OVERRIDES),
                tmp / "scratch",
            ),
        }
        for key in args.steps:  # each result printed (and saved) as it comes: runs are long
            results[key] = steps[key]()
            print(json.dumps({key: results[key]}), flush=True)
            if args.json:
                args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    if args.md:
        args.md.write_text(render_md(results), encoding="utf-8")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
