"""Benchmark: does reduced precision through ``zoo.optimize`` keep a pretrained model's answers?

``mobilenetv2_1_0_tf`` with real weights (TensorFlow's TFLite release, converted by zoo's hub from
the offline mirror ``../shared/weights/tflite_mobilenet``) on Imagenette's val split (3925
images, the weights' own preprocessing). ``zoo.optimize`` in fp32, bf16 and fp16 see the same
decoded batches; the eager model runs on every 4th batch (the check that optimize's fp32 is the
model). Reported, against the issue's targets:

* 10-way top-1 (restricted to Imagenette's classes) and 1000-way top-1 of each run;
* bf16's / fp16's 1000-way top-1 agreement with fp32, how often fp32's top-1 is inside their
  top-5, the mean and largest logit difference;
* **why** they disagree: fp32's top-1 - top-2 margin (quantiles) and the largest margin among
  the images whose top-1 changed: a flip only where two classes nearly tie is rounding noise;
* **where** the error enters: on the first batch, the relative L2 error of the bf16 features
  after the stem, after each block and after the last conv (bf16 vs fp32, same input).

    python benchmarks/bf16_accuracy.py                      # -> results/bf16_accuracy.json
    python benchmarks/bf16_accuracy.py --limit-per-class 10 --out /tmp/acc.json   # quick try
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's zoo, not an installed one

SHARED = ROOT.parent / "shared"
DATA = SHARED / "data" / "imagenette2_160" / "val"
MIRROR = SHARED / "weights" / "tflite_mobilenet"
RESULT = ROOT / "benchmarks" / "results" / "bf16_accuracy.json"
MODEL = "mobilenetv2_1_0_tf"
EAGER_EVERY = 4  # the eager model runs on every 4th batch only (the slowest run)
# The targets for bf16 (fp16 is held to the same).
TARGETS = {
    "top1_10way_drop_points": ("<=", 0.5),
    "top1_1000way_agreement": (">=", 96.0),
    "fp32_top1_in_top5": (">=", 99.5),
}


def measure(limit_per_class: int | None = None, workers: int = 1) -> dict:
    """Everything in the module docstring, with the pretrained weights in a throwaway cache."""
    with tempfile.TemporaryDirectory() as home:
        os.environ.update(ZOO_HOME=home, ZOO_MIRROR=str(MIRROR), ZOO_OFFLINE="1", ZOO_QUIET="1")
        return _measure(limit_per_class, workers)


def _measure(limit_per_class: int | None, workers: int) -> dict:
    import torch
    from torchvision.datasets import ImageFolder

    import zoo
    from zoo.inference import _first_per_class, class_mapping
    from zoo.labels import resolve_labels

    model = zoo.get_model(MODEL, pretrained=True).eval()
    cfg = model.pretrained_cfg
    dataset = ImageFolder(str(DATA), transform=zoo.get_transforms(model))
    if limit_per_class:
        dataset.samples = _first_per_class(dataset.samples, limit_per_class)
    mapping = torch.tensor(class_mapping(dataset.classes, resolve_labels(cfg.labels)))
    loader = torch.utils.data.DataLoader(dataset, batch_size=50, num_workers=workers)
    runs = {
        "fp32": zoo.optimize(model),
        "bf16": zoo.optimize(model, dtype="bfloat16"),
        "fp16": zoo.optimize(model, dtype="float16"),
        "eager_fp32": lambda x: model(x),
    }
    offset = cfg.label_offset
    logits: dict[str, list[torch.Tensor]] = {k: [] for k in runs}
    seconds = dict.fromkeys(runs, 0.0)
    truths, checked, stages = [], [], None
    with torch.no_grad():
        for batch, (images, targets) in enumerate(loader):
            if stages is None:
                stages = stage_errors(runs["fp32"], runs["bf16"], images)
            truths.append(mapping[targets])
            for key, run in runs.items():
                if key == "eager_fp32" and batch % EAGER_EVERY:
                    continue
                start = time.perf_counter()
                out = run(images)
                seconds[key] += time.perf_counter() - start
                logits[key].append(out[:, offset:].float())
            if batch % EAGER_EVERY == 0:
                checked.append(logits["fp32"][-1])
            print(f"{sum(len(t) for t in truths)} images", file=sys.stderr, flush=True)
    truth = torch.cat(truths)
    eager = torch.cat(logits.pop("eager_fp32"))
    seconds.pop("eager_fp32")
    optimized_subset = torch.cat(checked)
    z = {k: torch.cat(v) for k, v in logits.items()}
    n = len(truth)
    per_run = {
        k: {
            "top1_1000way": _pct(v.argmax(1) == truth),
            "top1_10way": _pct(mapping[v[:, mapping].argmax(1)] == truth),
            "images_per_s_model_only": round(n / seconds[k], 1),
        }
        for k, v in z.items()
    }
    top2 = z["fp32"].topk(2, dim=1).values
    margin = top2[:, 0] - top2[:, 1]
    levels = {"1%": 0.01, "5%": 0.05, "10%": 0.1, "50%": 0.5}
    quantiles = torch.quantile(margin, torch.tensor(list(levels.values())))
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "model": MODEL,
        "weights": str(cfg.weights),
        "split": "data/imagenette2_160/val",
        "images": n,
        "subset": f"first {limit_per_class} images per class" if limit_per_class else None,
        "runs": per_run,
        "fp32_top1_margin_quantiles": {
            q: round(float(v), 4) for q, v in zip(levels, quantiles, strict=True)
        },
        "bf16_vs_fp32": versus(z["bf16"], z["fp32"], per_run["fp32"], per_run["bf16"], margin),
        "fp16_vs_fp32": versus(z["fp16"], z["fp32"], per_run["fp32"], per_run["fp16"], margin),
        "bf16_stage_relative_error": stages,
        "optimized_fp32_vs_eager": {
            "images": len(eager),
            "max_abs_logit_diff": float((optimized_subset - eager).abs().max()),
            "max_abs_logit": float(eager.abs().max()),
            "top1_1000way_agreement": _pct(optimized_subset.argmax(1) == eager.argmax(1)),
        },
    }


def _pct(hits) -> float:
    return round(100.0 * float(hits.float().mean()), 2)


def versus(low, fp32, fp32_run: dict, low_run: dict, margin) -> dict:
    """A reduced-precision run against fp32 on the same images, and the issue's targets."""
    flipped = low.argmax(1) != fp32.argmax(1)
    diff = (low - fp32).abs()
    result = {
        "top1_10way_drop_points": round(fp32_run["top1_10way"] - low_run["top1_10way"], 2),
        "top1_1000way_agreement": _pct(~flipped),
        "fp32_top1_in_top5": _pct((low.topk(5, dim=1).indices == fp32.argmax(1)[:, None]).any(1)),
        "mean_abs_logit_diff": round(float(diff.mean()), 4),
        "max_abs_logit_diff": round(float(diff.max()), 4),
        "flipped": int(flipped.sum()),
        "largest_fp32_margin_flipped": round(float(margin[flipped].max()), 4)
        if flipped.any()
        else None,
    }
    result["targets_met"] = {
        key: (result[key] <= bound if op == "<=" else result[key] >= bound)
        for key, (op, bound) in TARGETS.items()
    }
    return result


