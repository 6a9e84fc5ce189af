"""Generate the README's weights table from the manifest and the registry, so it cannot drift.

python -m zoo.docs            # rewrite the table in README.md
python -m zoo.docs --check    # exit 1 if README.md is stale (the test suite does this too)
"""

from __future__ import annotations

import argparse
import sys
from functools import cache
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from zoo.factory import count_parameters, float32_bytes
from zoo.registry import get_spec
from zoo.weights import Metric, WeightsEntry
from zoo.weights.manifest import packaged_manifest, parse_manifest

START, END = "<!-- weights-table:start -->", "<!-- weights-table:end -->"
README = Path(__file__).resolve().parents[1] / "README.md"


@cache
def gmacs(arch: str, size: int) -> float:
    """Multiply-accumulates of one forward at size x size (the paper's "FLOPs"), computed."""
    spec = get_spec(arch)
    with torch.device("meta"):
        model = spec.build(spec.config).eval()
        x = torch.empty(1, 3, size, size)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    return counter.get_total_flops() / 2 / 1e9


def _metric(entry: WeightsEntry, by_zoo: bool) -> str:
    chosen = [m for m in entry.metrics if (m.source == "zoo") == by_zoo]
    if not chosen:
        return "-"
    return "; ".join(_one_metric(m) for m in (chosen if by_zoo else chosen[:1]))


def _one_metric(m: Metric) -> str:
    top = f"{m.top1:.2f} / {m.top5:.2f}" if m.top5 is not None else f"{m.top1:.2f}"
    where = m.source if m.dataset == "imagenet-1k-val" else f"{m.source}, {m.dataset}"
    return f"{top} ({where})"


def _size(entry: WeightsEntry) -> str:
    """The zoo checkpoint's size: float32 tensors, computed from the architecture."""
    return f"{float32_bytes(get_spec(entry.arch)) / 2**20:.1f} MiB"


def weights_table() -> str:
    headers = [
        "arch", "tag", "top-1 / top-5 published (by)", "measured by zoo", "params", "GMACs @ crop",
        "checkpoint", "license", "sources",
    ]  # fmt: skip
    rows = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    # The packaged manifest only: a user's ZOO_MANIFESTS must not make the README "stale".
    entries = parse_manifest(packaged_manifest())
    for e in sorted(entries, key=lambda e: (e.arch, not e.default, e.tag)):
        params, _ = count_parameters(get_spec(e.arch))
        crop = e.preprocess.crop
        formats = " → ".join(dict.fromkeys(a.format for a in e.artifacts))
        rows.append(
            f"| {e.arch} | {e.tag}{' (default)' if e.default else ''} | {_metric(e, False)} | "
            f"{_metric(e, True)} | {params / 1e6:.2f}M | {gmacs(e.arch, crop):.3g} @ {crop} | "
            f"{_size(e)} | {e.license} | {formats} |"
        )
    return "\n".join(rows)


def render(readme: str) -> str:
    if START not in readme or END not in readme:
        raise ValueError(f"README.md needs the markers {START} and {END}")
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{weights_table()}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if README.md is stale")
    args = parser.parse_args(argv)
    current = README.read_text(encoding="utf-8")
    fresh = render(current)
    if args.check:
        if fresh != current:
            print("README.md weights table is stale: run python -m zoo.docs", file=sys.stderr)
            return 1
        return 0
    README.write_text(fresh, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
