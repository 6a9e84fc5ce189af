"""zoo ablate: the Table-6 ladder builds each rung's recipe cumulatively, writes the table and the
plot, reuses finished runs, resumes stopped ones, and meets bad ladders with one message."""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from test_train import needs_imagenette, subset

from zoo.cli import main as cli_main
from zoo.training.ablation import ablate
from zoo.training.ladder import paper_delta, parse_ladder
from zoo.training.loop import train

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ARCH = "mobilenetv2_0_25"  # residual (zero-gamma has something to zero) and cheap on 2 cores
COMMON = dict(epochs=1, img_size=32, batch_size=4, progress=False)
SET = ("workers=0", "precision=fp32")


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny batches gain nothing from intra-op threads, and lose much when cores are shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def recipe_of(run_dir: Path) -> dict:
    return tomllib.loads((run_dir / "recipe.toml").read_text())


def test_paper_deltas_follow_the_cumulative_state() -> None:
    """Δ from the fact sheet: Table 6 (R50-D) along the ladder, Table 3 (R50) for the first step."""
    rungs = parse_ladder("baseline,efficient,+cosine,+label_smoothing,+mixup,+distill")
    deltas = [paper_delta(a, b) for a, b in zip((None, *rungs), rungs, strict=False)]
    assert [round(d[0], 2) if d else None for d in deltas] == [
        None, 0.34, 0.75, 0.40, 0.84, 0.14,
    ]  # fmt: skip
    assert deltas[1][1] == "R50, Table 3" and deltas[2][1] == "R50-D, Table 6"
    # Distillation before mixup takes the paper's other path: "distill w/o mixup" first.
    other = parse_ladder("efficient,+cosine,+label_smoothing,+distill,+mixup")
    assert round(paper_delta(other[2], other[3])[0], 2) == 0.36  # 78.67 - 78.31
    assert round(paper_delta(other[3], other[4])[0], 2) == 0.62  # 79.29 - 78.67
    assert paper_delta(*parse_ladder("efficient,+ema")) is None  # not in the paper: no figure
    assert [r.dirname for r in other][-1] == "efficient+cosine+label_smoothing+distill+mixup"


@pytest.mark.parametrize(
    ("ladder", "extra", "message"),
    [
        ("baseline,+cosin", [], "unknown rung '+cosin' (did you mean +cosine?)"),
        ("+cosine,efficient", [], "must start with a recipe"),
        ("efficient,+cosine,+cosine", [], "+cosine appears twice"),
        ("baseline,efficent", [], "did you mean efficient?"),
        ("baseline,,efficient", [], "empty rung"),
        ("efficient,+distill", [], "needs a teacher: give --teacher ARCH"),
        ("efficient", ["--seeds", "0"], "--seeds must be >= 1"),
        ("efficient", ["--set", "tricks.mixup=0.2"], "did you mean 'mixup_alpha'"),
    ],
)
def test_bad_ladders_give_one_message(
    tmp_path: Path, capsys: pytest.CaptureFixture, ladder: str, extra: list[str], message: str
) -> None:
    out = tmp_path / "out"
    args = [
        "ablate",
        "--model",
        ARCH,
        "--data",
        str(tmp_path),
        "--out",
        str(out),
        "--ladder",
        ladder,
    ]
    args += extra
    code = cli_main(args)
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err, err
    assert not out.exists()  # rejected before anything was written


