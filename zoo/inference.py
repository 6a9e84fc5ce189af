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


@dataclass(frozen=True)
class Failure:
    """An input that was skipped, and why (the rest of the batch went on)."""

    item: str
    reason: str


class Predictions(list[list[Prediction]]):
    """:func:`predict`'s result: the top-k of each image that could be read, in input order,
    and in ``failures`` the inputs skipped with their reasons."""

    def __init__(self, ranked: Iterable[list[Prediction]], failures: Sequence[Failure]) -> None:
        super().__init__(ranked)
        self.failures: tuple[Failure, ...] = tuple(failures)


# What PIL raises for a file that is not a (complete, sane) image: SyntaxError for broken PNG
# chunks, DecompressionBombError for absurd dimensions.
_UNREADABLE = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def _name(image: ImageLike) -> str:
    return "<memory>" if isinstance(image, Image.Image | torch.Tensor) else str(image)


def _open(image: ImageLike) -> Image.Image | torch.Tensor:
    """The image as RGB; the error says what is wrong (the caller names the file)."""
    if isinstance(image, Image.Image | torch.Tensor):
        return image
    path = Path(image)
    if path.is_dir():
        raise IsADirectoryError(
            "is a folder; predict takes image files (`zoo eval` scores a folder of class folders)"
        )
    if not path.is_file():
        raise FileNotFoundError("image not found")
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except _UNREADABLE as err:
        raise ValueError(f"not a readable image ({err})") from None


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
) -> Predictions:
    """Top-k classes per image, with the names the weights carry.

    An image that cannot be read (missing, a folder, not an image, truncated) is skipped: the
    result holds the others in input order and ``result.failures`` each skipped one with its
    reason, so one bad file does not sink a batch. ``optimize``: run the model through
    ``zoo.optimize`` (BN folded, channels_last).
    """
    if isinstance(images, str | os.PathLike | Image.Image | torch.Tensor):
        images = [images]
    if topk < 1:
        raise ValueError("topk must be >= 1")
    transform = get_transforms(model)
    labels = resolve_labels(model.pretrained_cfg.labels, model.pretrained_cfg.label_names)
    names, inputs, failures = [], [], []
    for image in images:
        try:
            inputs.append(transform(_open(image)))
        except _UNREADABLE as err:
            failures.append(Failure(_name(image), str(err)))
            continue
        names.append(_name(image))
    if not inputs:
        return Predictions([], failures)
    probs = _class_logits(model, _fast(model, optimize).eval()(torch.stack(inputs))).softmax(dim=1)
    values, indices = probs.topk(min(topk, probs.shape[1]), dim=1)
    ranked = [
        [
            Prediction(name, rank + 1, int(i), _label(labels, int(i)), float(p))
            for rank, (p, i) in enumerate(zip(values[row], indices[row], strict=True))
        ]
        for row, name in enumerate(names)
    ]
    return Predictions(ranked, failures)


def _label(labels: LabelSet | None, index: int) -> str | None:
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
    failures: tuple[Failure, ...] = ()  # files skipped (unreadable), not counted above
    # per scored image, in ImageFolder order: restricted top-1 right? (paired model comparisons)
    right: tuple[bool, ...] = ()


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


class _Images(torch.utils.data.Dataset):
    """(image, target, None), or (None, target, reason) for a file that cannot be read, so that
    a bad file is skipped and counted instead of ending the run (in any worker process)."""

    def __init__(self, samples: Sequence[tuple[str, int]], transform) -> None:
        self.samples = list(samples)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor | None, int, Failure | None]:
        path, target = self.samples[index]
        try:
            return self.transform(_open(path)), target, None
        except _UNREADABLE as err:
            return None, target, Failure(path, str(err))


def _collate(items: list) -> tuple[torch.Tensor | None, torch.Tensor, list[Failure]]:
    good = [(x, t) for x, t, failure in items if failure is None]
    failures = [failure for _, _, failure in items if failure is not None]
    if not good:
        return None, torch.empty(0, dtype=torch.long), failures
    return torch.stack([x for x, _ in good]), torch.tensor([t for _, t in good]), failures


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

    Files that cannot be read are skipped and returned in ``failures`` (not scored); if none
    can be read it is an error. ``progress``: a progress bar, shown only on a terminal and
    never with ``ZOO_QUIET=1``. ``optimize``: run the model through ``zoo.optimize``.
    """
    from torchvision.datasets import ImageFolder
    from tqdm import tqdm

    from zoo.hub.config import quiet_default

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if limit_per_class is not None and limit_per_class < 1:
        raise ValueError(f"limit_per_class must be >= 1, got {limit_per_class}")
    root = Path(data_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"data folder not found: {root}")
    folders = ImageFolder(str(root))  # lists classes and files; reading is _Images's job
    samples = folders.samples
    if limit_per_class is not None:
        samples = _first_per_class(samples, limit_per_class)
    cfg = model.pretrained_cfg
    mapping = torch.tensor(
        class_mapping(folders.classes, resolve_labels(cfg.labels, cfg.label_names))
    )
    workers = min(4, os.cpu_count() or 1) if workers is None else workers
    loader = torch.utils.data.DataLoader(
        _Images(samples, get_transforms(model)), batch_size=batch_size, num_workers=workers,
        collate_fn=_collate,
    )  # fmt: skip
    model = _fast(model, optimize).eval()
    correct1 = correct5 = seen = 0
    failures: list[Failure] = []
    right: list[bool] = []
    start = time.perf_counter()
    quiet = quiet_default(None if progress else True)
    for images, targets, skipped in tqdm(loader, desc="eval", unit="batch", disable=quiet):
        failures += skipped
        if images is None:
            continue
        logits = _class_logits(model, model(images))
        truth = mapping[targets]
        top5 = logits.topk(min(5, logits.shape[1]), dim=1).indices
        correct1 += int((top5[:, 0] == truth).sum())
        correct5 += int((top5 == truth[:, None]).any(dim=1).sum())
        right += (mapping[logits[:, mapping].argmax(dim=1)] == truth).tolist()
        seen += len(targets)
    elapsed = time.perf_counter() - start
    if not seen:
        first = f": {failures[0].item}: {failures[0].reason}" if failures else ""
        raise ValueError(f"no image in {root} could be read ({len(failures)} skipped){first}")
    return EvalResult(
        images=seen,
        classes=len(folders.classes),
        top1=100.0 * correct1 / seen,
        top5=100.0 * correct5 / seen,
        top1_restricted=100.0 * sum(right) / seen,
        images_per_second=seen / elapsed,
        class_indices=tuple(mapping.tolist()),
        failures=tuple(failures),
        right=tuple(right),
    )
