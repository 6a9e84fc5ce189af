"""Recipes as data: a TOML file -> a frozen, validated :class:`Recipe`.

A recipe is written for its reference length and batch size. :func:`resolve` applies, in order:
a parent recipe (``extends``), dotted overrides (``optim.lr=0.2``), ``epochs`` (every
epoch-denominated point is rescaled proportionally) and ``batch_size`` (the LR is rescaled
linearly, the paper's §3.1). Unknown sections or keys are errors that name the valid ones.

This module is torch-free so that ``zoo recipes`` starts fast.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 uses the backport (a dependency there)
    import tomli as tomllib

PRECISIONS = ("fp32", "bf16", "fp16")
SCHEDULES = ("step", "cosine")
DISTILL_WEIGHTINGS = ("paper", "gluoncv")


class RecipeError(ValueError):
    """A recipe that cannot be used as written; the message names the file and the key."""


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise RecipeError(message)


@dataclass(frozen=True)
class Optim:
    """SGD with (Nesterov) momentum; ``lr`` is for the recipe's ``batch_size``."""

    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4
    no_bias_decay: bool = False  # §3.1: no decay on biases and BN gamma/beta

    def __post_init__(self) -> None:
        _check(self.lr > 0, "optim.lr must be > 0")
        _check(0 <= self.momentum < 1, "optim.momentum must be in [0, 1)")
        _check(self.weight_decay >= 0, "optim.weight_decay must be >= 0")


@dataclass(frozen=True)
class Schedule:
    """LR schedule in epochs (fractions allowed); converted to steps by ``lr_at``."""

    kind: str = "step"  # "step" (÷ gamma at milestones) or "cosine" (to 0 after warmup)
    warmup_epochs: float = 0.0  # linear from 0, per batch (§3.1)
    milestones: tuple[float, ...] = (30.0, 60.0, 90.0)
    gamma: float = 0.1

    def __post_init__(self) -> None:
        _check(self.kind in SCHEDULES, f"schedule.kind must be one of {SCHEDULES}")
        _check(self.warmup_epochs >= 0, "schedule.warmup_epochs must be >= 0")
        _check(list(self.milestones) == sorted(self.milestones), "milestones must increase")
        _check(0 < self.gamma <= 1, "schedule.gamma must be in (0, 1]")


@dataclass(frozen=True)
class Augment:
    """Training augmentation (§2.1 for "inception"); eval is resize S/0.875 + centre crop S."""

    name: str = "inception"
    scale: tuple[float, float] = (0.08, 1.0)  # RandomResizedCrop area fraction
    ratio: tuple[float, float] = (0.75, 4 / 3)
    hflip: float = 0.5
    color_jitter: float = 0.4  # brightness, contrast, saturation in [1-x, 1+x] (GluonCV)
    lighting: float = 0.1  # AlexNet PCA lighting noise std

    def __post_init__(self) -> None:
        _check(0 < self.scale[0] <= self.scale[1] <= 1, "augment.scale must be 0 < lo <= hi <= 1")
        _check(0 < self.ratio[0] <= self.ratio[1], "augment.ratio must be 0 < lo <= hi")
        _check(0 <= self.hflip <= 1, "augment.hflip is a probability")
        _check(0 <= self.color_jitter < 1, "augment.color_jitter must be in [0, 1)")
        _check(self.lighting >= 0, "augment.lighting must be >= 0")


@dataclass(frozen=True)
class Tricks:
    """The paper's switches (§3.1, §5). 0 / False is off."""

    zero_gamma: bool = False  # last BN of each residual branch starts at gamma = 0
    label_smoothing: float = 0.0  # epsilon; the paper's target (see losses.smooth_targets)
    mixup_alpha: float = 0.0  # lambda ~ Beta(alpha, alpha)
    mixup_off_epochs: float = 0.0  # the last N epochs train on clean images (GluonCV)
    distill_temperature: float = 20.0  # used only when a teacher is given
    distill_weighting: str = "paper"  # "paper": CE + T²·soft; "gluoncv": halves of both
    ema_decay: float = 0.0  # exponential moving average of the weights; 0 = off

    def __post_init__(self) -> None:
        _check(0 <= self.label_smoothing < 1, "tricks.label_smoothing must be in [0, 1)")
        _check(self.mixup_alpha >= 0, "tricks.mixup_alpha must be >= 0")
        _check(self.mixup_off_epochs >= 0, "tricks.mixup_off_epochs must be >= 0")
        _check(self.distill_temperature > 0, "tricks.distill_temperature must be > 0")
        _check(
            self.distill_weighting in DISTILL_WEIGHTINGS,
            f"tricks.distill_weighting must be one of {DISTILL_WEIGHTINGS}",
        )
        _check(0 <= self.ema_decay < 1, "tricks.ema_decay must be in [0, 1)")


