"""Generate the README's tables so they cannot drift: the weights table from the manifest and the
registry, the recipes table from the packaged recipes' own descriptions.

python -m zoo.docs            # rewrite the tables in README.md
python -m zoo.docs --check    # exit 1 if README.md is stale (the test suite does this too)
"""

from __future__ import annotations

import argparse
import math
import sys
from functools import cache
from pathlib import Path

import torch
from torch import nn

from zoo.factory import count_parameters, float32_bytes
from zoo.registry import get_spec
from zoo.weights import Metric, WeightsEntry
from zoo.weights.manifest import packaged_manifest, parse_manifest

README = Path(__file__).resolve().parents[1] / "README.md"


@cache
def gmacs(arch: str, size: int) -> float:
    """Multiply-accumulates of one forward at size x size (the paper's "FLOPs"), computed.

    Counted from the output shape of every convolution and linear layer (the only layers with
    MACs in these networks) in a forward on the meta device: the same totals as torch's
    FlopCounterMode / 2, at a fraction of its cost, which matters with a row per weights tag.
    """
    spec = get_spec(arch)
    with torch.device("meta"):
        model = spec.build(spec.config).eval()
        x = torch.empty(1, 3, size, size)
    macs = 0

    def count(module: nn.Module, _inputs: object, out: torch.Tensor) -> None:
        nonlocal macs
        if isinstance(module, nn.Conv2d):
            per_output = module.in_channels // module.groups * math.prod(module.kernel_size)
        else:
            per_output = module.in_features
        macs += out.numel() * per_output

    layers = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    hooks = [m.register_forward_hook(count) for m in layers]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for hook in hooks:
            hook.remove()
    return macs / 1e9


def _metric(entry: WeightsEntry, by_zoo: bool) -> str:
    chosen = [m for m in entry.metrics if (m.source == "zoo") == by_zoo]
    if not chosen:
        return "-"
    return "; ".join(_one_metric(m) for m in (chosen if by_zoo else chosen[:1]))


def _one_metric(m: Metric) -> str:
    top = f"{m.top1:.2f} / {m.top5:.2f}" if m.top5 is not None else f"{m.top1:.2f}"
    where = m.source if m.dataset == "imagenet-1k-val" else f"{m.source}, {m.dataset}"
    at = f" @ {m.img_size}" if m.img_size else ""
    return f"{top} ({where}{at})"


def _license(entry: WeightsEntry) -> str:
    return f"{entry.license} (non-commercial)" if entry.non_commercial else entry.license


@cache
def _arch_columns(arch: str) -> tuple[str, str]:
    """Parameters and the zoo checkpoint's size (float32 tensors), computed once per arch."""
    spec = get_spec(arch)
    params, _ = count_parameters(spec)
    return f"{params / 1e6:.2f}M", f"{float32_bytes(spec) / 2**20:.1f} MiB"


def weights_table() -> str:
    headers = [
        "arch", "tag", "top-1 / top-5 published (by)", "measured by zoo", "params", "GMACs @ crop",
        "checkpoint", "license", "sources",
    ]  # fmt: skip
    rows = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    # The packaged manifest only: a user's ZOO_MANIFESTS must not make the README "stale".
    entries = parse_manifest(packaged_manifest())
    for e in sorted(entries, key=lambda e: (e.arch, not e.default, e.tag)):
        params, size = _arch_columns(e.arch)
        crop = e.preprocess.crop
        formats = " → ".join(dict.fromkeys(a.format for a in e.artifacts))
        rows.append(
            f"| {e.arch} | {e.tag}{' (default)' if e.default else ''} | {_metric(e, False)} | "
            f"{_metric(e, True)} | {params} | {gmacs(e.arch, crop):.3g} @ {crop} | "
            f"{size} | {_license(e)} | {formats} |"
        )
    return "\n".join(rows)


def recipes_table() -> str:
    from zoo.training.recipe import list_recipes, resolve

    rows = ["| recipe | what it is (its `description`) |", "|---|---|"]
    rows += [f"| `{name}` | {resolve(name).description} |" for name in list_recipes()]
    return "\n".join(rows)


TABLES = {"weights-table": weights_table, "recipes-table": recipes_table}


def render(readme: str) -> str:
    for name, table in TABLES.items():
        start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
        if start not in readme or end not in readme:
            raise ValueError(f"README.md needs the markers {start} and {end}")
        head, rest = readme.split(start, 1)
        _, tail = rest.split(end, 1)
        readme = f"{head}{start}\n{table()}\n{end}{tail}"
    return readme


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if README.md is stale")
    args = parser.parse_args(argv)
    current = README.read_text(encoding="utf-8")
    fresh = render(current)
    if args.check:
        if fresh != current:
            print("README.md's tables are stale: run python -m zoo.docs", file=sys.stderr)
            return 1
        return 0
    README.write_text(fresh, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
