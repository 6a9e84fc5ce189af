"""A distillation teacher that sees what the student sees, in its own input convention.

The student's batch is normalised with the student's mean/std at the student's size. The teacher
gets the same pixels (mixed ones too, with mixup) re-normalised with its own weights' mean/std
and resized to its own crop when that differs; its logits are then cut to the student's classes
through class ids: an ImageNet teacher teaches an ImageNet subset (e.g. Imagenette's WordNet-id
folders), and any zoo checkpoint whose classes cover the student's can teach.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zoo.inference import class_mapping
from zoo.labels import resolve_labels
from zoo.preprocess import Preprocess


class Teacher(nn.Module):
    def __init__(self, model: nn.Module, student_pre: Preprocess, class_ids: tuple[str, ...]):
        super().__init__()
        cfg = model.pretrained_cfg
        try:
            columns = class_mapping(class_ids, resolve_labels(cfg.labels))
        except ValueError as err:
            raise ValueError(f"teacher {cfg.arch} ({cfg.weights}): {err}") from None
        self.model = model.eval().requires_grad_(False)
        self.offset = cfg.label_offset
        self.register_buffer("columns", torch.tensor(columns) + cfg.label_offset)
        t_pre = cfg.preprocess
        s_mean, s_std = torch.tensor(student_pre.mean), torch.tensor(student_pre.std)
        t_mean, t_std = torch.tensor(t_pre.mean), torch.tensor(t_pre.std)
        # x_t = (x_s·σs + μs - μt) / σt = x_s·scale + shift, per channel
        self.register_buffer("scale", (s_std / t_std).view(1, -1, 1, 1))
        self.register_buffer("shift", ((s_mean - t_mean) / t_std).view(1, -1, 1, 1))
        self.size = t_pre.crop

    def train(self, mode: bool = True) -> Teacher:  # the teacher never leaves eval mode
        return super().train(False)

    @torch.no_grad()
    def forward(self, student_images: torch.Tensor) -> torch.Tensor:
        x = student_images * self.scale + self.shift
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return self.model(x)[:, self.columns]
