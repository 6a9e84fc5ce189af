"""The typed records a training run passes around (no logic beyond autocast)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zoo.training import data as D
from zoo.training import distributed
from zoo.training.params import EMA
from zoo.training.recipe import Recipe
from zoo.training.schedule import StepPlan


class TrainingError(ValueError):  # a ValueError: the CLI reports it as one message
    """A run that cannot go on (e.g. a non-finite loss); the message names the step."""


@dataclass(frozen=True)
class RunArgs:
    """How a run was started; stored as run.json so that --resume needs nothing else."""

    model: str
    data: str
    recipe: str
    pretrained: str | None = None
    teacher: str | None = None
    teacher_pretrained: str | None = None
    overrides: tuple[str, ...] = ()


@dataclass(frozen=True)
class RunResult:
    run_dir: Path
    metrics: dict[str, Any]
    finished: bool  # False when stopped early (signal or stop_after_steps); resume to continue


@dataclass
class State:
    """What changes as the run goes; saved in last.ckpt."""

    step: int = 0  # optimizer steps done
    best_top1: float = -1.0
    best_top5: float = 0.0
    best_epoch: int = 0
    train_seconds: float = 0.0
    train_images: int = 0


@dataclass
class Ctx:
    rec: Recipe
    plan: StepPlan
    layout: D.Layout
    d: distributed.Dist
    ddp: nn.Module
    model: nn.Module
    teacher: nn.Module | None
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    ema: EMA | None
    amp: torch.dtype | None
    num_classes: int
    run_dir: Path
    train_set: D.SeededImages
    val_images: list[torch.Tensor]
    val_targets: list[int]
    val_tf: Any
    steps_per_epoch: int


def autocast(ctx: Ctx) -> contextlib.AbstractContextManager:
    if ctx.amp is None:
        return contextlib.nullcontext()
    return torch.autocast(ctx.d.device.type, dtype=ctx.amp)
