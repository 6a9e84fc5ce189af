"""``zoo download`` and ``zoo env``.

``zoo download`` stays torch-free unless something has to be converted: finding the entry,
planning (``--dry-run``) and recognising an already converted checkpoint need no torch.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys

import zoo
from zoo.cli.output import human_size, print_json
from zoo.errors import is_anticipated, user_message
from zoo.hub import is_offline, local_caches, zoo_home
from zoo.hub.config import mirrors
from zoo.weights import (
    ArtifactPlan,
    FilePlan,
    WeightsEntry,
    checkpoint_path,
    converted_checkpoint,
    ensure_checkpoint,
    find_entry,
    list_weights,
    plan_artifacts,
)
from zoo.weights.manifest import manifest_files


def add_download_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("names", nargs="+", metavar="NAME", help="architecture, or arch.tag")
    p.add_argument("--tag", help="weights tag for every NAME (default: each arch's default)")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="say what would be fetched and from where; fetch and convert nothing",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def add_env_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _entry_for(name: str, tag: str | None) -> WeightsEntry:
    """NAME is an architecture (or alias) or ``arch.tag``; ``mobilenet1.0`` is an alias."""
    if tag is None:
        exact = [e for e in list_weights(name) if e.name == name]  # arch.tag, no registry
        if exact:
            return exact[0]
        arch, _, maybe_tag = name.rpartition(".")
        if arch and maybe_tag.isidentifier():  # an alias's dot is followed by digits
            from zoo.registry import canonical_name  # imports the model families

            try:
                canonical_name(name)
            except KeyError:
                return find_entry(arch, maybe_tag)
    return find_entry(name, tag)


def run_download(args: argparse.Namespace) -> int:
    entries = [_entry_for(name, args.tag) for name in args.names]  # every name checked first
    if args.dry_run:
        return _dry_run(entries, args.json)
    done: list[dict[str, object]] = []
    for entry in entries:  # one failure does not stop the others: each is reported
        try:
            path = ensure_checkpoint(entry, quiet=True if args.quiet else None)
        except Exception as err:
            if not is_anticipated(err):
                raise
            done.append({"weights": entry.name, "error": user_message(err)})
            print(f"zoo download: error: {entry.name}: {user_message(err)}", file=sys.stderr)
            continue
        done.append({"weights": entry.name, "path": str(path), "size": path.stat().st_size})
        if not args.json:
            print(f"{entry.name}: {path} ({human_size(path.stat().st_size)})")
    if args.json:
        print_json(done)
    failed = sum("error" in d for d in done)
    if failed and len(done) > 1:
        print(f"zoo download: {failed} of {len(done)} weights failed", file=sys.stderr)
    return 2 if failed else 0


def _dry_run(entries: list[WeightsEntry], as_json: bool) -> int:
    plans = []
    for entry in entries:
        converted = converted_checkpoint(entry)
        artifacts = [] if converted else plan_artifacts(entry)
        plans.append(
            {
                "weights": entry.name,
                "checkpoint": str(checkpoint_path(entry)),
                "converted": converted is not None,
                "artifacts": [_artifact_json(a) for a in artifacts],
            }
        )
        if not as_json:
            _print_plan(entry, converted is not None, artifacts)
    if as_json:
        print_json(plans)
    return 0


def _artifact_json(plan: ArtifactPlan) -> dict[str, object]:
    return {
        "index": plan.index,
        "format": plan.artifact.format,
        "files": [
            {
                "name": f.file.name,
                "member": f.file.member,
                "origin": f.origin,
                "locations": list(f.locations),
                "note": f.note,
                "verified_by": _hash_text(f),
            }
            for f in plan.files
        ],
    }


def _hash_text(plan: FilePlan) -> str:
    file = plan.file
    if file.sha256:
        return f"sha256 {file.sha256}"
    if file.sha1:
        return f"sha1 {file.sha1}"
    vouched = next((c.sha256 for c in plan.local if c.sha256), None)
    if vouched:  # e.g. the Hugging Face cache names each blob by its sha256
        return f"sha256 {vouched}, as named in the {plan.origin}"
    return "trust on first use"


def _print_plan(entry: WeightsEntry, converted: bool, artifacts: list[ArtifactPlan]) -> None:
    out = checkpoint_path(entry)
    if converted:
        print(f"{entry.name}: already converted at {out}; nothing to fetch")
        return
    print(f"{entry.name}: would fetch, verify and convert into {out}")
    for position, plan in enumerate(artifacts):  # local ones first: not the manifest's order
        fallback = "" if position == 0 else ", only if the ones before fail"
        print(f"  artifact {plan.index} ({plan.artifact.format}{fallback}):")
        for f in plan.files:
            name = f"{f.file.name}:{f.file.member}" if f.file.member else f.file.name
            note = f" ({f.note})" if f.note else ""
            print(f"    {name}  [{_hash_text(f)}]")
            print(f"      {f.origin}: {' | '.join(f.locations)}{note}")


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
        "local_caches": _local_caches(),
        "proxies": {k: v for k, v in os.environ.items() if k.lower().endswith("_proxy")},
        "ca_bundle": os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("SSL_CERT_FILE"),
    }


def _local_caches() -> dict[str, str] | str:
    """Other libraries' caches searched before any download (zoo.hub.local_caches)."""
    if not local_caches.enabled():
        return "off (ZOO_LOCAL_CACHES=0)"
    return {
        origin: f"{path}{'' if path.is_dir() else ' (absent)'}"
        for origin, path in local_caches.cache_locations().items()
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
