"""``zoo download`` and ``zoo env``."""

from __future__ import annotations

import argparse
import os
import platform

import zoo
from zoo.cli.output import human_size, print_json
from zoo.hub import is_offline, zoo_home
from zoo.hub.config import mirrors
from zoo.weights import ensure_checkpoint, find_entry
from zoo.weights.manifest import manifest_files


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("download", help="fetch, verify and convert weights into the cache")
    p.add_argument("names", nargs="+", metavar="NAME", help="architecture, or arch.tag")
    p.add_argument("--tag", help="weights tag for every NAME (default: each arch's default)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run_download)

    p = sub.add_parser("env", help="versions, cache, mirror/offline settings, CPU features")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run_env)


def _split(name: str, tag: str | None) -> tuple[str, str | None]:
    if "." in name and tag is None:
        arch, _, maybe_tag = name.rpartition(".")
        if maybe_tag.isidentifier():  # "mobilenet1.0" is an alias, not arch.tag
            try:
                zoo.registry.canonical_name(name)
            except KeyError:
                return arch, maybe_tag
    return name, tag


def run_download(args: argparse.Namespace) -> int:
    done = []
    for name in args.names:
        arch, tag = _split(name, args.tag)
        entry = find_entry(arch, tag)
        path = ensure_checkpoint(entry, quiet=True if args.quiet else None)
        done.append({"weights": entry.name, "path": str(path), "size": path.stat().st_size})
        if not args.json:
            print(f"{entry.name}: {path} ({human_size(path.stat().st_size)})")
    if args.json:
        print_json(done)
    return 0


def environment() -> dict[str, object]:
    import torch
    import torchvision

    cpu = {
        "capability": torch.backends.cpu.get_cpu_capability(),  # e.g. AVX2, AVX512
        "bf16": _cpu_has_bf16(),
        "threads": torch.get_num_threads(),
    }
    return {
        "zoo": zoo.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "platform": platform.platform(),
        "cuda_available": torch.cuda.is_available(),
        "cpu": cpu,
        "zoo_home": str(zoo_home()),
        "offline": is_offline(),
        "mirrors": mirrors(),
        "manifests": [str(p) for p in manifest_files()],
        "proxies": {k: v for k, v in os.environ.items() if k.lower().endswith("_proxy")},
        "ca_bundle": os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("SSL_CERT_FILE"),
    }


def _cpu_has_bf16() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            flags = f.read()
    except OSError:  # not Linux: unknown, report False rather than guess
        return False
    return any(flag in flags.split() for flag in ("avx512_bf16", "amx_bf16"))


def run_env(args: argparse.Namespace) -> int:
    env = environment()
    if args.json:
        print_json(env)
        return 0
    for key, value in env.items():
        print(f"{key:15} {value}")
    return 0
