"""``zoo ablate``: the paper's Table 6 as a cumulative ladder of ordinary runs.

Every rung of the ladder (:mod:`zoo.training.ladder`) trains ``seeds`` normal run directories
through :func:`zoo.training.loop.train`, at one batch size, length and image size for the whole
ladder (the LR follows each recipe's linear scaling rule, so ``baseline`` and ``efficient`` both
start from 0.1 x B/256). The results go to ``ablation.md`` (mean ± std top-1 per rung, the
paper's figures beside), ``ablation.png`` and ``ablation.json``.

A run directory's name says what it holds (``efficient+cosine/seed0``), so a run that finished
is reused and a stopped one is resumed when the same (or a longer) ladder is run again; a folder
holding a run of another recipe or data is an error, never silently mixed in.
"""

from __future__ import annotations

import json
import logging
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo.training.ladder import (
    DEFAULT_LADDER,
    TRICKS,
    PaperPoint,
    Rung,
    paper_delta,
    paper_point,
    parse_ladder,
)
from zoo.training.recipe import Recipe, RecipeError, resolve

log = logging.getLogger("zoo")

TABLE_FILE, PLOT_FILE, JSON_FILE = "ablation.md", "ablation.png", "ablation.json"


@dataclass(frozen=True)
class Settings:
    """What every rung shares."""

    model: str
    data: Path
    epochs: float
    batch_size: int
    img_size: int | None
    overrides: tuple[str, ...]  # --set, applied before each rung's own overrides
    teacher: str | None
    teacher_pretrained: str | None

    def recipe(self, rung: Rung, seed: int) -> Recipe:
        return resolve(
            rung.base,
            overrides=self.run_overrides(rung, seed),
            epochs=self.epochs,
            batch_size=self.batch_size,
            img_size=self.img_size,
        )

    def run_overrides(self, rung: Rung, seed: int) -> tuple[str, ...]:
        return (*self.overrides, *rung.overrides, f"seed={seed}")


@dataclass(frozen=True)
class RunRecord:
    seed: int
    run_dir: str
    top1: float | None
    top5: float | None
    train_seconds: float | None
    how: str  # "trained", "resumed" or "reused"


@dataclass(frozen=True)
class RungResult:
    rung: Rung
    runs: tuple[RunRecord, ...]
    paper: PaperPoint | None
    paper_delta: (
        tuple[float, str] | None
    )  # vs the previous rung on one model: (Δ, "R50-D, Table 6")

    @property
    def top1s(self) -> list[float]:
        return [r.top1 for r in self.runs if r.top1 is not None]

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.top1s) if self.top1s else None

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.top1s) if len(self.top1s) > 1 else None


@dataclass(frozen=True)
class AblationResult:
    out: Path
    rungs: tuple[RungResult, ...]
    finished: bool  # False when a run was stopped (signal): run the same command to continue
    files: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        rows = []
        for i, r in enumerate(self.rungs):
            prev = self.rungs[i - 1].mean if i else None
            rows.append(
                {
                    "rung": r.rung.label,
                    "state": r.rung.dirname,
                    "overrides": list(r.rung.overrides),
                    "teacher": r.rung.teacher,
                    "top1_mean": _round(r.mean),
                    "top1_std": _round(r.std),
                    "delta": _round(
                        r.mean - prev if r.mean is not None and prev is not None else None
                    ),
                    "paper_top1": r.paper.top1 if r.paper else None,
                    "paper_model": f"{r.paper.model} ({r.paper.table})" if r.paper else None,
                    "paper_delta": _round(r.paper_delta[0]) if r.paper_delta else None,
                    "paper_delta_from": r.paper_delta[1] if r.paper_delta else None,
                    "runs": [vars(run) for run in r.runs],
                }
            )
        return {"out": str(self.out), "finished": self.finished, "rungs": rows, **self.files}


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def ablate(
    model: str,
    data: str | Path,
    *,
    ladder: str | Sequence[str] = DEFAULT_LADDER,
    seeds: int = 1,
    epochs: float | None = None,
    img_size: int | None = None,
    batch_size: int | None = None,
    overrides: Sequence[str] = (),
    teacher: str | None = None,
    teacher_pretrained: str | None = None,
    out: str | Path | None = None,
    progress: bool = True,
) -> AblationResult:
    """Train every rung of ``ladder`` ``seeds`` times (or reuse finished runs in ``out``) and
    write ``ablation.md``, ``ablation.png`` and ``ablation.json`` there.

    ``epochs`` and ``batch_size`` default to the first rung's recipe; they are the same for every
    rung. ``overrides`` (``--set``) apply to every rung, before the rung's own switches.
    """
    rungs = parse_ladder(ladder)
    if seeds < 1:
        raise RecipeError("--seeds must be >= 1")
    needs_teacher = [r.label for r in rungs if r.teacher]
    if needs_teacher and not teacher:
        raise RecipeError(
            f"rung {needs_teacher[0]} needs a teacher: give --teacher ARCH (and "
            "--teacher-pretrained TAG|PATH), or leave +distill out of the ladder"
        )
    if teacher and not needs_teacher:
        log.warning("--teacher %s is not used: the ladder has no +distill rung", teacher)
    first = resolve(rungs[0].base, overrides=tuple(overrides))  # validates --set once, early
    settings = Settings(
        model,
        Path(data).expanduser().resolve(),
        float(epochs if epochs is not None else first.epochs),
        int(batch_size if batch_size is not None else first.batch_size),
        img_size,
        tuple(overrides),
        teacher,
        teacher_pretrained,
    )
    for rung in rungs:  # every recipe resolves before hours of training, not after
        settings.recipe(rung, 0)
    out = Path(out) if out else Path("runs") / f"ablate-{model}"
    results: list[RungResult] = []
    finished = True
    for i, rung in enumerate(rungs):
        runs = []
        for seed in range(seeds):
            if finished:
                record, finished = _run_one(settings, rung, seed, out, progress)
                runs.append(record)
        results.append(
            RungResult(
                rung, tuple(runs), paper_point(rung), paper_delta(rungs[i - 1] if i else None, rung)
            )
        )
    result = AblationResult(out, tuple(results), finished)
    return _write_report(result, settings, seeds)


