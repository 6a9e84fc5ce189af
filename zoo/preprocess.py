"""Eval preprocessing as a typed record that travels with an architecture or its weights."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Any

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATIONS = ("nearest", "bilinear", "bicubic")
MAX_SIDE = 4096  # pixels: far above any eval size, far below an allocation that hurts
MAX_CHANNELS = 1024  # multispectral inputs have dozens; a corrupt file may claim millions


@dataclass(frozen=True, kw_only=True)
class Preprocess:
    """Resize the short side to ``resize``, centre-crop ``crop``, scale to [0,1], normalise."""

    crop: int = 224
    resize: int = 256
    interpolation: str = "bilinear"
    # One value per input channel (a 1-channel model's weights carry one of each).
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    def __post_init__(self) -> None:
        # Files and manifests carry these: check types and ranges, not only relations, so that
        # a "crop": "224" or a 10**9-pixel resize is an error here, not a crash at predict time.
        for name in ("crop", "resize"):
            value = getattr(self, name)
            if type(value) is not int or not 0 < value <= MAX_SIDE:
                raise ValueError(f"{name} must be a whole number of pixels in 1..{MAX_SIDE}, "
                                 f"not {value!r}")  # fmt: skip
        for name in ("mean", "std"):
            values = getattr(self, name)
            if (
                not isinstance(values, tuple)
                or not 1 <= len(values) <= MAX_CHANNELS
                or not all(
                    isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
                    for v in values
                )
            ):
                raise ValueError(f"{name} must be 1..{MAX_CHANNELS} finite numbers, not {values!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"interpolation must be one of {INTERPOLATIONS}, not {self.interpolation!r}"
            )
        if not 0 < self.crop <= self.resize:
            raise ValueError(f"need 0 < crop <= resize, got crop={self.crop} resize={self.resize}")
        if not len(self.mean) == len(self.std) >= 1 or min(self.std) <= 0:
            raise ValueError("mean and std need one value per channel each, std positive")

    @classmethod
    def from_crop_pct(
        cls,
        crop: int,
        crop_pct: float = 0.875,
        *,
        round_up: bool = False,
        interpolation: str = "bilinear",
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
    ) -> Preprocess:
        """Resize to crop / crop_pct, rounded the way the weights' publisher rounds it.

        timm rounds down (``math.floor`` in ``transforms_imagenet_eval``), GluonCV's eval scripts
        round up (``math.ceil``): 299 / 0.875 is 341 for timm and 342 for GluonCV, so pass
        ``round_up=True`` for GluonCV's. Manifest entries store the resulting ``resize``.
        """
        size = crop / crop_pct
        resize = math.ceil(size) if round_up else math.floor(size)
        return cls(crop=crop, resize=resize, interpolation=interpolation, mean=mean, std=std)

    @property
    def input_size(self) -> tuple[int, int, int]:
        return (len(self.mean), self.crop, self.crop)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocess:
        known = {"crop", "resize", "interpolation", "mean", "std"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(
                f"unknown preprocessing keys {sorted(unknown)}; known: {sorted(known)}"
            )
        if not all(isinstance(data.get(k, ()), list | tuple) for k in ("mean", "std")):
            raise ValueError("mean and std must be lists of numbers")
        fixed = {k: tuple(v) if k in ("mean", "std") else v for k, v in data.items()}
        return cls(**fixed)
