"""``zoo benchmark [NAMES...]``: zoo.optimize'd models side by side with timm / torchvision."""

from __future__ import annotations

import argparse
import sys

from zoo.cli.output import print_json, print_table

DEFAULT_MODELS = ("resnet50_v1d", "mobilenetv2_1_0", "inceptionv3")


def _csv(cast):  # "1,32" -> [1, 32]
    def parse(text: str) -> list:
        try:
            values = [cast(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a comma-separated list: {text!r}") from None
        if not values:
            raise argparse.ArgumentTypeError("empty list")
        return values

    return parse


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_benchmark_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "names", nargs="*", default=list(DEFAULT_MODELS), metavar="NAME",
        help=f"architectures (default: {' '.join(DEFAULT_MODELS)})",
    )  # fmt: skip
    p.add_argument("--batch-size", type=_csv(_positive), default=[1, 32], metavar="1,32",
                   help="batch sizes: 1 gives latency, larger ones throughput")  # fmt: skip
    p.add_argument("--img-size", type=_positive, help="input size (default: the arch's crop)")
    p.add_argument("--dtype", type=_csv(str), default=["float32"], metavar="float32,bfloat16",
                   help="zoo.optimize dtypes (float32, bfloat16, float16)")  # fmt: skip
    p.add_argument("--compare", type=_csv(str), default=[], metavar="timm,torchvision",
                   help="also time the same network there (eager, fp32)")  # fmt: skip
    p.add_argument("--compile", action="store_true", help="add torch.compile'd zoo models")
    p.add_argument("--repeats", type=_positive, default=5, help="timings per model (default 5)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def run_benchmark(args: argparse.Namespace) -> int:
    from zoo.benchmark import benchmark_model, check_request, machine
    from zoo.optimization import parse_dtype

    for dtype in args.dtype:
        parse_dtype(dtype)
    try:
        check_request(args.names, args.compare)
    except ModuleNotFoundError as err:
        print(f"zoo benchmark: error: {err}", file=sys.stderr)
        return 2
    rows = []
    for name in args.names:
        rows += benchmark_model(
            name, batch_sizes=args.batch_size, img_size=args.img_size, dtypes=args.dtype,
            compare=args.compare, compile=args.compile, repeats=args.repeats,
            memory=not args.no_memory, log=lambda m: print(m, file=sys.stderr),
        )  # fmt: skip
    if args.json:
        print_json({"machine": machine(), "rows": rows})
        return 0
    print_table(
        ["model", "implementation", "dtype", "batch", "size", "params", "GMACs", "ms (median)",
         "min-max ms", "images/s", "speed-up", "peak MiB", "compile s"],
        [(r.model, r.implementation, r.dtype, r.batch_size, r.img_size, f"{r.params / 1e6:.2f}M",
          f"{r.gmacs:.3g}", f"{r.median_ms:.1f}", f"{r.min_ms:.1f}-{r.max_ms:.1f}",
          f"{r.images_per_s:.1f}", "-" if r.speedup is None else f"{r.speedup:.2f}x",
          "-" if r.peak_memory_mib is None else f"{r.peak_memory_mib:.0f}",
          "-" if r.compile_s is None else f"{r.compile_s:.1f}") for r in rows],
    )  # fmt: skip
    m = machine()
    print(f"\n{m['cpu']}, {m['cores']} cores, {m['torch_threads']} torch threads, "
          f"torch {m['torch']}; speed-up: images/s over the first comparison model's")  # fmt: skip
    return 0
