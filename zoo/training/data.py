"""Input pipeline: ImageFolder splits decoded once to uint8, per-sample seeded augmentation, and a
sampler that can start anywhere inside an epoch.

Why decode once: on 2 CPU cores JPEG decoding costs about as much as a small ResNet's forward
pass, and every epoch would pay it again. Images are decoded in parallel at start, shrunk to the
eval resize (short side ceil(S / 0.875)), and kept as uint8 tensors; a corrupt file is skipped
and counted there, so every epoch sees the same samples.

Why seeds travel with indices: the sampler yields ``(index, seed)`` pairs; a sample's random
crop, flip and jitter depend only on its seed, not on which DataLoader worker draws it or on what
ran before, so a run resumed mid-epoch sees exactly the images the uninterrupted run saw.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from zoo.preprocess import Preprocess
from zoo.training.recipe import Augment

log = logging.getLogger("zoo")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".pgm", ".tif", ".tiff")
EVAL_CROP_PCT = 0.875
# AlexNet's PCA lighting: eigenvalues / eigenvectors of ImageNet's RGB covariance (0-1 scale).
_EIGVAL = torch.tensor([0.2175, 0.0188, 0.0045])
_EIGVEC = torch.tensor(
    [[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]]
)


class DataError(ValueError):
    """A dataset folder that cannot be trained on; the message says what to fix."""


@dataclass(frozen=True)
class Split:
    """One ImageFolder split: class folder names and (path, class index) samples."""

    root: Path
    classes: tuple[str, ...]
    samples: tuple[tuple[str, int], ...]


def scan_split(root: Path, classes: Sequence[str] | None = None) -> Split:
    """List an ImageFolder tree; ``classes`` (the train split's) fixes the index of each folder."""
    if not root.is_dir():
        raise DataError(f"{root}: folder not found (expected DIR/train and DIR/val ImageFolders)")
    folders = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not folders:
        raise DataError(f"{root}: no class folders (expected {root}/<class>/<image>)")
    if classes is None:
        classes = folders
    else:
        extra = sorted(set(folders) - set(classes))
        if extra:
            raise DataError(f"{root}: class folders not in the train split: {', '.join(extra[:5])}")
    index = {c: i for i, c in enumerate(classes)}
    samples, empty = [], []
    for folder in folders:
        files = sorted(
            p
            for p in (root / folder).rglob("*")
            if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
        )
        if not files:
            empty.append(folder)
        samples += [(str(p), index[folder]) for p in files]
    if empty:
        raise DataError(f"{root}: class folder(s) without images: {', '.join(empty[:5])}")
    return Split(root, tuple(classes), tuple(samples))


def scan_dataset(data_dir: str | os.PathLike) -> tuple[Split, Split]:
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise DataError(f"data folder not found: {root}")
    missing = [s for s in ("train", "val") if not (root / s).is_dir()]
    if missing:
        raise DataError(
            f"{root}: missing {' and '.join(missing)} folder(s); expected {root}/train/<class>/* "
            f"and {root}/val/<class>/* (ImageFolder layout)"
        )
    train = scan_split(root / "train")
    return train, scan_split(root / "val", train.classes)


def limit_per_class(split: Split, n: int) -> Split:
    """The first ``n`` samples (in file-name order) of each class; ``n=0`` keeps all."""
    if n <= 0:
        return split
    counts: dict[int, int] = {}
    kept = []
    for path, target in split.samples:
        counts[target] = counts.get(target, 0) + 1
        if counts[target] <= n:
            kept.append((path, target))
    return dataclasses.replace(split, samples=tuple(kept))


def fingerprint(data_dir: str | os.PathLike) -> str:
    """A short hash of every file's relative path and size: which data a run saw."""
    import hashlib

    root = Path(data_dir)
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(root)}\t{path.stat().st_size}\n".encode())
    return digest.hexdigest()[:16]


def eval_resize(img_size: int) -> int:
    return math.ceil(img_size / EVAL_CROP_PCT)


class _DecodeOne(Dataset):
    def __init__(self, paths: Sequence[str], short_side: int) -> None:
        self.paths, self.short_side = paths, short_side

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor | None:
        try:
            with Image.open(self.paths[i]) as img:
                img.draft("RGB", (self.short_side, self.short_side))  # JPEG: decode at 1/2^k
                rgb = np.asarray(img.convert("RGB"))
        except (OSError, ValueError, Image.DecompressionBombError):
            return None  # corrupt or unreadable: the caller counts it
        image = torch.from_numpy(rgb.copy()).permute(2, 0, 1)
        if min(image.shape[-2:]) > self.short_side:
            image = v2.functional.resize(image, self.short_side, antialias=True)
        return image.contiguous()


def decode_split(
    split: Split, short_side: int, workers: int, progress: bool
) -> tuple[list[torch.Tensor], list[int], list[str]]:
    """(images, targets, skipped paths): every readable image decoded once, shrunk to fit."""
    from tqdm import tqdm

    paths = [p for p, _ in split.samples]
    loader = DataLoader(
        _DecodeOne(paths, short_side),
        batch_size=None,
        num_workers=workers,
        collate_fn=lambda x: x,
        prefetch_factor=32 if workers else None,
    )
    images, targets, skipped = [], [], []
    bar = tqdm(
        loader,
        total=len(paths),
        desc=f"decode {split.root.name}",
        unit="img",
        disable=not progress,
        leave=False,
    )
    for (path, target), image in zip(split.samples, bar, strict=True):
        if image is None:
            skipped.append(path)
        else:
            images.append(image)
            targets.append(target)
    if skipped:
        log.warning(
            "%s: skipped %d unreadable image(s), e.g. %s", split.root, len(skipped), skipped[0]
        )
    if not images:
        raise DataError(f"{split.root}: no readable images")
    return images, targets, skipped


