"""``zoo ablate``: the paper's Table 6 ladder, each rung a normal run directory.

The ladder is checked (and every rung's recipe resolved) before torch is imported, so a typo
costs nothing.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

LADDER_HELP = (
    "comma-separated rungs: a recipe name starts afresh, +TRICK adds to the rung above "
    "(+cosine, +label_smoothing, +mixup, +distill, +ema); default: "
    "baseline,efficient,+cosine,+label_smoothing,+mixup (+distill with --teacher)"
)


def add_ablate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", metavar="ARCH", required=True, help="architecture to train")
    p.add_argument("--data", metavar="DIR", required=True, help="folder with train/ and val/")
    p.add_argument("--ladder", help=LADDER_HELP)
    p.add_argument("--seeds", type=int, default=1, metavar="N", help="runs per rung (seeds 0..N-1)")
    p.add_argument("--epochs", type=float, help="every rung's length (default: the first recipe's)")
    p.add_argument(
        "--img-size",
        type=int,
        help="train crop S (eval: the recipe's eval_img_size scaled alike, or S)",
    )
    p.add_argument(
        "--batch-size", type=int, help="one global batch for every rung (LR scales linearly)"
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe value in every rung, before the rung's own switches (repeatable)",
    )
    p.add_argument("--teacher", metavar="ARCH", help="the +distill rung's teacher")
    p.add_argument(
        "--teacher-pretrained",
        metavar="TAG|PATH",
        help="the teacher's weights (default: the arch's default weights)",
    )
    p.add_argument(
        "--out", metavar="DIR", help="where runs and ablation.md/.png go (default runs/ablate-ARCH)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print the results as JSON")


def run_ablate(args: argparse.Namespace) -> int:
    from zoo.training.ablation import ablate
    from zoo.training.ladder import DEFAULT_LADDER

    ladder = args.ladder or ",".join(r for r in DEFAULT_LADDER if args.teacher or r != "+distill")
    result = ablate(
        args.model,
        args.data,
        ladder=ladder,
        seeds=args.seeds,
        epochs=args.epochs,
        img_size=args.img_size,
        batch_size=args.batch_size,
        overrides=args.overrides,
        teacher=args.teacher,
        teacher_pretrained=args.teacher_pretrained,
        out=args.out,
        progress=not args.quiet,
    )
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(Path(result.files["table"]).read_text(encoding="utf-8"), end="")
        print(f"\ntable: {result.files['table']}  plot: {result.files['plot']}")
    if not result.finished:
        print("stopped before the end: run the same command again to continue")
    return 0