def _run_one(
    settings: Settings, rung: Rung, seed: int, out: Path, progress: bool
) -> tuple[RunRecord, bool]:
    """Train, resume or reuse one run; (its record, whether it finished)."""
    from zoo.training import rundir
    from zoo.training.loop import train

    run_dir = out / rung.dirname / f"seed{seed}"
    recipe = settings.recipe(rung, seed)
    teacher = settings.teacher if rung.teacher else None
    teacher_weights = settings.teacher_pretrained if rung.teacher else None
    how = "trained"
    if (run_dir / rundir.RECIPE_FILE).is_file():
        _check_same_run(run_dir, recipe, settings, teacher, teacher_weights)
        metrics = _read_json(run_dir / rundir.METRICS_FILE)
        if metrics.get("finished") and (run_dir / rundir.FINAL_FILE).is_file():
            log.info("%s: finished before, reused", run_dir)
            return _record(seed, run_dir, metrics, "reused"), True
        if (run_dir / rundir.CKPT_FILE).is_file():
            how = "resumed"
        else:  # stopped before its first checkpoint: nothing to keep
            (run_dir / rundir.LOG_FILE).unlink(missing_ok=True)
    log.info(
        "%s %s (seed %d): %s",
        "resuming" if how == "resumed" else "training",
        rung.label,
        seed,
        run_dir,
    )
    if how == "resumed":
        result = train("", "", resume=run_dir, progress=progress)
    else:
        result = train(
            settings.model,
            settings.data,
            recipe=rung.base,
            overrides=settings.run_overrides(rung, seed),
            epochs=settings.epochs,
            img_size=settings.img_size,
            batch_size=settings.batch_size,
            teacher=teacher,
            teacher_pretrained=teacher_weights,
            out=run_dir,
            progress=progress,
        )
    return _record(seed, run_dir, result.metrics, how), result.finished


