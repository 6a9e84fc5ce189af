"""``zoo convert SRC --model NAME [--format F] -o DST.safetensors``."""

from __future__ import annotations

import argparse

from zoo.cli.output import print_json
from zoo.convert import FORMATS, convert_file


def add_convert_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Every source tensor must be used exactly once and every model tensor filled; "
        "otherwise the conversion fails and names the keys."
    )
    p.add_argument(
        "src",
        nargs="+",
        help="source file(s): .params, .safetensors, .pth, .tflite (several for one model "
        "split over files, e.g. a TFLite backbone and head)",
    )
    p.add_argument("--model", required=True, help="zoo architecture, e.g. resnet50_v1d")
    p.add_argument(
        "--format", choices=sorted(FORMATS), help="source format (inferred if unambiguous)"
    )
    p.add_argument("--num-classes", type=int, help="classifier size (default: the source's)")
    p.add_argument("--labels", help="label set name stored in the file, e.g. imagenet-1k")
    p.add_argument(
        "--label-offset",
        type=int,
        help="classifier rows before class 0 (1 for TensorFlow's 'background' row; with "
        "--labels, inferred from the classifier's width when left out)",
    )
    p.add_argument("-o", "--output", required=True, help="destination .safetensors")
    p.add_argument("--json", action="store_true", help="print the conversion report as JSON")


def run_convert(args: argparse.Namespace) -> int:
    report = convert_file(
        args.src[0] if len(args.src) == 1 else args.src, args.output, model=args.model,
        format=args.format, num_classes=args.num_classes, labels=args.labels,
        label_offset=args.label_offset,
    )  # fmt: skip
    if args.json:
        print_json({**vars(report), "output": args.output})
    else:
        print(report.summary())
        print(f"wrote {args.output}")
    return 0
