"""Fine-tune a detector or a segmenter on a COCO-format folder -> a run directory.

The run directory is ``zoo train``'s: ``run.json`` (the arguments; ``--resume`` needs nothing
else), ``log.jsonl`` (a record per epoch), ``metrics.json`` (final and best), ``plot.png`` (loss,
metric, LR), ``last.ckpt`` (``torch.load(weights_only=True)``; resuming continues at the next
epoch) and ``final.safetensors`` (the whole model's state; rebuild it with the same
``zoo.detection`` / ``zoo.segmentation`` call, recorded in the file's metadata).

Optimiser: SGD, momentum 0.9, linear warmup over the first 10 % of the steps (at most 100), then
cosine to zero — the paper's cosine, which carries over to FCN (its §6).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from zoo.dense.data import CocoData, DetectionSet, SegmentationSet, collate_lists, collate_stack
from zoo.dense.metrics import (
    confusion,
    detection_metrics,
    require_pycocotools,
    segmentation_metrics,
)
from zoo.training import rundir

log = logging.getLogger("zoo")
TASKS = {"detection": ("fasterrcnn",), "segmentation": ("fcn", "deeplabv3")}
PRIMARY = {"detection": "person_ap_50", "segmentation": "miou"}


class DenseTrainingError(ValueError):
    """A run that cannot start or go on; the message says why (and names the step)."""


@dataclass(frozen=True)
class DenseArgs:
    task: str
    model: str
    data: str
    pretrained: str | None = None
    head: str = ""  # "" = the task's first: fasterrcnn / fcn
    masks: str = "voc21"  # segmentation: DATA/masks_<masks>/ (voc21: 21 classes; coco: 81)
    epochs: int = 5
    batch_size: int = 4
    # torchvision's detection reference (0.02 at batch 16) scaled linearly to batch 4; at 0.01 a
    # Faster R-CNN on mobilenetv2_1_0_tf's weights (BN folded into the convs) diverged at step 19.
    lr: float = 0.005
    weight_decay: float = 1e-4
    clip_grad_norm: float = 10.0  # 0 = off; an early large-loss step cannot blow up the backbone
    min_size: int = 320  # detection: the transform's short side (torchvision's 800 is for COCO)
    crop: int = 256  # segmentation: training crop
    output_stride: int = 8  # segmentation backbone
    trainable_layers: int = 5  # detection: stages trained, from the top
    seed: int = 0

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise DenseTrainingError(f"task must be one of {sorted(TASKS)}, got {self.task!r}")
        if self.head and self.head not in TASKS[self.task]:
            raise DenseTrainingError(f"{self.task} heads: {', '.join(TASKS[self.task])}")
        for name in ("epochs", "batch_size", "min_size", "crop"):
            if getattr(self, name) < 1:
                raise DenseTrainingError(f"{name} must be >= 1")
        if self.lr <= 0 or self.weight_decay < 0 or self.clip_grad_norm < 0:
            raise DenseTrainingError("lr must be > 0, weight_decay and clip_grad_norm >= 0")

    @property
    def head_name(self) -> str:
        return self.head or TASKS[self.task][0]


def num_classes(args: DenseArgs, data: CocoData) -> int:
    """Including the background: detection K + 1; segmentation 21 (voc21) or K + 1 (coco)."""
    if args.task == "detection" or args.masks == "coco":
        return len(data.category_ids) + 1
    if args.masks == "voc21":
        return 21
    raise DenseTrainingError(f"masks {args.masks!r}: the label sets known are voc21 and coco")


def build_model(args: DenseArgs, classes: int) -> nn.Module:
    from zoo import detection, segmentation

    pretrained = args.pretrained or False
    if args.task == "detection":
        return detection.fasterrcnn(
            args.model,
            num_classes=classes,
            pretrained_backbone=pretrained,
            trainable_layers=args.trainable_layers,
            min_size=args.min_size,
        )
    build = segmentation.fcn if args.head_name == "fcn" else segmentation.deeplabv3
    return build(
        args.model,
        num_classes=classes,
        pretrained_backbone=pretrained,
        output_stride=args.output_stride,
    )


def lr_at(step: int, total: int, base: float) -> float:
    warmup = min(100, max(1, total // 10))
    if step < warmup:
        return base * (0.001 + 0.999 * step / warmup)
    return 0.5 * base * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def sgd_step(
    loss: torch.Tensor, optimizer: torch.optim.Optimizer, params: list[nn.Parameter], clip: float
) -> float:
    """Backward, clip the gradient norm to ``clip`` (0: no clipping), step; the norm before it."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(params, clip if clip else math.inf)
    optimizer.step()
    return float(norm)