def _record(seed: int, run_dir: Path, metrics: dict[str, Any], how: str) -> RunRecord:
    finished = bool(metrics.get("finished"))
    return RunRecord(
        seed,
        str(run_dir),
        metrics.get("top1") if finished else None,
        metrics.get("top5") if finished else None,
        metrics.get("train_seconds"),
        how,
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def _check_same_run(
    run_dir: Path,
    recipe: Recipe,
    settings: Settings,
    teacher: str | None,
    teacher_weights: str | None,
) -> None:
    """A folder reused or resumed must hold this very run; name the first difference if not."""
    from zoo.training import rundir
    from zoo.training.recipe import load_resolved

    have = _flat(load_resolved(run_dir / rundir.RECIPE_FILE).to_dict())
    want = _flat(recipe.to_dict())
    diffs = [
        f"{k}: {have.get(k)!r} there, {want.get(k)!r} now" for k in want if have.get(k) != want[k]
    ]
    args = _read_json(run_dir / rundir.RUN_FILE)
    for key, value in (
        ("model", settings.model),
        ("data", str(settings.data)),
        ("teacher", teacher),
        ("teacher_pretrained", teacher_weights),
    ):
        if args.get(key) != value:
            diffs.append(f"{key}: {args.get(key)!r} there, {value!r} now")
    if diffs:
        raise RecipeError(
            f"{run_dir} holds another run ({'; '.join(diffs[:3])}); remove that folder or "
            "choose another --out"
        )


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v
    return out


def _fmt(x: float | None, sign: bool = False) -> str:
    if x is None:
        return "–"
    return f"{x:+.2f}" if sign else f"{x:.2f}"


def _adds(rung: Rung, settings: Settings) -> str:
    if not rung.tricks:
        return f"recipe `{rung.base}`"
    trick = TRICKS[rung.tricks[-1]]
    parts = [f"`{o}`" for o in trick.overrides]
    if trick.teacher:
        weights = f" ({settings.teacher_pretrained})" if settings.teacher_pretrained else ""
        parts.append(f"teacher `{settings.teacher}`{weights}")
    return ", ".join(parts)


def markdown(result: AblationResult, settings: Settings, seeds: int) -> str:
    """The ladder as a markdown table, our mean ± std beside the paper's figures."""
    shared = ", ".join(f"`{o}`" for o in settings.overrides) or "none"
    lines = [
        f"# Ablation ladder: {settings.model} on {settings.data.name}",
        "",
        "Cumulative, as in the paper's Table 6: each `+` rung adds its switch to the rung above; "
        "a recipe name starts afresh from that recipe.",
        f"Every rung: {settings.epochs:g} epochs, batch {settings.batch_size} (the LR follows "
        "each recipe's linear scaling rule), "
        f"{settings.img_size or 'the recipe'}"
        f"{' px' if settings.img_size else ''}; --set: {shared}; seeds 0..{seeds - 1}.",
        "Top-1: final-epoch val top-1 (%), mean ± sample std over seeds; Δ: change from the rung "
        "above. Paper: arXiv v2, ResNet-50-D (Table 6), and ResNet-50 (Table 3) for "
        "baseline → efficient; the paper's efficient setting uses batch 1024, which a single "
        "batch size for every rung does not reproduce.",
        "",
        "| rung | adds | runs | top-1 (%) | Δ | paper top-1 | paper Δ |",
        "|---|---|---|---|---|---|---|",
    ]
    rows = result.to_dict()["rungs"]
    for r, row in zip(result.rungs, rows, strict=True):
        top1 = _fmt(r.mean)
        if r.std is not None:
            top1 += f" ± {r.std:.2f}"
        paper = f"{r.paper.top1:.2f} ({r.paper.model}, {r.paper.table})" if r.paper else "–"
        pdelta = f"{r.paper_delta[0]:+.2f} ({r.paper_delta[1]})" if r.paper_delta else "–"
        lines.append(
            f"| {r.rung.label} | {_adds(r.rung, settings)} | {len(r.top1s)}/{seeds} | {top1} | "
            f"{_fmt(row['delta'], sign=True)} | {paper} | {pdelta} |"
        )
    lines += ["", "Runs:", ""]
    for r in result.rungs:
        for run in r.runs:
            secs = f", {run.train_seconds:.0f} s training" if run.train_seconds else ""
            lines.append(
                f"- `{Path(run.run_dir).relative_to(result.out)}`: top-1 {_fmt(run.top1)}, "
                f"top-5 {_fmt(run.top5)} ({run.how}{secs})"
            )
    if not result.finished:
        lines += ["", "**Stopped before the end**: run the same command again to continue."]
    return "\n".join(lines) + "\n"


def plot(result: AblationResult, path: Path) -> None:
    """Top-1 per rung (mean, std bar, each seed a dot) and Δ per rung, ours beside the paper's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from zoo.hub.atomic import atomic_path

    labels = [r.rung.label for r in result.rungs]
    x = list(range(len(labels)))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4))
    done = [(i, r) for i, r in enumerate(result.rungs) if r.mean is not None]
    ax1.errorbar(
        [i for i, _ in done],
        [r.mean for _, r in done],
        yerr=[r.std or 0.0 for _, r in done],
        fmt="o-",
        capsize=4,
        label="mean ± std",
    )
    for i, r in done:
        ax1.plot([i] * len(r.top1s), r.top1s, "k.", markersize=5)
    finite = [v for r in result.rungs for v in r.top1s]
    if finite:
        ax1.set_ylim(max(0.0, min(finite) - 5), min(100.0, max(finite) + 3))
    ax1.set(title="val top-1 (%); dots: single seeds", xticks=x, xlim=(-0.5, len(x) - 0.5))
    ax1.set_xticklabels(labels, rotation=30, ha="right")
    rows = result.to_dict()["rungs"]
    ours = [row["delta"] or 0.0 for row in rows]
    paper = [row["paper_delta"] or 0.0 for row in rows]
    ax2.bar([i - 0.2 for i in x], ours, width=0.4, label="ours")
    ax2.bar([i + 0.2 for i in x], paper, width=0.4, label="paper (R50-D / R50)")
    ax2.axhline(0, color="k", linewidth=0.8)
    ax2.set(title="Δ top-1 from the rung above (points)", xticks=x)
    ax2.set_xticklabels(labels, rotation=30, ha="right")
    ax2.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


def _write_report(result: AblationResult, settings: Settings, seeds: int) -> AblationResult:
    from zoo.hub.atomic import atomic_path

    files = {
        "table": str(result.out / TABLE_FILE),
        "plot": str(result.out / PLOT_FILE),
        "json": str(result.out / JSON_FILE),
    }
    result = AblationResult(result.out, result.rungs, result.finished, files)
    result.out.mkdir(parents=True, exist_ok=True)
    with atomic_path(result.out / TABLE_FILE) as tmp:
        tmp.write_text(markdown(result, settings, seeds), encoding="utf-8")
    with atomic_path(result.out / JSON_FILE) as tmp:
        tmp.write_text(json.dumps(result.to_dict(), indent=2) + "\n", encoding="utf-8")
    plot(result, result.out / PLOT_FILE)
    return result