@dataclass(frozen=True)
class Finetune:
    """Transfer from pretrained weights (``zoo finetune``); the defaults change nothing.

    The LR multipliers scale the schedule's LR for the pretrained backbone and for the new
    classifier; ``freeze_stages`` freezes the first N of the 5 stages (stem first: weights and
    BN statistics), ``freeze_bn`` every BatchNorm (FrozenBatchNorm2d: fixed statistics and γ/β).
    """

    backbone_lr_mult: float = 1.0
    head_lr_mult: float = 1.0
    freeze_stages: int = 0
    freeze_bn: bool = False
    # Start the new head from the pretrained classifier's rows for the data's classes when
    # every class folder is one of the weights' classes (zoo.transfer.head_from_classes).
    reuse_head: bool = False

    def __post_init__(self) -> None:
        _check(self.backbone_lr_mult >= 0, "finetune.backbone_lr_mult must be >= 0")
        _check(self.head_lr_mult > 0, "finetune.head_lr_mult must be > 0")
        _check(0 <= self.freeze_stages <= 5, "finetune.freeze_stages must be in 0..5")


@dataclass(frozen=True)
class Recipe:
    """One literal table of hyper-parameters; what a run did is its resolved recipe."""

    name: str
    description: str = ""
    epochs: float = 120.0
    batch_size: int = 256  # global batch per optimizer step (all processes, all micro-batches)
    micro_batch: int = 0  # largest batch one forward sees per process; 0 = no accumulation
    img_size: int = 224  # train crop
    # Eval crop; 0 = img_size. Random-resized crops make objects look bigger in training than
    # in a centre crop of the same size, so a model tests best somewhat larger than it trained
    # (Touvron et al. 2019, "FixRes"): training smaller is cheaper and loses nothing.
    eval_img_size: int = 0
    precision: str = "fp32"
    channels_last: bool = True
    seed: int = 0
    workers: int = 2  # DataLoader workers per process
    eval_every: int = 1  # evaluate every N epochs; the last epoch always is (short runs: time)
    limit_per_class: int = 0  # train on the first N images of each class (sorted); 0 = all
    optim: Optim = field(default_factory=Optim)
    schedule: Schedule = field(default_factory=Schedule)
    augment: Augment = field(default_factory=Augment)
    tricks: Tricks = field(default_factory=Tricks)
    finetune: Finetune = field(default_factory=Finetune)

    def __post_init__(self) -> None:
        _check(self.epochs > 0, "epochs must be > 0")
        _check(self.batch_size > 0, "batch_size must be > 0")
        _check(self.micro_batch >= 0, "micro_batch must be >= 0")
        _check(self.img_size >= 8, "img_size must be >= 8")
        _check(
            self.eval_img_size == 0 or self.eval_img_size >= 8,
            "eval_img_size must be 0 (= img_size) or >= 8",
        )
        _check(self.precision in PRECISIONS, f"precision must be one of {PRECISIONS}")
        _check(self.workers >= 0, "workers must be >= 0")
        _check(self.eval_every >= 1, "eval_every must be >= 1")
        _check(self.limit_per_class >= 0, "limit_per_class must be >= 0")
        _check(self.schedule.warmup_epochs <= self.epochs, "schedule.warmup_epochs exceeds epochs")
        _check(self.tricks.mixup_off_epochs <= self.epochs, "tricks.mixup_off_epochs > epochs")

    @property
    def eval_size(self) -> int:
        """The eval (and exported weights') crop: ``eval_img_size``, or ``img_size`` if 0."""
        return self.eval_img_size or self.img_size

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_toml(self) -> str:
        """The resolved recipe as TOML (what a run directory keeps as ``recipe.toml``)."""
        top = {k: v for k, v in self.to_dict().items() if not isinstance(v, dict)}
        lines = [f"{k} = {_toml_value(v)}" for k, v in top.items()]
        for section, values in self.to_dict().items():
            if isinstance(values, dict):
                lines += ["", f"[{section}]"]
                lines += [f"{k} = {_toml_value(v)}" for k, v in values.items()]
        return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)  # str, int, float: JSON spells them as TOML does