def train_dense(
    args: DenseArgs | None, out: Path, *, resume: bool = False, progress: bool = True
) -> dict[str, Any]:
    """Train (or, with ``resume``, continue the run in ``out``); returns the final metrics."""
    saved = None
    if resume:
        if not (out / rundir.RUN_FILE).is_file() or not (out / rundir.CKPT_FILE).is_file():
            raise rundir.RunDirError(f"--resume {out}: not a finetune-dense run directory")
        args = DenseArgs(**json.loads((out / rundir.RUN_FILE).read_text(encoding="utf-8")))
        saved = rundir.load_state(out)
    elif args is None:
        raise DenseTrainingError("arguments or resume are needed")
    elif (out / rundir.CKPT_FILE).exists():
        raise rundir.RunDirError(f"{out} already holds a run; --resume {out} or another --out")
    if args.task == "detection":
        require_pycocotools()
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise DenseTrainingError("plot.png needs matplotlib: pip install 'zoo[train]'") from None
    data = CocoData.open(args.data)
    torch.manual_seed(args.seed)
    classes = num_classes(args, data)
    model = build_model(args, classes)
    train_set, val_set, collate = _datasets(args, data, model)
    steps_per_epoch = math.ceil(len(train_set) / args.batch_size)
    total = steps_per_epoch * args.epochs
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=args.lr, momentum=0.9, weight_decay=args.weight_decay)
    start_epoch, best = 0, {"epoch": 0, PRIMARY[args.task]: -1.0}
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        start_epoch, best = saved["epoch"], json.loads(saved["best"])
        torch.set_rng_state(saved["rng"])
    out.mkdir(parents=True, exist_ok=True)
    rundir.write_json(out / rundir.RUN_FILE, dataclasses.asdict(args))
    wall, seen, seconds = time.perf_counter(), 0, 0.0
    for epoch in range(start_epoch, args.epochs):
        g = torch.Generator().manual_seed(args.seed * 1000 + epoch)
        train_set.rng.seed(args.seed * 1000 + epoch)  # flips/crops: the same after --resume
        loader = DataLoader(
            train_set, args.batch_size, shuffle=True, generator=g, collate_fn=collate
        )
        model.train()
        t0, losses, norms = time.perf_counter(), [], []
        for i, (images, targets) in enumerate(loader):
            step = epoch * steps_per_epoch + i
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, total, args.lr)
            loss = _loss(args.task, model, images, targets)
            if not torch.isfinite(loss):
                raise DenseTrainingError(
                    f"loss is {loss.item()} at step {step} (epoch {epoch + 1}); lower --lr"
                )
            norm = sgd_step(loss, optimizer, params, args.clip_grad_norm)
            norms.append(norm)
            losses.append(loss.item())
            seen += len(images)
            if progress:
                print(
                    f"\repoch {epoch + 1} step {i + 1}/{steps_per_epoch} loss {loss.item():.3f}",
                    end="",
                    flush=True,
                )
        seconds += time.perf_counter() - t0
        if progress:
            print()
        metrics = evaluate(args.task, model, val_set, data, classes)
        record = {
            "epoch": epoch + 1,
            "train_loss": round(sum(losses) / len(losses), 5),
            "lr": lr_at(step, total, args.lr),
            # how hard the clip bit: the largest gradient norm seen and the steps it clipped
            "grad_norm_max": round(max(norms), 4),
            "clipped_steps": sum(0 < args.clip_grad_norm < n for n in norms),
            **metrics,
        }
        if metrics[PRIMARY[args.task]] > best[PRIMARY[args.task]]:
            best = {"epoch": epoch + 1, **metrics}
        rundir.append_log(out, record)
        log.info("epoch %d: %s", epoch + 1, json.dumps(record))
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "epoch": epoch + 1,
            "best": json.dumps(best),
            "rng": torch.get_rng_state(),
        }
        rundir.save_state(out, state)
    records = rundir.read_log(out)
    per_epoch = ("epoch", "lr", "grad_norm_max", "clipped_steps")
    final = {k: v for k, v in records[-1].items() if k not in per_epoch} if records else {}
    result = {
        "task": args.task,
        "model": args.model,
        "head": args.head_name,
        "pretrained": args.pretrained,
        "epochs": args.epochs,
        "classes": classes,
        "train_images": len(train_set),
        "val_images": len(val_set),
        **final,
        "best": best,
        "images_per_second": round(seen / seconds, 2) if seconds else None,
        "wall_seconds": round(time.perf_counter() - wall, 1),
    }
    _save_final(model, out, args, classes)
    rundir.write_json(out / rundir.METRICS_FILE, result)
    _plot(out, records, args, [lr_at(s, total, args.lr) for s in range(total)])
    return result


