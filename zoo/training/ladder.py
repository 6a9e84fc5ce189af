"""The ablation ladder as data: the ``+TRICK`` switches, rungs, and the paper's figures.

A ladder is a list of rungs, e.g. ``baseline,efficient,+cosine,+label_smoothing,+mixup,+distill``.
A rung is either a packaged recipe (which starts afresh from that recipe) or ``+TRICK``, which
adds that trick's dotted overrides (:data:`TRICKS`) to everything the rung above had. The paper's
top-1 for a cumulative state (base recipe, set of tricks) is in :data:`PAPER`: ResNet-50-D from
Table 6, and ResNet-50 from Table 3 for baseline -> efficient (the paper has no R50-D baseline).
Torch-free: a bad ladder is reported at once.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass

from zoo.training.recipe import RecipeError, list_recipes


@dataclass(frozen=True)
class Trick:
    """One ``+name`` rung: recipe overrides added to the previous rung's (and/or the teacher)."""

    name: str
    overrides: tuple[str, ...]
    teacher: bool = False  # distillation: the run gets --teacher


TRICKS: dict[str, Trick] = {
    t.name: t
    for t in (
        Trick("cosine", ('schedule.kind="cosine"', "schedule.milestones=[]")),
        Trick("label_smoothing", ("tricks.label_smoothing=0.1",)),
        Trick("mixup", ("tricks.mixup_alpha=0.2",)),
        Trick("distill", (), teacher=True),
        Trick("ema", ("tricks.ema_decay=0.999",)),
    )
}
DEFAULT_LADDER = ("baseline", "efficient", "+cosine", "+label_smoothing", "+mixup", "+distill")


@dataclass(frozen=True)
class PaperPoint:
    """The paper's top-1 for one cumulative state: (base recipe, set of tricks)."""

    model: str
    table: str
    base: str
    tricks: frozenset[str]
    top1: float


def _pp(model: str, table: str, base: str, tricks: str, top1: float) -> PaperPoint:
    return PaperPoint(model, table, base, frozenset(tricks.split()), top1)


# arXiv v2 (facts sheet §5). Table 6 rows are cumulative; "+ distill w/o mixup" and "+ mixup w/o
# distill" are both on top of cosine + label smoothing.
PAPER: tuple[PaperPoint, ...] = (
    _pp("R50-D", "Table 6", "efficient", "", 77.16),
    _pp("R50-D", "Table 6", "efficient", "cosine", 77.91),
    _pp("R50-D", "Table 6", "efficient", "cosine label_smoothing", 78.31),
    _pp("R50-D", "Table 6", "efficient", "cosine label_smoothing distill", 78.67),
    _pp("R50-D", "Table 6", "efficient", "cosine label_smoothing mixup", 79.15),
    _pp("R50-D", "Table 6", "efficient", "cosine label_smoothing mixup distill", 79.29),
    _pp("R50", "Table 3", "baseline", "", 75.87),
    _pp("R50", "Table 3", "efficient", "", 76.21),
)


@dataclass(frozen=True)
class Rung:
    """A cumulative state of the ladder: a base recipe plus tricks, in the order added."""

    label: str  # as written in the ladder
    base: str
    tricks: tuple[str, ...]

    @property
    def dirname(self) -> str:
        return "+".join((self.base, *self.tricks))

    @property
    def overrides(self) -> tuple[str, ...]:
        return tuple(o for t in self.tricks for o in TRICKS[t].overrides)

    @property
    def teacher(self) -> bool:
        return any(TRICKS[t].teacher for t in self.tricks)


def parse_ladder(ladder: str | Sequence[str]) -> tuple[Rung, ...]:
    """``"baseline,efficient,+cosine"`` -> rungs; unknown names are errors naming the valid ones."""
    names = [n.strip() for n in (ladder.split(",") if isinstance(ladder, str) else ladder)]
    if not names or not all(names):
        raise RecipeError(f"--ladder {ladder!r}: empty rung; e.g. {','.join(DEFAULT_LADDER)}")
    recipes = list_recipes()
    rungs: list[Rung] = []
    for name in names:
        if name.startswith("+"):
            trick = name[1:]
            if trick not in TRICKS:
                raise RecipeError(_unknown_rung(name, recipes))
            if not rungs:
                raise RecipeError(
                    f"--ladder: {name} adds to the previous rung, so the ladder must start with "
                    f"a recipe ({', '.join(recipes)})"
                )
            prev = rungs[-1]
            if trick in prev.tricks:
                raise RecipeError(f"--ladder: {name} appears twice in the same ladder")
            rungs.append(Rung(name, prev.base, (*prev.tricks, trick)))
        elif name in recipes:
            rungs.append(Rung(name, name, ()))
        else:
            raise RecipeError(_unknown_rung(name, recipes))
    dirs = [r.dirname for r in rungs]
    if len(set(dirs)) != len(dirs):
        raise RecipeError(f"--ladder: the same rung twice ({', '.join(dirs)})")
    return tuple(rungs)


def _unknown_rung(name: str, recipes: list[str]) -> str:
    valid = [*recipes, *(f"+{t}" for t in TRICKS)]
    close = difflib.get_close_matches(name, valid, 1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return (
        f"--ladder: unknown rung {name!r}{hint}; a rung is a recipe ({', '.join(recipes)}) or "
        f"+TRICK ({', '.join('+' + t for t in TRICKS)})"
    )


def paper_point(rung: Rung) -> PaperPoint | None:
    """The paper's figure for this state, ResNet-50-D preferred."""
    state = frozenset(rung.tricks)
    hits = [p for p in PAPER if p.base == rung.base and p.tricks == state]
    return hits[0] if hits else None


def paper_delta(prev: Rung | None, rung: Rung) -> tuple[float, str] | None:
    """The paper's top-1 change from ``prev`` to ``rung`` measured on one model, if it has one."""
    if prev is None:
        return None
    for model in dict.fromkeys(p.model for p in PAPER):
        a = [p for p in PAPER if p.model == model and (p.base, p.tricks) == _key(prev)]
        b = [p for p in PAPER if p.model == model and (p.base, p.tricks) == _key(rung)]
        if a and b:
            return b[0].top1 - a[0].top1, f"{model}, {b[0].table}"
    return None


def _key(rung: Rung) -> tuple[str, frozenset[str]]:
    return rung.base, frozenset(rung.tricks)