_SECTIONS = {
    "optim": Optim,
    "schedule": Schedule,
    "augment": Augment,
    "tricks": Tricks,
    "finetune": Finetune,
}


def _unknown(keys: set[str], valid: set[str], where: str) -> None:
    if not keys:
        return
    hints = [
        f"{k!r} (did you mean {m[0]!r}?)"
        if (m := difflib.get_close_matches(k, valid, 1))
        else repr(k)
        for k in sorted(keys)
    ]
    raise RecipeError(
        f"{where}: unknown key(s) {', '.join(hints)}; valid: {', '.join(sorted(valid))}"
    )


def _coerce(cls: type, key: str, value: Any, where: str) -> Any:
    """Check a TOML value against the field's default type; tuples arrive as lists."""
    default = {f.name: f for f in dataclasses.fields(cls)}[key]
    sample = default.default if default.default is not dataclasses.MISSING else None
    if isinstance(sample, bool):
        ok = isinstance(value, bool)
    elif isinstance(sample, int) and not isinstance(sample, bool):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(sample, float):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(sample, tuple):
        ok = isinstance(value, list | tuple) and all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in value
        )
        value = tuple(float(v) for v in value) if ok else value
    elif isinstance(sample, str):
        ok = isinstance(value, str)
    else:
        ok = True
    if not ok:
        raise RecipeError(f"{where}: {key} expects {type(sample).__name__}, got {value!r}")
    return value


def from_dict(data: dict[str, Any], *, name: str, where: str) -> Recipe:
    """Validate a parsed TOML table into a Recipe (no ``extends``: resolve that first)."""
    top_fields = {f.name for f in dataclasses.fields(Recipe)} - {"name"}
    _unknown(set(data) - top_fields, top_fields, where)
    kwargs: dict[str, Any] = {"name": name}
    try:
        for key, value in data.items():
            if key in _SECTIONS:
                cls = _SECTIONS[key]
                if not isinstance(value, dict):
                    raise RecipeError(f"{where}: [{key}] must be a table")
                valid = {f.name for f in dataclasses.fields(cls)}
                _unknown(set(value) - valid, valid, f"{where} [{key}]")
                kwargs[key] = cls(
                    **{k: _coerce(cls, k, v, f"{where} [{key}]") for k, v in value.items()}
                )
            else:
                kwargs[key] = _coerce(Recipe, key, value, where)
        return Recipe(**kwargs)
    except RecipeError as err:
        if str(err).startswith(where):
            raise
        raise RecipeError(f"{where}: {err}") from None


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        out[key] = (
            _merge(out[key], value)
            if isinstance(value, dict) and isinstance(out.get(key), dict)
            else value
        )
    return out


def recipe_dir() -> Any:
    return resources.files("zoo.training").joinpath("recipes")


def list_recipes() -> list[str]:
    return sorted(p.name[:-5] for p in recipe_dir().iterdir() if p.name.endswith(".toml"))


