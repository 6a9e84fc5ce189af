"""Benchmark: zoo's converted TFLite MobileNets vs the TFLite runtime on Imagenette's val split.

For each of the five ``*_tf`` twins with ``tflite_in1k`` weights: the model zoo builds through its
weight hub (``get_model(name, pretrained=True)``, files served from ``ZOO_MIRROR`` offline, a
temporary ``ZOO_HOME``), and the TFLite runtime (``ai_edge_litert``) running the same file(s)
(MobileNet v1 1.0: the backbone and head files chained). Both see the same preprocessed pixels
(the weights' preprocessing: resize 1/0.875, bilinear, centre crop; zoo's transforms); the
runtime gets them quantized as its uint8 input expects, ``round(x / scale + zero_point)``.

Reported per model: top-1 restricted to the 10 Imagenette classes and 1000-way, for zoo and for
the runtime, and how often their 1000-way (and 10-way) top-1 agree. The runtime's output is a
uint8 softmax (steps of 1/256): restricted to 10 classes, several classes often tie at the same
value and the argmax then takes the first, so the runtime's 10-way figure from its output is
biased low. The runtime's 10-way top-1 from its pre-softmax logits (tie-free) is reported too,
as is the runtime fed the uint8 pixels directly (``(x + 1) * 127.5``; the model's input scale
is 1/128 with zero point 128, so this is within one step of the quantized input).

    python benchmarks/tflite_imagenette.py [--models NAME ...] [--limit-per-class N] [--json]
    python benchmarks/tflite_imagenette.py --json > benchmarks/results/tflite_imagenette.json
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import json
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's zoo, not an installed one

SHARED = ROOT.parent / "shared"
DATA = SHARED / "data" / "imagenette2_160" / "val"
WEIGHTS = SHARED / "weights" / "tflite_mobilenet"
MODELS = {
    "mobilenetv2_1_0_tf": ("mobilenet_v2_1.0_224_quant.tflite",),
    "mobilenet1_0_tf": (
        "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite",
        "mobilenet_quant_v1_224_head_layers.tflite",
    ),
    "mobilenet0_75_tf": ("mobilenet_v1_0.75_192_quant.tflite",),
    "mobilenet0_5_tf": ("mobilenet_v1_0.5_160_quant.tflite",),
    "mobilenet0_25_tf": ("mobilenet_v1_0.25_128_quant.tflite",),
}
PREPROCESS = "resize {resize}, centre crop {crop}, {interpolation}, mean {mean}, std {std}"
# The issue's figures for the runtime on the full split (10-way, 1000-way top-1, %).
ISSUE_REFERENCE = {"mobilenetv2_1_0_tf": (96.1, 65.3), "mobilenet0_25_tf": (84.1, 37.8)}


class Runtime:
    """The TFLite runtime on a (chained) model, one image at a time (the files fix batch 1)."""

    def __init__(self, paths: list[Path], threads: int) -> None:
        from ai_edge_litert.interpreter import Interpreter

        from zoo.convert.tflite import read_tflite

        self.interpreters = []
        for path in paths:
            with warnings.catch_warnings():  # preserve_all_tensors is "for debugging"
                warnings.simplefilter("ignore", UserWarning)
                interpreter = Interpreter(
                    model_path=str(path), num_threads=threads,
                    experimental_preserve_all_tensors=path == paths[-1],
                )  # fmt: skip
            interpreter.allocate_tensors()
            self.interpreters.append(interpreter)
        # the softmax's input in the last file: the logits (read with zoo's own TFLite reader)
        graph = read_tflite(paths[-1]).subgraphs[0]
        softmax = [op for op in graph.operators if op.op == "SOFTMAX"]
        self.logits_index = softmax[-1].inputs[0]
        last = self.interpreters[-1]
        details = {d["index"]: d for d in last.get_tensor_details()}
        self.logits_quant = details[self.logits_index]["quantization"]
        self.input_quant = self.interpreters[0].get_input_details()[0]["quantization"]

    def quantize(self, x):
        """zoo's float pixels (N, C, H, W) -> the uint8 NHWC input the model expects."""
        import numpy as np

        scale, zero = self.input_quant
        return np.clip(np.round(x.permute(0, 2, 3, 1).numpy() / scale + zero), 0, 255).astype(
            np.uint8
        )

    def __call__(self, pixels):
        """uint8 (N, H, W, C) -> (probabilities, logits), each (N, 1001) float64."""
        import numpy as np

        probs, logits = [], []
        scale, zero = self.logits_quant
        for image in pixels:
            out = image[None]
            for interpreter in self.interpreters:
                interpreter.set_tensor(interpreter.get_input_details()[0]["index"], out)
                interpreter.invoke()
                out = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
            probs.append(out.reshape(-1) / 255.0)
            raw = self.interpreters[-1].get_tensor(self.logits_index).reshape(-1)
            logits.append((raw.astype(np.float64) - zero) * scale)
        return np.stack(probs), np.stack(logits)


