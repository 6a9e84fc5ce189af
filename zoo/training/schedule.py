"""The learning rate as a pure function of the optimizer step: ``lr_at(step, plan)``.

Epoch-denominated points (warmup, milestones) become steps once the number of steps per epoch is
known; the function itself is plain arithmetic you can plot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from zoo.training.recipe import Recipe


@dataclass(frozen=True)
class StepPlan:
    """A recipe's schedule in optimizer steps."""

    lr: float  # peak LR (after warmup)
    total_steps: int
    warmup_steps: int
    kind: str  # "step" or "cosine"
    milestones: tuple[int, ...]  # steps at which the LR is multiplied by gamma
    gamma: float

    @classmethod
    def from_recipe(cls, recipe: Recipe, steps_per_epoch: int) -> StepPlan:
        def to_steps(epochs: float) -> int:
            return round(epochs * steps_per_epoch)

        return cls(
            lr=recipe.optim.lr,
            total_steps=max(1, to_steps(recipe.epochs)),
            warmup_steps=to_steps(recipe.schedule.warmup_epochs),
            kind=recipe.schedule.kind,
            milestones=tuple(to_steps(m) for m in recipe.schedule.milestones),
            gamma=recipe.schedule.gamma,
        )


def lr_at(step: int, plan: StepPlan) -> float:
    """LR used by optimizer step ``step`` (0-based).

    Warmup (§3.1): step i < m uses (i + 1)·η/m, the paper's i·η/m for batches counted from 1.
    Cosine (§5.1): after warmup, η·(1 + cos(π·t/T))/2 with t, T counted without the warmup, so
    the last step's LR approaches 0. Step decay multiplies by gamma at each milestone passed.
    """
    if step < plan.warmup_steps:
        return plan.lr * (step + 1) / plan.warmup_steps
    if plan.kind == "cosine":
        t = step - plan.warmup_steps
        span = max(1, plan.total_steps - plan.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(t, span) / span)) * plan.lr
    passed = sum(1 for m in plan.milestones if step >= m)
    return plan.lr * plan.gamma**passed
