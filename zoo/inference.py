"""``zoo.predict`` and ``zoo.evaluate``: the weights' own preprocessing and class names."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch import nn

from zoo.labels import LabelSet, resolve_labels
from zoo.transforms import get_transforms

ImageLike = str | os.PathLike | Image.Image | torch.Tensor


@dataclass(frozen=True)
class Prediction:
    image: str
    rank: int
    index: int  # class index in the label set (after any background offset)
    label: str | None
    probability: float


def _open(image: ImageLike) -> tuple[str, Image.Image | torch.Tensor]:
    if isinstance(image, Image.Image | torch.Tensor):
        return "<memory>", image
    path = Path(image)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        with Image.open(path) as img:
            return str(path), img.convert("RGB")
    except OSError as err:
        raise ValueError(f"{path}: not a readable image ({err})") from None


def _class_logits(model: nn.Module, logits: torch.Tensor) -> torch.Tensor:
    """Drop leading rows that are not classes (e.g. TensorFlow's "background")."""
    offset = getattr(model.pretrained_cfg, "label_offset", 0)
    return logits[:, offset:]


def _fast(model: nn.Module, optimize: bool) -> nn.Module:
    """``zoo.optimize(model)`` unless asked not to (or already done): same outputs to 1e-4."""
    from zoo.optimization import OptimizedModel
    from zoo.optimization import optimize as optimized

    return optimized(model) if optimize and not isinstance(model, OptimizedModel) else model


@torch.no_grad()
def predict(
    model: nn.Module,
    images: ImageLike | Sequence[ImageLike],
    topk: int = 5,
    *,
    optimize: bool = True,
) -> list[list[Prediction]]:
    """Top-k classes per image, with the names the weights carry.

    ``optimize``: run the model through ``zoo.optimize`` (BN folded, channels_last).
    """
    if isinstance(images, str | os.PathLike | Image.Image | torch.Tensor):
        images = [images]
    if topk < 1:
        raise ValueError("topk must be >= 1")
    transform = get_transforms(model)
    labels = resolve_labels(model.pretrained_cfg.labels, model.pretrained_cfg.label_names)
    opened = [_open(image) for image in images]
    batch = torch.stack([transform(img) for _, img in opened])
    probs = _class_logits(model, _fast(model, optimize).eval()(batch)).softmax(dim=1)
    values, indices = probs.topk(min(topk, probs.shape[1]), dim=1)
    return [
        [
            Prediction(name, rank + 1, int(i), _name(labels, int(i)), float(p))
            for rank, (p, i) in enumerate(zip(values[row], indices[row], strict=True))
        ]
        for row, (name, _) in enumerate(opened)
    ]


def _name(labels: LabelSet | None, index: int) -> str | None:
    return labels.names[index] if labels is not None and index < len(labels.names) else None


@dataclass(frozen=True)
class EvalResult:
    images: int
    classes: int
    top1: float  # over all of the model's classes (e.g. 1000-way)
    top5: float
    top1_restricted: float  # argmax over the classes present in the data only
    images_per_second: float
    class_indices: tuple[int, ...]  # model class index of each folder


def class_mapping(folders: Sequence[str], labels: LabelSet | None) -> list[int]:
    """Model class index of each ImageFolder class folder (WordNet id or the class name)."""
    if labels is None:
        raise ValueError("the model's weights carry no class names: cannot map folders to classes")
    by_wnid, by_name = labels.index_of_wnid(), {n: i for i, n in enumerate(labels.names)}
    mapping, unknown = [], []
    for folder in folders:
        index = by_wnid.get(folder, by_name.get(folder))
        if index is None:
            unknown.append(folder)
        mapping.append(index)
    if unknown:
        raise ValueError(
            f"class folders not in the model's label set: {', '.join(unknown[:5])}; name folders "
            "by WordNet id (n01440764) or by the weights' class names"
        )
    return mapping


def _first_per_class(samples: Iterable[tuple[str, int]], limit: int) -> list[tuple[str, int]]:
    kept, seen = [], {}
    for path, target in samples:  # ImageFolder lists each class's files in sorted order
        if seen.get(target, 0) < limit:
            kept.append((path, target))
            seen[target] = seen.get(target, 0) + 1
    return kept


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data_dir: str | os.PathLike,
    *,
    batch_size: int = 50,
    workers: int | None = None,
    limit_per_class: int | None = None,
    progress: bool = True,
    optimize: bool = True,
) -> EvalResult:
    """Top-1/top-5 on an ImageFolder tree, both over all classes and restricted to those present.

    ``optimize``: run the model through ``zoo.optimize`` (BN folded, channels_last).
    """
    from torchvision.datasets import ImageFolder
    from tqdm import tqdm

    root = Path(data_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"data folder not found: {root}")
    dataset = ImageFolder(str(root), transform=get_transforms(model))
    if limit_per_class is not None:
        dataset.samples = _first_per_class(dataset.samples, limit_per_class)
    cfg = model.pretrained_cfg
    mapping = torch.tensor(
        class_mapping(dataset.classes, resolve_labels(cfg.labels, cfg.label_names))
    )
    workers = min(4, os.cpu_count() or 1) if workers is None else workers
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers)
    model = _fast(model, optimize).eval()
    correct1 = correct5 = restricted = seen = 0
    start = time.perf_counter()
    for images, targets in tqdm(loader, desc="eval", unit="batch", disable=not progress):
        logits = _class_logits(model, model(images))
        truth = mapping[targets]
        top5 = logits.topk(min(5, logits.shape[1]), dim=1).indices
        correct1 += int((top5[:, 0] == truth).sum())
        correct5 += int((top5 == truth[:, None]).any(dim=1).sum())
        restricted += int((mapping[logits[:, mapping].argmax(dim=1)] == truth).sum())
        seen += len(targets)
    elapsed = time.perf_counter() - start
    return EvalResult(
        images=seen,
        classes=len(dataset.classes),
        top1=100.0 * correct1 / seen,
        top5=100.0 * correct5 / seen,
        top1_restricted=100.0 * restricted / seen,
        images_per_second=seen / elapsed,
        class_indices=tuple(mapping.tolist()),
    )
