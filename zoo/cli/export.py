"""``zoo export NAME --format onnx|torchscript|exported-program -o FILE``."""

from __future__ import annotations

import argparse
import sys

from zoo.cli.output import print_json, to_jsonable


def add_export_arguments(p: argparse.ArgumentParser) -> None:
    from zoo.export import FORMATS

    p.add_argument("name", help="architecture, e.g. mobilenetv2_1_0_tf")
    weights = p.add_mutually_exclusive_group()
    weights.add_argument(
        "--pretrained", default=True, metavar="TAG|PATH",
        help="weights tag or .safetensors path (default: the arch's default weights)",
    )  # fmt: skip
    weights.add_argument(
        "--random-init", action="store_true", help="random weights (to try the pipeline)"
    )
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("-o", "--output", required=True, metavar="FILE")
    p.add_argument("--img-size", type=int, help="input size (default: the weights' crop)")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def run_export(args: argparse.Namespace) -> int:
    import zoo
    from zoo.export import export_model

    model = zoo.get_model(args.name, pretrained=False if args.random_init else args.pretrained)
    try:
        result = export_model(model, args.output, format=args.format, img_size=args.img_size)
    except ModuleNotFoundError as err:
        print(f"zoo export: error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print_json({**to_jsonable(result), "path": str(result.path)})
        return 0
    c, h, w = result.input_size
    print(f"wrote {result.path} ({result.format}): input (batch, {c}, {h}, {w}), batch dynamic; "
          f"outputs match PyTorch's within {result.max_abs_diff:.2g}")  # fmt: skip
    if result.metadata["same_padding_fixed_at"]:
        print(f"note: TensorFlow SAME padding is fixed for {h}x{w} inputs in this file; "
              "re-export for another size")  # fmt: skip
    return 0