def evaluate(name: str, args) -> dict:
    import numpy as np
    import torch
    from torchvision.datasets import ImageFolder
    from tqdm import tqdm

    import zoo
    from zoo.inference import _first_per_class, class_mapping
    from zoo.labels import resolve_labels

    start = time.perf_counter()
    model = zoo.get_model(name, pretrained=True).eval()
    load_s = time.perf_counter() - start
    dataset = ImageFolder(str(args.data), transform=zoo.get_transforms(model))
    if args.limit_per_class:
        dataset.samples = _first_per_class(dataset.samples, args.limit_per_class)
    mapping = torch.tensor(
        class_mapping(dataset.classes, resolve_labels(model.pretrained_cfg.labels))
    )
    runtime = Runtime([args.weights / f for f in MODELS[name]], args.runtime_threads)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=args.batch_size, num_workers=args.workers
    )
    counts: dict[str, int] = {}
    seconds = {"zoo": 0.0, "runtime": 0.0}

    def count(key: str, hits) -> None:
        counts[key] = counts.get(key, 0) + int(hits.sum())

    def restricted(scores: torch.Tensor) -> torch.Tensor:
        return mapping[scores[:, mapping].argmax(dim=1)]

    for images, targets in tqdm(loader, desc=name, unit="batch", file=sys.stderr):
        truth = mapping[targets]
        t0 = time.perf_counter()
        with torch.no_grad():
            ours = model(images)  # 1000 classes: the background row was dropped at load
        t1 = time.perf_counter()
        probs, logits = runtime(runtime.quantize(images))
        seconds["zoo"] += t1 - t0
        seconds["runtime"] += time.perf_counter() - t1
        theirs = torch.from_numpy(probs[:, 1:])  # output 0 is "background"
        their_logits = torch.from_numpy(logits[:, 1:])
        pixels = np.clip(np.round((images.permute(0, 2, 3, 1).numpy() + 1) * 127.5), 0, 255)
        direct, _ = runtime(pixels.astype(np.uint8))
        direct = torch.from_numpy(direct[:, 1:])

        count("zoo_top1_10way", restricted(ours) == truth)
        count("zoo_top1_1000way", ours.argmax(1) == truth)
        count("runtime_top1_10way", restricted(theirs) == truth)
        count("runtime_top1_1000way", theirs.argmax(1) == truth)
        count("runtime_logits_top1_10way", restricted(their_logits) == truth)
        count("runtime_logits_top1_1000way", their_logits.argmax(1) == truth)
        count("runtime_pixels_top1_10way", restricted(direct) == truth)
        count("runtime_pixels_top1_1000way", direct.argmax(1) == truth)
        count("agreement_top1_1000way", ours.argmax(1) == theirs.argmax(1))
        count("agreement_top1_10way", restricted(ours) == restricted(theirs))
        count("agreement_top1_1000way_logits", ours.argmax(1) == their_logits.argmax(1))
        sub = theirs[:, mapping]
        count("runtime_10way_ties", (sub == sub.max(dim=1, keepdim=True).values).sum(1) > 1)
        count("images", torch.ones_like(truth))
    n = counts.pop("images")
    result = {key: round(100.0 * value / n, 2) for key, value in counts.items()}
    result["runtime_10way_ties"] = counts["runtime_10way_ties"]  # a count, not a percentage
    result.update(
        images=n,
        files=list(MODELS[name]),
        preprocess=PREPROCESS.format(**dataclasses.asdict(model.pretrained_cfg.preprocess)),
        hub_load_and_convert_s=round(load_s, 2),
        zoo_images_per_s=round(n / seconds["zoo"], 1),
        runtime_images_per_s=round(n / seconds["runtime"], 1),
    )
    if name in ISSUE_REFERENCE and not args.limit_per_class:
        top10, top1000 = ISSUE_REFERENCE[name]
        result["issue_runtime_reference"] = {"top1_10way": top10, "top1_1000way": top1000}
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--data", type=Path, default=DATA, help="ImageFolder val split")
    parser.add_argument("--weights", type=Path, default=WEIGHTS, help="folder of .tflite files")
    parser.add_argument("--limit-per-class", type=int, help="first N files of each class")
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers")
    parser.add_argument("--runtime-threads", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()

    import torch

    with tempfile.TemporaryDirectory() as home:
        os.environ.update(
            ZOO_HOME=home, ZOO_MIRROR=str(args.weights), ZOO_OFFLINE="1", ZOO_QUIET="1"
        )
        results = {name: evaluate(name, args) for name in args.models}
    summary = {
        "split": str(args.data.relative_to(SHARED)) if args.data.is_relative_to(SHARED) else
        str(args.data),
        "limit_per_class": args.limit_per_class,
        "torch": torch.__version__,
        "ai_edge_litert": importlib.metadata.version("ai-edge-litert"),
        "torch_threads": torch.get_num_threads(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus",
        "runtime_input": "zoo's preprocessed float pixels quantized as the model's input expects",
        "models": results,
    }  # fmt: skip
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        keys = ("zoo_top1_10way", "runtime_top1_10way", "runtime_logits_top1_10way",
                "zoo_top1_1000way", "runtime_top1_1000way", "agreement_top1_1000way")  # fmt: skip
        print(f"{'model':20}" + "".join(f"{k:>28}" for k in keys))
        for name, result in results.items():
            print(f"{name:20}" + "".join(f"{result[k]:>28}" for k in keys))
    return 0


if __name__ == "__main__":
    sys.exit(main())
