"""Benchmark: CLI start-up before and after the lazy imports (issue 8, "fast start").

Each command runs in a fresh interpreter, ``--runs`` times, and the median wall time is kept.
"Before" and "after" are two git worktrees (``--before``, default the last commit before the
change, and ``--after``, default HEAD) checked out into temporary folders and removed at the
end; runs alternate between them so machine noise hits both alike. ``import torch`` alone is
the floor the old start-up could not go below. The converted-download case uses a random
torchvision ResNet-18 served from a local path, converted once (by the "before" tree) before
timing; both trees then share that ``$ZOO_HOME``.

    python benchmarks/startup.py [--runs 7] [--before REV] [--after REV] [--out FILE]
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEFORE = "fe6b144^"  # the commit before "Torch-free weights catalogue" (issue 8)
ENTRY = "resnet18_v1b.startup_in1k"

# label -> (arguments after the interpreter, needs the after-tree features)
COMMANDS: dict[str, tuple[list[str], bool]] = {
    "import torch": (["-c", "import torch"], False),
    "import zoo.hub": (["-c", "import zoo.hub"], False),
    "zoo --version": (["-m", "zoo", "--version"], False),
    "zoo cache ls": (["-m", "zoo", "cache", "ls"], False),
    "zoo download (already converted)": (["-m", "zoo", "download", "--quiet", ENTRY], False),
    "zoo download --dry-run resnet18_v1b": (
        ["-m", "zoo", "download", "--dry-run", "resnet18_v1b"],
        True,  # the flag is new: nothing to compare with
    ),
}


def git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True, text=True)
    return done.stdout.strip()


def make_manifest(folder: Path) -> Path:
    import torch
    import torchvision
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None)
    weights = folder / "r18_startup.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    sha256 = hashlib.sha256(weights.read_bytes()).hexdigest()
    arch, tag = ENTRY.split(".")
    entry = {
        "arch": arch, "tag": tag, "default": False, "num_classes": 1000,
        "labels": "imagenet-1k", "license": "apache-2.0", "provenance": "benchmark, random",
        "preprocess": {"crop": 224, "resize": 256},
        "artifacts": [{"format": "torchvision", "files": [
            {"name": weights.name, "sources": [str(weights)], "sha256": sha256}]}],
    }  # fmt: skip
    manifest = folder / "startup_manifest.json"
    manifest.write_text(json.dumps({"format_version": 1, "weights": [entry]}))
    return manifest


def run(tree: Path, args: list[str], env: dict[str, str]) -> float:
    """Seconds for one fresh interpreter; the tree's own zoo comes first on sys.path (cwd)."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, *args], cwd=tree, env=env, check=True, capture_output=True)
    return time.perf_counter() - t0


def machine() -> dict[str, object]:
    import torch

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "load_average_at_start": os.getloadavg()[0],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--before", default=BEFORE, help=f"git revision (default {BEFORE})")
    parser.add_argument("--after", default="HEAD", help="git revision (default HEAD)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/startup.json")
    args = parser.parse_args()
    info = machine()
    revisions = {"before": git("rev-parse", args.before), "after": git("rev-parse", args.after)}
    times: dict[str, dict[str, list[float]]] = {label: {} for label in COMMANDS}
    with tempfile.TemporaryDirectory(prefix="zoo_startup_") as tmp:
        folder = Path(tmp)
        manifest = make_manifest(folder)
        trees = {side: folder / side for side in revisions}
        try:
            # One ZOO_HOME for both trees (the checkpoint layout did not change), converted
            # once by the "before" tree, so both time the same already-converted download.
            env = dict(os.environ, ZOO_HOME=str(folder / "home"), ZOO_MANIFESTS=str(manifest),
                       ZOO_OFFLINE="1", ZOO_QUIET="1")  # fmt: skip
            env.pop("PYTHONPATH", None)
            for side, rev in revisions.items():
                git("worktree", "add", "--detach", str(trees[side]), rev)
            run(trees["before"], COMMANDS["zoo download (already converted)"][0], env)
            for _ in range(args.runs):
                for label, (argv, new) in COMMANDS.items():
                    for side in revisions:
                        if side == "before" and new:
                            continue
                        times[label].setdefault(side, []).append(run(trees[side], argv, env))
        finally:
            for tree in trees.values():
                if tree.exists():
                    git("worktree", "remove", "--force", str(tree))
    info["load_average_at_end"] = os.getloadavg()[0]
    results = {
        label: {
            **{f"{side}_median_s": round(statistics.median(t), 3) for side, t in sides.items()},
            **{f"{side}_runs_s": [round(x, 3) for x in t] for side, t in sides.items()},
        }
        for label, sides in times.items()
    }
    report = {
        "measured_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": info,
        "revisions": revisions,
        "runs": args.runs,
        "note": "median wall time of a fresh interpreter per run; the machine was shared with "
        "other jobs (see load averages), so compare before/after within one file only",
        "commands": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    width = max(map(len, results))
    print(f"{'command':{width}}  before (s)  after (s)")
    for label, r in results.items():
        before = f"{r['before_median_s']:.3f}" if "before_median_s" in r else "-"
        print(f"{label:{width}}  {before:>10}  {r['after_median_s']:>9.3f}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