def stage_errors(fp32, bf16, images) -> dict[str, float]:
    """Relative L2 error of bf16's activations after each stage (stem, blocks, last conv)."""
    import torch

    names = ["stem", *(f"blocks.{i}" for i in range(len(fp32.model.blocks))), "conv_head"]
    seen: dict[str, dict[str, torch.Tensor]] = {"fp32": {}, "bf16": {}}
    handles = []
    for key, run in (("fp32", fp32), ("bf16", bf16)):
        for name in names:
            module = run.model.get_submodule(name)
            handles.append(
                module.register_forward_hook(
                    lambda _m, _a, out, key=key, name=name: seen[key].__setitem__(name, out.float())
                )
            )
    try:
        fp32(images), bf16(images)
    finally:
        for handle in handles:
            handle.remove()
    return {
        name: round(float((seen["bf16"][name] - ref).norm() / ref.norm()), 5)
        for name, ref in seen["fp32"].items()
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit-per-class", type=int, help="a subset: the first N per class")
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers")
    parser.add_argument("--out", type=Path, default=RESULT, help="where the JSON goes")
    parser.add_argument("--json", action="store_true", help="print the JSON, not a summary")
    args = parser.parse_args()
    if not DATA.is_dir() or not MIRROR.is_dir():
        print(f"error: needs {DATA} and {MIRROR} (../shared)", file=sys.stderr)
        return 2

    from zoo.benchmark import machine

    result = {"machine": machine(), **measure(args.limit_per_class, args.workers)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key in ("bf16_vs_fp32", "fp16_vs_fp32"):
            print(key, json.dumps(result[key]))
        print("runs", json.dumps(result["runs"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
