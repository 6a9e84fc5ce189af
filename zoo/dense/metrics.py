"""Detection AP (pycocotools' COCOeval, the reference implementation) and segmentation mIoU.

Detection: ``coco_map`` = AP@[.5:.95] (COCO's primary metric), ``map_50`` = AP@0.5 averaged over
the categories present in the evaluated images, ``person_ap_50`` = AP@0.5 of "person" (the one
category frequent enough in a 32-image split to be measured with some stability).
Segmentation: ``miou`` = mean over the classes present in the ground truth or the prediction of
intersection / union (label 255 ignored), ``pixel_acc`` = correct / labelled pixels.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import torch


class MissingExtraError(ImportError):
    """An optional dependency a command needs; the message says what to install."""


def _cocoeval() -> tuple[Any, Any]:  # pycocotools is untyped
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        raise MissingExtraError(
            "detection metrics need pycocotools: pip install 'zoo[detection]'"
        ) from None
    return COCO, COCOeval


def require_pycocotools() -> None:
    """Fail before training, not after."""
    _cocoeval()


def detection_metrics(
    annotations: Path, image_ids: list[int], detections: list[dict], person_id: int | None
) -> dict[str, float]:
    """COCO AP of ``detections`` ([{image_id, category_id, bbox [x,y,w,h], score}]), percent."""
    COCO, COCOeval = _cocoeval()
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        gt = COCO(str(annotations))
        if not detections:
            return {"coco_map": 0.0, "map_50": 0.0, "person_ap_50": 0.0}
        dt = gt.loadRes(detections)
        ev = COCOeval(gt, dt, "bbox")
        ev.params.imgIds = sorted(image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    out = {"coco_map": 100 * float(ev.stats[0]), "map_50": 100 * float(ev.stats[1])}
    if person_id is not None and person_id in ev.params.catIds:
        # precision[T, R, K, A, M]: IoU 0.5, all recall points, person, all areas, 100 dets
        p = ev.eval["precision"][0, :, ev.params.catIds.index(person_id), 0, -1]
        out["person_ap_50"] = 100 * float(p[p > -1].mean()) if (p > -1).any() else 0.0
    return {k: round(max(v, 0.0), 3) for k, v in out.items()}


def confusion(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """num_classes x num_classes counts (rows: truth), pixels labelled 255 left out."""
    keep = target != 255
    index = target[keep] * num_classes + pred[keep]
    return torch.bincount(index, minlength=num_classes**2).reshape(num_classes, num_classes)


def segmentation_metrics(hist: torch.Tensor) -> dict[str, float]:
    h = hist.double()
    inter = h.diag()
    union = h.sum(0) + h.sum(1) - inter
    present = union > 0
    miou = (inter[present] / union[present]).mean().item() if present.any() else 0.0
    acc = (inter.sum() / h.sum().clamp(min=1)).item()
    return {"miou": round(100 * miou, 3), "pixel_acc": round(100 * acc, 3)}


__all__ = [
    "MissingExtraError",
    "confusion",
    "detection_metrics",
    "require_pycocotools",
    "segmentation_metrics",
]
