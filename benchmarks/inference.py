"""Benchmark: zoo.optimize vs timm / torchvision, side by side in one run, and bf16's accuracy.

Speed (``zoo.benchmark``; method in its docstring: calibrated BN, warm-up, interleaved timings,
median and min/max, fresh-process peak memory): each zoo model through ``zoo.optimize`` in fp32
and bf16 against the same network in timm / torchvision as their users run it (eager, fp32,
``torch.no_grad``), at batch 1 (latency) and 32 (throughput), on this machine's CPU threads:

* resnet50_v1d vs timm ``resnet50d``; mobilenetv2_1_0 and inceptionv3 vs torchvision's
  ``mobilenet_v2`` and ``inception_v3``.
* ``--compile`` adds torch.compile'd zoo models (compile time reported apart).

Accuracy (``--part accuracy``): ``mobilenetv2_1_0_tf`` with its real weights (TensorFlow's
TFLite release, converted by zoo's hub from the offline mirror
``../shared/weights/tflite_mobilenet``) on Imagenette's val split (3925 images, the weights' own
preprocessing): ``zoo.optimize`` in fp32, bf16 and fp16 see the same decoded batches. Reported:
10-way (restricted) and 1000-way top-1 of each, bf16's and fp16's 1000-way top-1 agreement with
fp32, how often fp32's top-1 is inside their top-5, and, on every 4th batch, the largest logit
difference between zoo.optimize's fp32 and the eager model.

    python benchmarks/inference.py               # -> results/inference_{speed,accuracy}.json, .md
    python benchmarks/inference.py --part speed  # one part; the .md shows both files
"""

from __future__ import annotations

import argparse
import dataclasses
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
RESULTS = ROOT / "benchmarks" / "results"
EAGER_EVERY = 4  # accuracy: the eager model runs on every 4th batch only
# zoo arch -> the comparison library the issue names for it
PAIRS = {"resnet50_v1d": "timm", "mobilenetv2_1_0": "torchvision", "inceptionv3": "torchvision"}
# The issue's targets: (arch, batch, dtype) -> minimum images/s ratio over the reference
# (batch 1: latency <= 0.85x the reference's, i.e. a ratio >= 1 / 0.85).
TARGETS = {
    ("resnet50_v1d", 32, "float32"): 1.5,
    ("resnet50_v1d", 1, "float32"): 1 / 0.85,
    ("mobilenetv2_1_0", 32, "float32"): 1.5,
    ("inceptionv3", 32, "float32"): 1.5,
    ("resnet50_v1d", 32, "bfloat16"): 3.0,
}


def speed(args: argparse.Namespace) -> dict:
    from zoo.benchmark import benchmark_model

    rows = []
    for arch, library in PAIRS.items():
        rows += benchmark_model(
            arch, batch_sizes=args.batch_sizes, img_size=None, dtypes=["float32", "bfloat16"],
            compare=[library], compile=args.compile, repeats=args.repeats,
            memory=not args.no_memory, log=lambda m: print(m, file=sys.stderr, flush=True),
        )  # fmt: skip
    records = [dataclasses.asdict(r) for r in rows]
    targets = []
    for (arch, batch, dtype), wanted in TARGETS.items():
        found = [
            r for r in records
            if r["model"] == arch and r["batch_size"] == batch and r["dtype"] == dtype
        ]  # fmt: skip
        for r in found:
            targets.append({
                "model": arch, "implementation": r["implementation"], "batch_size": batch,
                "dtype": dtype, "reference": PAIRS[arch], "speedup": r["speedup"],
                "target": round(wanted, 3), "met": r["speedup"] >= wanted,
            })  # fmt: skip
    return {"date": _now(), "repeats": args.repeats, "rows": records, "targets": targets}