def _read_table(name_or_path: str) -> tuple[str, dict[str, Any], str]:
    """(name, table with ``extends`` resolved, where) for a packaged name or a TOML path."""
    path = Path(name_or_path)
    if name_or_path.endswith(".toml") or path.is_file():
        if not path.is_file():
            raise RecipeError(f"recipe file not found: {path}")
        text, name, where = path.read_text(encoding="utf-8"), path.stem, str(path)
    else:
        known = list_recipes()
        if name_or_path not in known:
            close = difflib.get_close_matches(name_or_path, known, 3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise RecipeError(
                f"unknown recipe {name_or_path!r}{hint}; known: {', '.join(known)} "
                "(or give the path of a .toml file)"
            )
        text = recipe_dir().joinpath(f"{name_or_path}.toml").read_text(encoding="utf-8")
        name, where = name_or_path, f"recipe {name_or_path!r}"
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise RecipeError(f"{where}: not valid TOML ({err})") from None
    parent = table.pop("extends", None)
    if parent is not None:
        if not isinstance(parent, str) or parent == name:
            raise RecipeError(f"{where}: extends must name another recipe")
        _, base, _ = _read_table(parent)
        base.pop("description", None)
        table = _merge(base, table)
    return name, table, where


def parse_override(text: str) -> tuple[list[str], Any]:
    """``optim.lr=0.2`` -> (["optim", "lr"], 0.2); the value is read as TOML, else a string."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise RecipeError(f"override {text!r}: expected KEY=VALUE, e.g. optim.lr=0.2")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return key.strip().split("."), value


def _apply_override(table: dict[str, Any], path: list[str], value: Any, where: str) -> None:
    if len(path) == 1:
        table[path[0]] = value
        return
    if len(path) != 2 or path[0] not in _SECTIONS:
        raise RecipeError(
            f"{where}: override {'.'.join(path)!r}: keys are top-level or SECTION.KEY with "
            f"SECTION one of {', '.join(_SECTIONS)}"
        )
    table.setdefault(path[0], {})[path[1]] = value


def rescale_epochs(recipe: Recipe, epochs: float) -> Recipe:
    """Same recipe at another length: warmup, milestones and mixup-off scale proportionally."""
    if epochs <= 0:
        raise RecipeError("epochs must be > 0")
    f = epochs / recipe.epochs
    schedule = dataclasses.replace(
        recipe.schedule,
        warmup_epochs=recipe.schedule.warmup_epochs * f,
        milestones=tuple(m * f for m in recipe.schedule.milestones),
    )
    tricks = dataclasses.replace(recipe.tricks, mixup_off_epochs=recipe.tricks.mixup_off_epochs * f)
    return dataclasses.replace(recipe, epochs=float(epochs), schedule=schedule, tricks=tricks)


def rescale_batch(recipe: Recipe, batch_size: int) -> Recipe:
    """Linear scaling rule (Goyal et al., the paper's §3.1): lr grows with the batch."""
    if batch_size <= 0:
        raise RecipeError("batch_size must be > 0")
    optim = dataclasses.replace(recipe.optim, lr=recipe.optim.lr * batch_size / recipe.batch_size)
    return dataclasses.replace(recipe, batch_size=batch_size, optim=optim)


def resolve(
    name_or_path: str,
    *,
    overrides: tuple[str, ...] | list[str] = (),
    epochs: float | None = None,
    batch_size: int | None = None,
    img_size: int | None = None,
) -> Recipe:
    """A packaged recipe (or TOML path) with overrides and rescaling applied, validated."""
    name, table, where = _read_table(name_or_path)
    for text in overrides:
        path, value = parse_override(text)
        _apply_override(table, path, value, where)
    recipe = from_dict(table, name=name, where=where)
    if epochs is not None:
        recipe = rescale_epochs(recipe, epochs)
    if batch_size is not None:
        recipe = rescale_batch(recipe, batch_size)
    if img_size is not None:
        recipe = rescale_img_size(recipe, img_size)
    return recipe


def rescale_img_size(recipe: Recipe, img_size: int) -> Recipe:
    """Train at ``img_size``; a separate eval size keeps its ratio to the train size."""
    eval_img_size = recipe.eval_img_size
    if eval_img_size:
        eval_img_size = max(8, round(eval_img_size * img_size / recipe.img_size))
    return dataclasses.replace(recipe, img_size=img_size, eval_img_size=eval_img_size)


def load_resolved(path: str | Path) -> Recipe:
    """Read a run directory's ``recipe.toml`` back (already resolved: no rescaling)."""
    path = Path(path)
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise RecipeError(f"{path}: unreadable recipe ({err})") from None
    name = table.pop("name", path.stem)
    return from_dict(table, name=str(name), where=str(path))
