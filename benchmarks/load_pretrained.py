"""Benchmark: load pretrained ResNet-50-D weights from a warm cache, zoo vs timm.

Both load the *same* weights (a timm resnet50d state dict, random values, saved as safetensors):
timm through ``pretrained_cfg_overlay=dict(file=...)``, zoo through a manifest entry (passed in
``ZOO_MANIFESTS``) whose converted checkpoint is already in ``$ZOO_HOME``. Each measurement is a
fresh subprocess; the two libraries alternate so machine noise hits both alike. Peak RSS growth
is measured from the RSS after ``import torch, zoo, timm`` (peak counter reset there).

    python benchmarks/load_pretrained.py [--repeats 7] [--json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, sys, time
import torch, zoo, timm
import zoo.factory  # zoo imports its model code lazily (PEP 562): not part of loading weights

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
    raise KeyError(key)

open("/proc/self/clear_refs", "w").write("5")  # reset the peak-RSS counter
base = status("VmRSS:")
lib, weights = sys.argv[1], sys.argv[2]
t0 = time.perf_counter()
if lib == "zoo":
    model = zoo.get_model("resnet50_v1d", pretrained="bench_in1k")
else:
    model = timm.create_model("resnet50d", pretrained=True,
                              pretrained_cfg_overlay=dict(file=weights))
elapsed = time.perf_counter() - t0
growth = status("VmHWM:") - base
# zoo maps the file lazily (pages are read on first use): time a first forward too, so the
# comparison also holds once every weight has really been read.
with torch.no_grad():
    model.eval()(torch.zeros(1, 3, 224, 224))
print(json.dumps({"seconds": elapsed, "peak_growth": growth,
                  "with_forward": time.perf_counter() - t0}))
"""


def make_weights(folder: Path) -> tuple[Path, Path]:
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = timm.create_model("resnet50d")
    weights = folder / "resnet50d.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    sha256 = hashlib.sha256(weights.read_bytes()).hexdigest()
    manifest = folder / "bench_manifest.json"
    entry = {
        "arch": "resnet50_v1d", "tag": "bench_in1k", "default": True, "num_classes": 1000,
        "labels": "imagenet-1k", "license": "apache-2.0", "provenance": "benchmark, random",
        "preprocess": {"crop": 224, "resize": 256},
        "artifacts": [{"format": "timm", "files": [
            {"name": weights.name, "sources": [str(weights)], "sha256": sha256}]}],
    }  # fmt: skip
    manifest.write_text(json.dumps({"format_version": 1, "weights": [entry]}))
    return weights, manifest


def run_child(lib: str, weights: Path, env: dict[str, str]) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, lib, str(weights)], env=env, check=True,
        capture_output=True, text=True,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        weights, manifest = make_weights(folder)
        env = dict(os.environ, ZOO_HOME=str(folder / "home"), ZOO_MANIFESTS=str(manifest),
                   ZOO_OFFLINE="1", ZOO_QUIET="1")  # fmt: skip
        run_child("zoo", weights, env)  # warm the cache: fetch from the local path + convert
        results: dict[str, list[dict[str, float]]] = {"zoo": [], "timm": []}
        for _ in range(args.repeats):
            for lib in ("zoo", "timm"):
                results[lib].append(run_child(lib, weights, env))
        size = weights.stat().st_size
    summary = {
        "weights_bytes": size,
        "repeats": args.repeats,
        "torch_threads": os.environ.get("OMP_NUM_THREADS", "default"),
    }
    for lib, runs in results.items():
        summary[f"{lib}_median_s"] = statistics.median(r["seconds"] for r in runs)
        summary[f"{lib}_with_first_forward_median_s"] = statistics.median(
            r["with_forward"] for r in runs
        )
        summary[f"{lib}_peak_rss_growth_x_weights"] = (
            statistics.median(r["peak_growth"] for r in runs) / size
        )
    summary["zoo_over_timm_time"] = summary["zoo_median_s"] / summary["timm_median_s"]
    summary["zoo_over_timm_with_first_forward"] = (
        summary["zoo_with_first_forward_median_s"] / summary["timm_with_first_forward_median_s"]
    )
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        for key, value in summary.items():
            print(f"{key:36} {value:.3f}" if isinstance(value, float) else f"{key:36} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