def accuracy(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as home:
        os.environ.update(ZOO_HOME=home, ZOO_MIRROR=str(MIRROR), ZOO_OFFLINE="1", ZOO_QUIET="1")
        return _accuracy(args)


def _accuracy(args: argparse.Namespace) -> dict:
    import torch
    from torchvision.datasets import ImageFolder

    import zoo
    from zoo.inference import _first_per_class, class_mapping
    from zoo.labels import resolve_labels

    name = "mobilenetv2_1_0_tf"
    model = zoo.get_model(name, pretrained=True).eval()
    cfg = model.pretrained_cfg
    dataset = ImageFolder(str(DATA), transform=zoo.get_transforms(model))
    if args.limit_per_class:
        dataset.samples = _first_per_class(dataset.samples, args.limit_per_class)
    mapping = torch.tensor(class_mapping(dataset.classes, resolve_labels(cfg.labels)))
    loader = torch.utils.data.DataLoader(dataset, batch_size=50, num_workers=args.workers)
    # fp32 is zoo.optimize's fp32 (folded BN; within 1e-4 of eager, checked below on every
    # EAGER_EVERY-th batch: the eager model is the slowest run and the CPU is shared).
    runs = {
        "fp32": zoo.optimize(model),
        "bf16": zoo.optimize(model, dtype="bfloat16"),
        "fp16": zoo.optimize(model, dtype="float16"),
        "eager_fp32": lambda x: model(x),
    }
    offset = cfg.label_offset
    logits: dict[str, list[torch.Tensor]] = {k: [] for k in runs}
    seconds = dict.fromkeys(runs, 0.0)
    truths, checked = [], []
    with torch.no_grad():
        for batch, (images, targets) in enumerate(loader):
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
    optimized_subset = torch.cat(checked)
    z = {k: torch.cat(v) for k, v in logits.items()}
    n = len(truth)

    def pct(hits: torch.Tensor) -> float:
        return round(100.0 * float(hits.float().mean()), 2)

    per_run = {
        k: {
            "top1_1000way": pct(v.argmax(1) == truth),
            "top1_10way": pct(mapping[v[:, mapping].argmax(1)] == truth),
            "images_per_s_model_only": round(n / seconds[k], 1),
        }
        for k, v in z.items()
    }
    fp32 = z["fp32"]

    def versus(key: str) -> dict:
        low = z[key]
        return {
            "top1_10way_drop_points": round(
                per_run["fp32"]["top1_10way"] - per_run[key]["top1_10way"], 2
            ),
            "top1_1000way_agreement": pct(low.argmax(1) == fp32.argmax(1)),
            "fp32_top1_in_top5": pct(
                (low.topk(5, dim=1).indices == fp32.argmax(1)[:, None]).any(1)
            ),
            "max_abs_logit_diff": round(float((low - fp32).abs().max()), 4),
        }

    return {
        "date": _now(),
        "model": name,
        "weights": str(cfg.weights),
        "split": "data/imagenette2_160/val",
        "images": n,
        "runs": per_run,
        "bf16_vs_fp32": versus("bf16"),
        "fp16_vs_fp32": versus("fp16"),
        "optimized_fp32_vs_eager": {
            "images": len(eager),
            "max_abs_logit_diff": float((optimized_subset - eager).abs().max()),
            "max_abs_logit": float(eager.abs().max()),
            "top1_1000way_agreement": pct(optimized_subset.argmax(1) == eager.argmax(1)),
        },
    }


def markdown(results: dict) -> str:
    lines = ["# zoo.optimize vs timm / torchvision (generated by benchmarks/inference.py)", ""]
    for part in results.values():
        m = part["machine"]
        lines += [
            f"Machine: {m['cpu']}, {m['cores']} cores, {m['torch_threads']} torch threads, "
            f"torch {m['torch']}, Python {m['python']}.",
            "",
        ]
        break
    if "speed" in results:
        s = results["speed"]
        lines += [
            "## Speed",
            "",
            f"Measured {s['date']}. Interleaved timings ({s['repeats']} each after warm-up), "
            "median with min-max; "
            "speed-up = images/s over the reference's at the same batch size; peak memory from a "
            "fresh process (zoo: the original model and its optimized copy).",
            "",
            "| model | implementation | dtype | batch | ms (median) | min-max ms | images/s | "
            "speed-up | peak MiB | compile s |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in s["rows"]:
            lines.append(
                f"| {r['model']} | {r['implementation']} | {r['dtype']} | {r['batch_size']} | "
                f"{r['median_ms']:.1f} | {r['min_ms']:.1f}-{r['max_ms']:.1f} | "
                f"{r['images_per_s']:.1f} | {_x(r['speedup'])} | {_opt(r['peak_memory_mib'])} | "
                f"{_opt(r['compile_s'])} |"
            )
        lines += ["", "### The issue's targets", "", "| target | measured | met |", "|---|---|---|"]
        for t in s["targets"]:
            what = (
                f"{t['model']} {t['implementation']} {t['dtype']} batch {t['batch_size']} "
                f"vs {t['reference']} fp32 eager: >= {t['target']:.2f}x images/s"
            )
            if t["batch_size"] == 1:
                what += " (latency <= 0.85x)"
            lines.append(f"| {what} | {_x(t['speedup'])} | {'yes' if t['met'] else 'NO'} |")
        lines.append("")
    if "accuracy" in results:
        a = results["accuracy"]
        o = a["optimized_fp32_vs_eager"]
        lines += [
            "## Reduced precision: accuracy",
            "",
            f"{a['model']} ({a['weights']}) on Imagenette val ({a['images']} images), "
            f"measured {a['date']}; all three through zoo.optimize, on the same batches.",
            "",
            "| run | top-1 10-way | top-1 1000-way | images/s (model only) |",
            "|---|---|---|---|",
        ]
        for key, r in a["runs"].items():
            lines.append(
                f"| {key} | {r['top1_10way']:.2f} | {r['top1_1000way']:.2f} | "
                f"{r['images_per_s_model_only']:.1f} |"
            )
        lines += [
            "",
            "| vs fp32 | 10-way top-1 drop (target <= 0.5) | 1000-way top-1 agreement "
            "(target >= 96 %) | fp32 top-1 in top-5 (target >= 99.5 %) | max abs logit diff |",
            "|---|---|---|---|---|",
        ]
        for key in ("bf16", "fp16"):
            v = a[f"{key}_vs_fp32"]
            lines.append(
                f"| {key} | {v['top1_10way_drop_points']:.2f} | "
                f"{v['top1_1000way_agreement']:.2f} | {v['fp32_top1_in_top5']:.2f} | "
                f"{v['max_abs_logit_diff']:.3g} |"
            )
        lines += [
            "",
            f"zoo.optimize fp32 vs the eager model on {o['images']} of the images: max |logit "
            f"difference| {o['max_abs_logit_diff']:.2g} (logits up to {o['max_abs_logit']:.1f}), "
            f"top-1 agreement {o['top1_1000way_agreement']:.2f} %.",
            "",
        ]
    return "\n".join(lines)


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _opt(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("all", "speed", "accuracy"), default="all")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch-sizes", type=lambda s: [int(v) for v in s.split(",")],
                        default=[1, 32])  # fmt: skip
    parser.add_argument("--compile", action="store_true", help="add torch.compile'd zoo models")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--limit-per-class", type=int, help="accuracy on a subset (a quick try)")
    parser.add_argument("--workers", type=int, default=1, help="accuracy: DataLoader workers")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    args = parser.parse_args()

    from zoo.benchmark import machine

    args.out.mkdir(parents=True, exist_ok=True)
    for part, measure in (("speed", speed), ("accuracy", accuracy)):
        if args.part in ("all", part):
            result = {"machine": machine(), **measure(args)}
            (args.out / f"inference_{part}.json").write_text(json.dumps(result, indent=2) + "\n")
    text = markdown(
        {
            part: json.loads(path.read_text())
            for part in ("speed", "accuracy")
            if (path := args.out / f"inference_{part}.json").is_file()
        }
    )
    (args.out / "inference.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