@needs_imagenette
def test_ladder_runs_reuses_and_resumes(tmp_path: Path, one_thread: None) -> None:
    data = subset(tmp_path / "data", {"train": 4, "val": 2}, classes=2)  # 2 steps per epoch
    out = tmp_path / "ablation"
    # A run of the +cosine rung that was stopped after one step: the ladder must resume it.
    stopped = train(
        ARCH,
        data,
        recipe="efficient",
        overrides=[*SET, 'schedule.kind="cosine"', "schedule.milestones=[]", "seed=0"],
        out=out / "efficient+cosine" / "seed0",
        stop_after_steps=1,
        **COMMON,
    )
    assert not stopped.finished

    ladder = "baseline,efficient,+cosine,+label_smoothing,+mixup"
    first = ablate(ARCH, data, ladder=ladder, overrides=SET, out=out, **COMMON)
    assert first.finished
    dirs = ["baseline", "efficient", *(f"efficient+{t}" for t in (
        "cosine", "cosine+label_smoothing", "cosine+label_smoothing+mixup"))]  # fmt: skip
    runs = [r.runs[0] for r in first.rungs]
    assert [Path(r.run_dir) for r in runs] == [out / d / "seed0" for d in dirs]
    assert [r.how for r in runs] == ["trained", "trained", "resumed", "trained", "trained"]

    base, eff, cos, ls, mix = (recipe_of(out / d / "seed0") for d in dirs)
    # One batch for every rung; each recipe's own linear scaling: 0.1·4/256 = 0.4·4/1024.
    assert {r["batch_size"] for r in (base, eff, cos, ls, mix)} == {4}
    assert base["optim"]["lr"] == pytest.approx(0.1 * 4 / 256) == eff["optim"]["lr"]
    assert {r["epochs"] for r in (base, eff, cos, ls, mix)} == {1.0}
    assert {(r["img_size"], r["precision"], r["workers"]) for r in (base, mix)} == {(32, "fp32", 0)}
    assert base["schedule"]["kind"] == "step" and not base["tricks"]["zero_gamma"]
    assert base["schedule"]["milestones"] == pytest.approx([0.25, 0.5, 0.75])  # 30/60/90 of 120
    assert eff["tricks"]["zero_gamma"] and eff["optim"]["no_bias_decay"]
    assert eff["schedule"]["warmup_epochs"] == pytest.approx(5 / 120)
    assert eff["schedule"]["kind"] == "step" and eff["tricks"]["label_smoothing"] == 0
    # Each + rung is the rung above plus exactly its switch.
    assert cos == {**eff, "schedule": {**eff["schedule"], "kind": "cosine", "milestones": []}}
    assert ls == {**cos, "tricks": {**cos["tricks"], "label_smoothing": 0.1}}
    assert mix == {**ls, "tricks": {**ls["tricks"], "mixup_alpha": 0.2}}

    table = (out / "ablation.md").read_text()
    for rung, run in zip(first.rungs, runs, strict=True):
        metrics = json.loads((Path(run.run_dir) / "metrics.json").read_text())
        assert metrics["finished"] and run.top1 == metrics["top1"]
        assert f"| {rung.rung.label} | " in table
        assert f"| 1/1 | {metrics['top1']:.2f} |" in table
    assert "77.91 (R50-D, Table 6) | +0.75 (R50-D, Table 6) |" in table
    assert "+0.34 (R50, Table 3)" in table and "`tricks.mixup_alpha=0.2`" in table
    assert (out / "ablation.png").read_bytes().startswith(b"\x89PNG")
    assert json.loads((out / "ablation.json").read_text())["rungs"][4]["paper_delta"] == 0.84

    # Rerun with +distill on top: the four shared rungs are reused, only the new one trains.
    before = {d: (out / d / "seed0" / "final.safetensors").stat().st_mtime_ns for d in dirs}
    teacher = out / "baseline" / "seed0" / "final.safetensors"
    second = ablate(
        ARCH,
        data,
        ladder="efficient,+cosine,+label_smoothing,+mixup,+distill",
        overrides=SET,
        teacher=ARCH,
        teacher_pretrained=str(teacher),
        out=out,
        **COMMON,
    )
    assert [r.runs[0].how for r in second.rungs] == ["reused"] * 4 + ["trained"]
    assert all(
        (out / d / "seed0" / "final.safetensors").stat().st_mtime_ns == t for d, t in before.items()
    )
    distill_dir = out / "efficient+cosine+label_smoothing+mixup+distill" / "seed0"
    assert recipe_of(distill_dir) == mix  # distillation is the teacher, not a recipe change
    run = json.loads((distill_dir / "run.json").read_text())
    assert run["teacher"] == ARCH and run["teacher_pretrained"] == str(teacher)
    assert "+0.14 (R50-D, Table 6)" in (out / "ablation.md").read_text()

    # Two seeds: seed 0 reused, seed 1 trained; the table shows mean ± sample std.
    seeds = ablate(ARCH, data, ladder="baseline", seeds=2, overrides=SET, out=out, **COMMON)
    (rung,) = seeds.rungs
    assert [r.how for r in rung.runs] == ["reused", "trained"]
    assert recipe_of(out / "baseline" / "seed1")["seed"] == 1
    top1s = [r.top1 for r in rung.runs]
    assert (
        f"| 2/2 | {statistics.fmean(top1s):.2f} ± {statistics.stdev(top1s):.2f} |"
        in (out / "ablation.md").read_text()
    )

    # Another length into the same folder: refused, naming the difference, nothing trained.
    with pytest.raises(ValueError, match=r"holds another run \(epochs: 1.0 there, 2.0 now"):
        ablate(ARCH, data, ladder="baseline", overrides=SET, out=out, **{**COMMON, "epochs": 2})
