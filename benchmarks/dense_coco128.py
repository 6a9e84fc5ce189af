"""Benchmark: detection and segmentation fine-tuning on coco128_detseg, ImageNet weights vs random.

For each backbone (default ``mobilenetv2_1_0_tf``; ``mobilenet1_0_tf`` with ``--backbones``) and
each task, ``zoo finetune-dense`` trains on the 96-image train split and scores the 32-image val
split, once from the backbone's real ImageNet weights (``tflite_in1k``: TensorFlow's quantized
MobileNets, dequantized; served from ../shared/weights/tflite_mobilenet as ``ZOO_MIRROR``,
offline) and once from random init, with everything else equal:

* detection: Faster R-CNN + FPN (torchvision's), ``min_size`` 320, person AP@0.5 (primary at this
  scale), mAP@0.5 and COCO mAP@[.5:.95] (pycocotools);
* segmentation: FCN (torchvision's head) on the output-stride-8 backbone, VOC-21 labels, mIoU.

A few CPU minutes per run: the figures show the direction of the ImageNet-weights effect, not
converged accuracies (no pass/fail threshold).

    python benchmarks/dense_coco128.py [--backbones mobilenetv2_1_0_tf mobilenet1_0_tf]
        [--tasks detection segmentation] [--epochs 3] [--json benchmarks/results/dense_coco128.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's zoo, not an installed one

SHARED = ROOT.parent / "shared"
DATA = SHARED / "data" / "coco128_detseg" / "s320"
WEIGHTS = SHARED / "weights" / "tflite_mobilenet"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbones", nargs="+", default=["mobilenetv2_1_0_tf"])
    parser.add_argument("--tasks", nargs="+", default=["detection", "segmentation"])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.update(
            ZOO_HOME=str(Path(tmp) / "home"),
            ZOO_MIRROR=str(WEIGHTS),
            ZOO_OFFLINE="1",
            ZOO_QUIET="1",
        )
        import torch

        import zoo
        from zoo.dense.loop import DenseArgs, train_dense

        for backbone in args.backbones:
            for task in args.tasks:
                for pretrained in ("tflite_in1k", None):
                    dense = DenseArgs(
                        task=task,
                        model=backbone,
                        data=str(DATA),
                        pretrained=pretrained,
                        epochs=args.epochs,
                        batch_size=args.batch_size,
                    )
                    out = Path(tmp) / f"{backbone}-{task}-{pretrained or 'random'}"
                    result = train_dense(dense, out, progress=False)
                    result["log"] = [
                        json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()
                    ]
                    rows.append(result)
                    print(json.dumps(result), flush=True)
        report = {
            "data": "coco128_detseg s320: train split (96 images), val split (32 images)",
            "command": (
                "zoo finetune-dense --task TASK --model BACKBONE [--pretrained tflite_in1k] "
                f"--data coco128_detseg/s320 --epochs {args.epochs} --batch-size {args.batch_size}"
            ),
            "runs": rows,
            "torch": torch.__version__,
            "zoo": zoo.__version__,
            "cpu": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(),
        }
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