def _datasets(args: DenseArgs, data: CocoData, model: nn.Module) -> tuple[Any, Any, Any]:
    if args.task == "detection":
        return (
            DetectionSet(data, "train", True, args.seed),
            DetectionSet(data, "val", False),
            collate_lists,
        )
    pre = model.backbone.body.pretrained_cfg.preprocess  # the backbone weights' normalisation
    masks = data.masks_dir(args.masks)
    train = SegmentationSet(data, "train", masks, pre.mean, pre.std, True, args.crop, args.seed)
    return train, SegmentationSet(data, "val", masks, pre.mean, pre.std, False), collate_stack


def _loss(task: str, model: nn.Module, images: Any, targets: Any) -> torch.Tensor:
    if task == "detection":
        return sum(model(images, targets).values())
    out = model(images)
    loss = nn.functional.cross_entropy(out["out"], targets, ignore_index=255)
    if "aux" in out:
        loss = loss + 0.5 * nn.functional.cross_entropy(out["aux"], targets, ignore_index=255)
    return loss


@torch.no_grad()
def evaluate(
    task: str, model: nn.Module, val: Any, data: CocoData, classes: int
) -> dict[str, float]:
    model.eval()
    if task == "segmentation":
        hist = torch.zeros(classes, classes, dtype=torch.long)
        for i in range(len(val)):
            image, mask = val[i]
            pred = model(image[None])["out"].argmax(1)[0]
            hist += confusion(pred, mask, classes)
        return segmentation_metrics(hist)
    detections, ids = [], []
    for i in range(len(val)):
        image, target = val[i]
        ids.append(target["image_id"])
        (out,) = model([image])
        for box, label, score in zip(
            out["boxes"].tolist(), out["labels"].tolist(), out["scores"].tolist(), strict=True
        ):
            x1, y1, x2, y2 = box
            detections.append(
                {
                    "image_id": target["image_id"],
                    "category_id": data.category_ids[label - 1],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": score,
                }
            )
    person = (
        data.category_ids[data.category_names.index("person")]
        if ("person" in data.category_names)
        else None
    )
    return detection_metrics(data.annotations, ids, detections, person)


def _save_final(model: nn.Module, out: Path, args: DenseArgs, classes: int) -> None:
    from safetensors.torch import save_file

    from zoo.hub.atomic import atomic_path

    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    meta = {
        "task": args.task,
        "head": args.head_name,
        "backbone": args.model,
        "num_classes": str(classes),
        "args": json.dumps(dataclasses.asdict(args)),
    }
    with atomic_path(out / rundir.FINAL_FILE) as tmp:
        save_file(state, str(tmp), metadata=meta)


def _plot(out: Path, records: list[dict], args: DenseArgs, lrs: list[float]) -> None:
    if not records:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from zoo.hub.atomic import atomic_path

    x = [r["epoch"] for r in records]
    keys = ["person_ap_50", "map_50", "coco_map"] if args.task == "detection" else ["miou"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot(x, [r["train_loss"] for r in records], marker="o")
    axes[0].set(title="train loss", xlabel="epoch")
    for key in keys:
        axes[1].plot(x, [r.get(key) for r in records], marker="o", label=key)
    axes[1].set(title="val (%)", xlabel="epoch")
    axes[1].legend()
    axes[2].plot([i / max(1, len(lrs)) * args.epochs for i in range(len(lrs))], lrs)
    axes[2].set(title="learning rate", xlabel="epoch")
    fig.tight_layout()
    with atomic_path(out / rundir.PLOT_FILE) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


__all__ = ["DenseArgs", "DenseTrainingError", "evaluate", "train_dense"]
