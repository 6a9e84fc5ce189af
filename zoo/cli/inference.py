"""``zoo predict IMAGE... --model NAME`` and ``zoo eval DATA_DIR --model NAME``."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import zoo
from zoo.cli.output import print_json, print_table
from zoo.inference import Failure, evaluate, predict


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="architecture, e.g. mobilenetv2_1_0_tf")
    p.add_argument(
        "--pretrained",
        default=True,
        metavar="TAG|PATH",
        help="weights tag or .safetensors path (default: the arch's default weights)",
    )
    p.add_argument(
        "--no-optimize",
        action="store_true",
        help="run the eager model, not zoo.optimize's (BN folded, channels_last); to compare",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")


def add_predict_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--topk", type=_positive, default=5)
    _model_args(p)


def add_eval_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Class folders named by WordNet id (n01440764, ...) map onto ImageNet classes, so "
        "ImageNet subsets such as Imagenette are scored 1000-way and restricted to the classes "
        "present."
    )
    p.add_argument("data_dir", metavar="DATA_DIR")
    p.add_argument("--batch-size", type=_positive, default=50)
    p.add_argument("--workers", type=int, help="data-loading processes (default: up to 4)")
    p.add_argument(
        "--limit-per-class",
        type=_positive,
        metavar="N",
        help="only the first N files of each class",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar (also ZOO_QUIET=1)")
    _model_args(p)


def run_predict(args: argparse.Namespace) -> int:
    model = zoo.get_model(args.model, pretrained=args.pretrained)
    start = time.perf_counter()
    results = predict(model, args.images, topk=args.topk, optimize=not args.no_optimize)
    elapsed = time.perf_counter() - start
    if args.json:
        print_json({"predictions": list(results), "failures": results.failures})
        return _report_failures("predict", results.failures, len(args.images))
    for ranked in results:
        print(ranked[0].image)
        print_table(
            ["rank", "class", "label", "probability"],
            [(p.rank, p.index, p.label or "-", f"{p.probability:.4f}") for p in ranked],
        )
        print()
    how = "eager" if args.no_optimize else "optimized"
    if results:
        print(f"{len(results)} image(s) in {elapsed:.2f} s with reading and preprocessing "
              f"({len(results) / elapsed:.1f} images/s, {how})")  # fmt: skip
    return _report_failures("predict", results.failures, len(args.images))


def _report_failures(command: str, failures: Sequence[Failure], total: int) -> int:
    """Each skipped input on stderr, then a count; non-zero exit when anything was skipped."""
    for failure in failures:
        print(f"zoo {command}: skipped {failure.item}: {failure.reason}", file=sys.stderr)
    if failures:
        print(f"zoo {command}: {len(failures)} of {total} input(s) could not be read",
              file=sys.stderr)  # fmt: skip
    return 1 if failures else 0


def run_eval(args: argparse.Namespace) -> int:
    model = zoo.get_model(args.model, pretrained=args.pretrained)
    result = evaluate(
        model, args.data_dir, batch_size=args.batch_size, workers=args.workers,
        limit_per_class=args.limit_per_class, progress=not args.json and not args.quiet,
        optimize=not args.no_optimize,
    )  # fmt: skip
    total = result.images + len(result.failures)
    if args.json:
        print_json({"model": args.model, "weights": model.pretrained_cfg.weights, **vars(result)})
        return _report_failures("eval", result.failures, total)
    print(f"{args.model} ({model.pretrained_cfg.weights}) on {args.data_dir}: "
          f"{result.images} images, {result.classes} classes")  # fmt: skip
    print(f"  top-1 {result.top1:.2f}%  top-5 {result.top5:.2f}%  (all classes)")
    print(f"  top-1 {result.top1_restricted:.2f}%  (restricted to the {result.classes} classes)")
    how = "eager" if args.no_optimize else "optimized"
    print(f"  {result.images_per_second:.1f} images/s ({how}, with data loading)")
    return _report_failures("eval", result.failures, total)