class Lighting(torch.nn.Module):
    """AlexNet-style PCA lighting noise on a float image in [0, 1] (the paper's §2.1 step 5)."""

    def __init__(self, std: float) -> None:
        super().__init__()
        self.std = std

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        alpha = torch.randn(3) * self.std
        rgb = _EIGVEC @ (alpha * _EIGVAL)
        return image + rgb.view(3, 1, 1)


def train_transform(aug: Augment, img_size: int, pre: Preprocess) -> v2.Compose:
    steps: list[torch.nn.Module] = [
        v2.RandomResizedCrop(img_size, scale=aug.scale, ratio=aug.ratio, antialias=True)
    ]
    if aug.hflip > 0:
        steps.append(v2.RandomHorizontalFlip(aug.hflip))
    if aug.color_jitter > 0:
        j = aug.color_jitter
        steps.append(v2.ColorJitter(brightness=j, contrast=j, saturation=j))
    steps.append(v2.ToDtype(torch.float32, scale=True))
    if aug.lighting > 0:
        steps.append(Lighting(aug.lighting))
    steps.append(v2.Normalize(mean=list(pre.mean), std=list(pre.std)))
    return v2.Compose(steps)


def eval_transform(img_size: int, pre: Preprocess) -> v2.Compose:
    return v2.Compose(
        [
            v2.Resize(eval_resize(img_size), antialias=True),
            v2.CenterCrop(img_size),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=list(pre.mean), std=list(pre.std)),
        ]
    )


class SeededImages(Dataset):
    """Decoded images; item ``(index, seed)`` applies the transform under that seed."""

    def __init__(self, images: list[torch.Tensor], targets: list[int], transform: v2.Compose):
        self.images, self.targets, self.transform = images, targets, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, int]:
        index, seed = item
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.transform(self.images[index]), self.targets[index]


@dataclass(frozen=True)
class Layout:
    """How a global batch is cut: ``accum`` micro-batches per process, ``world`` processes."""

    batch_size: int  # global, per optimizer step
    world: int
    accum: int

    @property
    def micro(self) -> int:
        return self.batch_size // (self.world * self.accum)

    @classmethod
    def plan(cls, batch_size: int, micro_batch: int, world: int) -> Layout:
        per_process = batch_size // world
        if batch_size % world:
            raise DataError(f"batch_size {batch_size} is not divisible by {world} processes")
        accum = 1 if micro_batch <= 0 else math.ceil(per_process / micro_batch)
        while per_process % accum:  # the smallest even split at or below micro_batch
            accum += 1
        return cls(batch_size, world, accum)


def sample_seed(seed: int, epoch: int, position: int) -> int:
    """A sample's augmentation seed: a function of where it stands in the run, nothing else."""
    return (seed * 1_000_003 + epoch) * 100_000_007 + position


class StepSampler:
    """Yields micro-batches of ``(index, seed)`` for one process, from a given step of an epoch.

    Step ``s`` of epoch ``e`` takes positions ``[s·B, (s+1)·B)`` of a permutation seeded by
    ``(seed, e)``; chunk ``c = micro·world + rank`` of that batch goes to process ``rank`` as its
    ``micro``-th micro-batch. One process accumulating over W·A chunks and W processes each
    accumulating A therefore see the same samples (what the DDP test relies on).
    """

    def __init__(
        self, n: int, layout: Layout, seed: int, epoch: int, start_step: int, rank: int
    ) -> None:
        self.n, self.layout, self.seed, self.epoch = n, layout, seed, epoch
        self.start_step, self.rank = start_step, rank

    def steps_per_epoch(self) -> int:
        return self.n // self.layout.batch_size

    def __len__(self) -> int:
        return (self.steps_per_epoch() - self.start_step) * self.layout.accum

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        g = torch.Generator().manual_seed(self.seed * 7919 + self.epoch)
        order = torch.randperm(self.n, generator=g).tolist()
        lay, m = self.layout, self.layout.micro
        for step in range(self.start_step, self.steps_per_epoch()):
            base = step * lay.batch_size
            for micro in range(lay.accum):
                start = base + (micro * lay.world + self.rank) * m
                yield [
                    (order[p], sample_seed(self.seed, self.epoch, p))
                    for p in range(start, start + m)
                ]


def collate(batch: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    images, targets = zip(*batch, strict=True)
    return torch.stack(images), torch.tensor(targets)


def train_loader(data: SeededImages, sampler: StepSampler, workers: int) -> DataLoader:
    return DataLoader(
        data,
        batch_sampler=sampler,
        num_workers=workers,
        collate_fn=collate,
        persistent_workers=False,
        prefetch_factor=4 if workers else None,
    )


class _EvalItems(Dataset):
    def __init__(self, images: list[torch.Tensor], targets: list[int], transform: v2.Compose):
        self.images, self.targets, self.transform = images, targets, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.images[i]), self.targets[i]


def eval_loader(
    images: list[torch.Tensor],
    targets: list[int],
    transform: v2.Compose,
    batch_size: int,
    workers: int,
    rank: int = 0,
    world: int = 1,
) -> DataLoader:
    """The val split (this process's shard of it), in order."""
    items = _EvalItems(images, targets, transform)
    shard = torch.utils.data.Subset(items, range(rank, len(items), world))
    return DataLoader(shard, batch_size=batch_size, num_workers=workers, collate_fn=collate)
