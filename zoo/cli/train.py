"""``zoo train``, ``zoo recipes``: recipes in, run directories out.

Imports stay inside the run functions: ``zoo recipes`` reads TOML only and starts without torch.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_recipe_scaling(p: argparse.ArgumentParser) -> None:
    """--epochs, --img-size, --batch-size and --set: how a run reshapes its recipe (train,
    finetune)."""
    p.add_argument("--epochs", type=float, help="rescale the recipe to this many epochs")
    p.add_argument(
        "--img-size",
        type=int,
        help="train crop S (eval: the recipe's eval_img_size scaled alike, or S)",
    )
    p.add_argument("--batch-size", type=int, help="global batch; the LR scales linearly")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe value, e.g. --set optim.lr=0.2 (repeatable)",
    )


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--recipe", default="baseline", help="recipe name (`zoo recipes`) or .toml path")
    p.add_argument("--model", metavar="ARCH", help="architecture, e.g. resnet18_v1d (required)")
    p.add_argument("--data", metavar="DIR", help="folder with train/ and val/ (required)")
    add_recipe_scaling(p)
    p.add_argument("--pretrained", metavar="TAG|PATH", help="start from these weights")
    p.add_argument("--teacher", metavar="ARCH", help="distil from this model")
    p.add_argument(
        "--teacher-pretrained",
        metavar="TAG|PATH",
        help="the teacher's weights (default: the arch's default weights)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print metrics as JSON")


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    _add_common(p)
    p.add_argument("--out", metavar="RUN_DIR", help="run directory (default runs/ARCH-RECIPE-TIME)")
    p.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue a stopped run exactly; other options come from the run",
    )
    p.add_argument(
        "--stop-after-steps",
        type=int,
        metavar="N",
        help="checkpoint and stop after N optimizer steps in total (resume later)",
    )


def run_train(args: argparse.Namespace) -> int:
    if not args.resume and not (args.model and args.data):
        raise ValueError("--model and --data are required (or --resume RUN_DIR)")
    if not args.resume:  # bad input answers before torch is imported (seconds on a busy CPU)
        from zoo.training.recipe import resolve

        resolve(
            args.recipe,
            overrides=args.overrides,
            epochs=args.epochs,
            batch_size=args.batch_size,
            img_size=args.img_size,
        )
        if not Path(args.data).expanduser().is_dir():
            raise FileNotFoundError(f"data folder not found: {args.data}")
    from zoo.training.loop import train

    result = train(
        args.model,
        args.data or "",
        recipe=args.recipe,
        overrides=args.overrides,
        epochs=args.epochs,
        img_size=args.img_size,
        batch_size=args.batch_size,
        pretrained=args.pretrained,
        teacher=args.teacher,
        teacher_pretrained=args.teacher_pretrained,
        out=args.out,
        resume=args.resume,
        stop_after_steps=args.stop_after_steps,
        progress=not args.quiet,
    )
    m = result.metrics
    if args.json:
        print(json.dumps({"run_dir": str(result.run_dir), **m}, indent=2))
    elif result.finished:
        print(
            f"{m['model']} / {m['recipe']}: val top-1 {m['top1']:.2f}%  top-5 {m['top5']:.2f}%  "
            f"(best {m['best_top1']:.2f}% at epoch {m['best_epoch']}), "
            f"{m['images_per_second']} img/s, {m['wall_seconds']:.0f} s"
        )
        print(f"run directory: {result.run_dir}  (final.safetensors, metrics.json, plot.png)")
    else:
        print(
            f"stopped after step {m['steps']}; continue with: zoo train --resume {result.run_dir}"
        )
    return 0


def add_recipes_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", nargs="?", choices=["list", "show"], default="list")
    p.add_argument("name", nargs="?", help="recipe to show (name or .toml path)")
    p.add_argument("--epochs", type=float, help="show it rescaled to this many epochs")
    p.add_argument("--batch-size", type=int, help="show it at this batch size (LR scaled)")
    p.add_argument("--img-size", type=int)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def run_recipes(args: argparse.Namespace) -> int:
    from zoo.training.recipe import list_recipes, resolve

    if args.action == "list":
        rows = [resolve(name) for name in list_recipes()]
        if args.json:
            print(
                json.dumps([{"name": r.name, "description": r.description} for r in rows], indent=2)
            )
        else:
            width = max(len(r.name) for r in rows)
            for r in rows:
                print(f"{r.name:<{width}}  {r.description}")
        return 0
    if not args.name:
        raise ValueError("zoo recipes show NAME: which recipe? (`zoo recipes` lists them)")
    recipe = resolve(
        args.name,
        overrides=args.overrides,
        epochs=args.epochs,
        batch_size=args.batch_size,
        img_size=args.img_size,
    )
    print(json.dumps(recipe.to_dict(), indent=2) if args.json else recipe.to_toml(), end="")
    return 0


def add_weights_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = sub.add_parser("add", help="register a finished run's final.safetensors as hub weights")
    add.add_argument("run_dir", metavar="RUN_DIR")
    add.add_argument("--tag", required=True, help="weights tag, e.g. imagenette_r18")
    add.add_argument("--default", action="store_true", help="make it the arch's default")
    add.add_argument("--force", action="store_true", help="replace an existing tag")
    add.add_argument("--manifest", metavar="PATH", help="default: $ZOO_HOME/manifest.json")
    add.add_argument("--license", default="unspecified", help="licence of the weights")
    add.add_argument("--json", action="store_true", help="machine-readable output")


def run_weights(args: argparse.Namespace) -> int:
    import dataclasses

    from zoo.training.register import add_weights

    added = add_weights(
        args.run_dir,
        args.tag,
        default=args.default,
        force=args.force,
        manifest=args.manifest,
        license=args.license,
    )
    if args.json:
        print(
            json.dumps(
                {
                    k: str(v) if not isinstance(v, bool | float) else v
                    for k, v in dataclasses.asdict(added).items()
                },
                indent=2,
            )
        )
    else:
        default = " (default)" if added.default else ""
        print(
            f"added {added.arch}.{added.tag}{default}: top-1 {added.top1:.2f}%, "
            f"sha256 {added.sha256[:12]}…"
        )
        print(f"manifest: {added.manifest}\nfile:     {added.file}")
        print(f"use it:   zoo.get_model({added.arch!r}, pretrained={added.tag!r})")
    return 0


def add_demo_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="zoo-demo", metavar="DIR", help="where everything goes")
    p.add_argument("--model", default="resnet18_v1d", metavar="ARCH")
    p.add_argument("--epochs", type=float, default=6)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def run_demo(args: argparse.Namespace) -> int:
    import dataclasses

    from zoo.training.demo import run_demo as demo

    result = demo(args.out, model=args.model, epochs=args.epochs, progress=not args.quiet)
    if args.json:
        print(json.dumps(dataclasses.asdict(result), indent=2, default=str))
        return 0
    print(f"\ntrained {args.model} on scikit-learn's digits: val top-1 {result.top1:.2f}%")
    for image, truth, predicted, prob in result.predictions:
        print(f"  {Path(image).name}: true {truth}, predicted {predicted} ({prob:.1%})")
    print(
        f"data:     {result.data}\nrun:      {result.run_dir} (metrics.json, plot.png, log.jsonl)"
    )
    print(f"weights:  {result.tag} in {result.home}/manifest.json")
    print(
        f'reload:   ZOO_HOME={result.home} python -c "import zoo; '
        f"zoo.get_model('{args.model}', pretrained='{result.tag}')\""
    )
    return 0
