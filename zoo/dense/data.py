"""A COCO-format folder as datasets for detection (boxes) and semantic segmentation (masks).

Layout (``coco128_detseg/s320`` has it)::

    DIR/images/<file_name>            the images the JSON names
    DIR/annotations/<name>.json       COCO instances (bbox [x, y, w, h] in pixels, iscrowd)
    DIR/masks_<set>/<stem>.png        optional uint8 label maps (0 = background, 255 = ignore)
    DIR/splits/{train,val}.txt        file names, one a line (or DIR/../splits)

Detection labels are contiguous, 1..K in the order of the JSON's category ids (0 = background);
crowd regions are not boxes to find (torchvision's rule), but they stay in the ground truth
pycocotools scores against (where COCO ignores them).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset


class DenseDataError(ValueError):
    """A dataset folder that cannot be used; the message says what is missing."""


@dataclass(frozen=True)
class CocoData:
    root: Path
    annotations: Path
    images: dict[str, int]  # file name -> image id
    boxes: dict[int, list[tuple[list[float], int]]]  # image id -> ([x1,y1,x2,y2], label), no crowd
    category_ids: tuple[int, ...]  # COCO id of contiguous label 1, 2, ...
    category_names: tuple[str, ...]
    splits: dict[str, tuple[str, ...]]  # "train"/"val" -> file names

    @classmethod
    def open(cls, data_dir: str | Path) -> CocoData:
        root = Path(data_dir).expanduser()
        if not (root / "images").is_dir():
            raise DenseDataError(f"{root}: no images/ folder (expected a COCO-format folder)")
        jsons = sorted((root / "annotations").glob("*.json"))
        if len(jsons) != 1:
            raise DenseDataError(
                f"{root}/annotations: expected exactly one COCO instances .json, found {len(jsons)}"
            )
        try:
            coco = json.loads(jsons[0].read_text(encoding="utf-8"))
            categories = sorted(coco["categories"], key=lambda c: c["id"])
            images = {im["file_name"]: im["id"] for im in coco["images"]}
            anns = coco["annotations"]
        except (KeyError, TypeError, json.JSONDecodeError) as err:
            raise DenseDataError(f"{jsons[0]}: not a COCO instances file ({err})") from None
        label = {c["id"]: i + 1 for i, c in enumerate(categories)}
        boxes: dict[int, list[tuple[list[float], int]]] = {i: [] for i in images.values()}
        for a in anns:
            x, y, w, h = a["bbox"]
            if not a.get("iscrowd", 0) and w > 1 and h > 1 and a["image_id"] in boxes:
                boxes[a["image_id"]].append(([x, y, x + w, y + h], label[a["category_id"]]))
        splits = {}
        for name in ("train", "val"):
            found = [
                p
                for p in (root / "splits", root.parent / "splits")
                if (p / f"{name}.txt").is_file()
            ]
            if not found:
                raise DenseDataError(f"{root}: no splits/{name}.txt (here or one folder up)")
            files = tuple(found[0].joinpath(f"{name}.txt").read_text().split())
            outside = [f for f in files if Path(f).name != f or f in ("..", ".")]
            if outside:  # names inside images/ only: no path leads out of the folder
                raise DenseDataError(f"splits/{name}.txt: not plain file names: {outside[:3]}")
            unknown = [f for f in files if f not in images]
            if unknown:
                raise DenseDataError(
                    f"splits/{name}.txt names images not in the JSON: {unknown[:3]}"
                )
            splits[name] = files
        return cls(
            root,
            jsons[0],
            images,
            boxes,
            tuple(c["id"] for c in categories),
            tuple(c["name"] for c in categories),
            splits,
        )

    def masks_dir(self, masks: str) -> Path:
        path = self.root / f"masks_{masks}"
        if not path.is_dir():
            found = sorted(p.name[6:] for p in self.root.glob("masks_*") if p.is_dir())
            raise DenseDataError(f"{path}: not found; mask sets here: {found or 'none'}")
        return path


def _image(path: Path) -> torch.Tensor:
    with Image.open(path) as im:
        return torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1)


class DetectionSet(Dataset):
    """(float image in [0, 1], {"boxes", "labels", "image_id"}); train: random h-flip."""

    def __init__(self, data: CocoData, split: str, train: bool, seed: int = 0) -> None:
        self.data, self.files, self.train = data, data.splits[split], train
        self.rng = random.Random(seed)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, Any]]:
        name = self.files[i]
        image = _image(self.data.root / "images" / name).float() / 255
        image_id = self.data.images[name]
        rows = self.data.boxes[image_id]
        boxes = torch.tensor([b for b, _ in rows], dtype=torch.float32).reshape(-1, 4)
        labels = torch.tensor([c for _, c in rows], dtype=torch.int64)
        if self.train and self.rng.random() < 0.5:
            image = image.flip(-1)
            boxes = torch.stack(
                [
                    image.shape[-1] - boxes[:, 2],
                    boxes[:, 1],
                    image.shape[-1] - boxes[:, 0],
                    boxes[:, 3],
                ],
                dim=1,
            )
        return image, {"boxes": boxes, "labels": labels, "image_id": image_id}


class SegmentationSet(Dataset):
    """(normalised image, long label map); train: random h-flip and a ``crop`` square crop
    (padded with 0 / ignore 255 where the image is smaller); eval: the whole image."""

    def __init__(
        self,
        data: CocoData,
        split: str,
        masks: Path,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        train: bool,
        crop: int = 256,
        seed: int = 0,
    ) -> None:
        self.data, self.files, self.masks, self.train, self.crop = (
            data,
            data.splits[split],
            masks,
            train,
            crop,
        )
        self.mean = torch.tensor(mean).view(-1, 1, 1)
        self.std = torch.tensor(std).view(-1, 1, 1)
        self.rng = random.Random(seed)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        name = self.files[i]
        image = _image(self.data.root / "images" / name).float() / 255
        with Image.open(self.masks / (Path(name).stem + ".png")) as m:
            mask = torch.from_numpy(np.asarray(m).astype(np.int64))
        if self.train:
            if self.rng.random() < 0.5:
                image, mask = image.flip(-1), mask.flip(-1)
            image, mask = self._crop(image, mask)
        return (image - self.mean) / self.std, mask

    def _crop(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.crop
        h, w = mask.shape
        ph, pw = max(0, c - h), max(0, c - w)
        if ph or pw:
            image = torch.nn.functional.pad(image, (0, pw, 0, ph), value=0.0)
            mask = torch.nn.functional.pad(mask, (0, pw, 0, ph), value=255)
        h, w = mask.shape
        top, left = self.rng.randint(0, h - c), self.rng.randint(0, w - c)
        return image[:, top : top + c, left : left + c], mask[top : top + c, left : left + c]


def collate_lists(batch: list) -> tuple[list, list]:
    return [b[0] for b in batch], [b[1] for b in batch]


def collate_stack(batch: list) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.stack([b[0] for b in batch]), torch.stack([b[1] for b in batch])


__all__ = ["CocoData", "DenseDataError", "DetectionSet", "SegmentationSet"]
