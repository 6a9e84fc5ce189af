"""``zoo list [PATTERN]`` and ``zoo info NAME``."""

from __future__ import annotations

import argparse

import zoo
from zoo.cli.output import human_count, human_size, print_json, print_table
from zoo.factory import float32_bytes
from zoo.registry import get_spec
from zoo.weights import checkpoint_path


def add_list_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("patterns", nargs="*", default=["*"], metavar="PATTERN")
    p.add_argument("--pretrained", action="store_true", help="only architectures with weights")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def add_info_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="model name or alias, e.g. resnet50_v1d or mobilenet1.0")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def run_list(args: argparse.Namespace) -> int:
    if args.pretrained:
        return _list_weights(args)
    names = zoo.list_models(args.patterns, pretrained=args.pretrained)
    if args.json:
        print_json(
            [
                {"name": n, "family": get_spec(n).family, "description": get_spec(n).doc}
                for n in names
            ]
        )
    elif names:
        print_table(
            ["name", "family", "description"],
            [(n, get_spec(n).family, get_spec(n).doc) for n in names],
        )
    else:
        print(f"no model matches {' '.join(args.patterns)}")
        return 1
    return 0


def run_info(args: argparse.Namespace) -> int:
    info = zoo.model_info(args.name)
    if args.json:
        print_json(info)
        return 0
    print(f"{info.name}  ({info.family} family)")
    if info.description:
        print(f"  {info.description}")
    if info.aliases:
        print(f"  aliases: {', '.join(info.aliases)}")
    print(
        f"  parameters: {info.num_params:,} ({human_count(info.num_params)}), "
        f"BN running statistics: {info.num_running_stats:,}"
    )
    pre = info.preprocess
    print(
        f"  eval preprocessing: resize {pre.resize}, crop {pre.crop}, {pre.interpolation}, "
        f"mean {pre.mean}, std {pre.std}"
    )
    print(
        "  stages: "
        + ", ".join(f"{f.module} ({f.num_chs} ch, /{f.reduction})" for f in info.feature_info)
    )
    print("  config:")
    for field, value in vars(info.config).items():
        print(f"    {field} = {value!r}")
    if info.weights:
        print("  weights:")
        for w in info.weights:
            top1 = w.published_top1()
            print(
                f"    {w.tag}{' (default)' if w.default else ''}: "
                f"{f'top-1 {top1:.2f}, ' if top1 else ''}{w.license}; {w.provenance}"
            )
    else:
        print("  weights: none in the catalogue")
    return 0


def _list_weights(args: argparse.Namespace) -> int:
    names = set(zoo.list_models(args.patterns, pretrained=True))
    entries = [e for e in zoo.list_weights() if e.arch in names]
    rows = []
    for e in sorted(entries, key=lambda e: (e.arch, not e.default, e.tag)):
        path = checkpoint_path(e)
        size = path.stat().st_size if path.is_file() else float32_bytes(get_spec(e.arch))
        rows.append(
            {
                "arch": e.arch,
                "tag": e.tag + ("*" if e.default and not args.json else ""),
                "top1": e.published_top1(),
                "size": size,
                "license": e.license,
                "cached": path.is_file(),
            }
        )
    if args.json:
        print_json(rows)
        return 0
    if not rows:
        print("no weights match")
        return 1
    table = [
        (r["arch"], r["tag"], f"{r['top1']:.2f}" if r["top1"] else "-",
         human_size(r["size"]), r["license"], "yes" if r["cached"] else "")
        for r in rows
    ]  # fmt: skip
    print_table(["arch", "tag", "top-1", "size", "license", "cached"], table)
    print("* default tag")
    return 0
