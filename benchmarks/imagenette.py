"""Imagenette results (issue 13): run the experiments, then regenerate the results file.

    python benchmarks/imagenette.py run r18_race     # one experiment, in its run directory
    python benchmarks/imagenette.py ladder           # the Table-6 ladder (zoo ablate)
    python benchmarks/imagenette.py register         # zoo weights add + predict + eval, recorded
    python benchmarks/imagenette.py report           # benchmarks/results/imagenette.md

Every experiment is one row of EXPERIMENTS (a `zoo train` command line); its run directory
lives in benchmarks/runs/imagenette/NAME (log.jsonl, metrics.json, plot.png, recipe.toml are
committed; checkpoints are not). The ladder is one `zoo ablate` command (LADDER) whose rungs are
ordinary run directories under benchmarks/runs/imagenette/ladder. The report is generated from
those files only, never edited by hand; what has not been run is listed as such.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "imagenette2_160"
RUNS = ROOT / "benchmarks" / "runs" / "imagenette"
RESULTS = ROOT / "benchmarks" / "results" / "imagenette.md"
LADDER_DIR = RUNS / "ladder"
REGISTERED = RUNS / "registered.md"

# name -> (what it answers, zoo train arguments). 128 px train and eval unless said otherwise.
EXPERIMENTS: dict[str, tuple[str, str]] = {
    "r18_5ep": ("race: resnet18_v1d, 5 epochs", "--model resnet18_v1d --recipe imagenette"),
    "r18_race": (
        "race: resnet18_v1d, 5 epochs, fp32, train 112 / eval 128 px",
        "--model resnet18_v1d --recipe imagenette_5ep",
    ),
    "r18_20min": (
        "acceptance: resnet18_v1d within 20 min wall: 4 epochs, evaluated once at the end",
        "--model resnet18_v1d --recipe imagenette_5ep --epochs 4 --set eval_every=4",
    ),
    "r50_race": (
        "race: resnet50_v1d, 5 epochs, fp32, train 112 / eval 128 px",
        "--model resnet50_v1d --recipe imagenette_5ep",
    ),
}
# The Table-6 ladder: resnet18_v1d, 5 epochs, 96 px, one batch size (64) for every rung, fp32 for
# every rung (bf16 autocast trains slower than fp32 on this CPU, so the "efficient" rung keeps
# warmup, zero-gamma and no bias decay but not its low precision or its large batch). Teacher:
# the best Imagenette checkpoint (r18_race, 78.37 %; r50_race reached 73.22 % in 5 epochs).
LADDER = (
    "--model resnet18_v1d --ladder baseline,efficient,+cosine,+label_smoothing,+mixup,+distill "
    "--epochs 5 --img-size 96 --batch-size 64 --set precision=fp32 "
    "--teacher resnet18_v1d "
    "--teacher-pretrained benchmarks/runs/imagenette/r18_race/final.safetensors"
)
# Best checkpoints registered with `zoo weights add` (in a scratch $ZOO_HOME) and then used by tag.
REGISTER = {"r18_race": "imagenette_r18", "r50_race": "imagenette_r50"}
PEERS = (
    "fastai leaderboard, 128 px, 5 epochs: 87.43 % (mean of 5 runs; another architecture and "
    "optimiser); 20 epochs: 91.57 %",
    "timm train.py on this machine (issue 13): resnet18d 67.59 % in about 20 min, "
    "resnet50d 53.55 % in about 41 min (5 epochs, 128 px)",
)


def _zoo(args: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zoo", *args], cwd=ROOT, **kw)


def run(name: str, extra: list[str]) -> int:
    if name not in EXPERIMENTS:
        print(f"unknown experiment {name!r}; known: {', '.join(EXPERIMENTS)}", file=sys.stderr)
        return 2
    out = RUNS / name
    args = [*shlex.split(EXPERIMENTS[name][1]), *extra]
    command = ["train", *args, "--data", str(DATA), "--quiet"]
    command += ["--resume", str(out)] if (out / "last.ckpt").is_file() else ["--out", str(out)]
    print("+ zoo", shlex.join(command), flush=True)
    code = _zoo(command).returncode
    if code == 0:
        (out / "command.txt").write_text(
            "zoo train " + shlex.join([*args, "--data", "imagenette2_160"]) + "\n"
        )
    return code


def ladder(extra: list[str]) -> int:
    """Run (or continue: finished rungs are reused, a stopped one resumes) the ladder."""
    args = [*shlex.split(LADDER), *extra]
    command = ["ablate", *args, "--data", str(DATA), "--out", str(LADDER_DIR), "--quiet"]
    print("+ zoo", shlex.join(command), flush=True)
    code = _zoo(command).returncode
    (LADDER_DIR / "command.txt").write_text(
        "zoo ablate " + shlex.join([*args, "--data", "imagenette2_160"]) + "\n"
    )
    return code


def register() -> int:
    """`zoo weights add` the best runs, then `zoo predict` and `zoo eval` them by tag."""
    import tempfile

    lines = ["# Registered Imagenette weights", ""]
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "ZOO_HOME": home, "ZOO_QUIET": "1"}
        images = [
            str(sorted((DATA / "val" / c).iterdir())[0]) for c in sorted(os.listdir(DATA / "val"))
        ]
        for name, tag in REGISTER.items():
            run_dir = RUNS / name
            if not (run_dir / "metrics.json").is_file():
                lines += [f"{name}: not run yet", ""]
                continue
            arch = json.loads((run_dir / "metrics.json").read_text())["model"]
            steps = [
                ["weights", "add", str(run_dir), "--tag", tag],
                ["predict", "--model", arch, "--pretrained", tag, "--topk", "1", *images],
                ["eval", "--model", arch, "--pretrained", tag, str(DATA / "val")],
            ]
            for step in steps:
                shown = [Path(a).name if a in images else a for a in step]
                shown = [
                    a.replace(str(DATA), "imagenette2_160").replace(str(ROOT) + "/", "")
                    for a in shown
                ]
                print("+ zoo", shlex.join(shown), flush=True)
                done = _zoo(step, env=env, capture_output=True, text=True)
                text = (
                    (done.stdout + done.stderr)
                    .replace(home, "$ZOO_HOME")
                    .replace(str(DATA), "imagenette2_160")
                )
                lines += [
                    f"`zoo {shlex.join(shown)}` (exit {done.returncode})",
                    "",
                    "```",
                    text.strip(),
                    "```",
                    "",
                ]
                if done.returncode:
                    break
    REGISTERED.write_text("\n".join(lines))
    print(REGISTERED)
    return 0


def _metrics(run_dir: Path) -> dict | None:
    f = run_dir / "metrics.json"
    return json.loads(f.read_text()) if f.is_file() else None


def _cells(m: dict) -> str:
    size = f"{m['img_size']}/{m.get('eval_img_size', m['img_size'])}"
    return (
        f"{m.get('seed', 0)} | {size} | {m['precision']} | {m['wall_seconds'] / 60:.1f} min | "
        f"{m['images_per_second']} | {m['top1']:.2f} % | {m['best_top1']:.2f} %"
    )


def _row(name: str) -> str:
    what, _ = EXPERIMENTS[name]
    m = _metrics(RUNS / name)
    if m is None:
        return f"| {name} | {what} | not run yet | | | | | | | |"
    command = (
        (RUNS / name / "command.txt").read_text().strip()
        if (RUNS / name / "command.txt").is_file()
        else ""
    )
    return f"| {name} | {what} | `{command}` | {_cells(m)} |"


def _ladder_section() -> list[str]:
    lines = ["## The Table-6 ladder (resnet18_v1d)", ""]
    table = LADDER_DIR / "ablation.md"
    if not table.is_file():
        return [
            *lines,
            f"Not run yet: `python benchmarks/imagenette.py ladder` (`zoo ablate {LADDER}`).",
            "",
        ]
    command = (
        (LADDER_DIR / "command.txt").read_text().strip()
        if (LADDER_DIR / "command.txt").is_file()
        else ""
    )
    lines += [
        f"Command: `{command}` (rerunning it reuses the finished rungs and trains the rest).",
        "",
        "Every rung's run so far:",
        "",
    ]
    lines += [
        "| rung (state) | seed | train/eval px | precision | wall time | train img/s "
        "| final val top-1 | best |"
    ]
    lines += ["|---|---|---|---|---|---|---|---|"]
    for m_file in sorted(LADDER_DIR.glob("*/seed*/metrics.json"), key=lambda p: p.stat().st_mtime):
        m = json.loads(m_file.read_text())
        lines.append(f"| {m_file.parent.parent.name} | {_cells(m)} |")
    body = table.read_text().strip().splitlines()
    lines += ["", "`zoo ablate`'s summary (its ablation.md, the paper's deltas beside ours):", ""]
    lines += [line.replace("# ", "### ", 1) if line.startswith("# ") else line for line in body]
    if (LADDER_DIR / "ablation.png").is_file():
        lines += ["", "![ladder](../runs/imagenette/ladder/ablation.png)"]
    return [*lines, ""]


def report() -> int:
    lines = [
        "# Imagenette results",
        "",
        "Generated by `python benchmarks/imagenette.py report` from the run directories in "
        "`benchmarks/runs/imagenette/`; do not edit by hand.",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores (no GPU); data "
        "../shared/data/imagenette2_160 (official split: 9,469 train / 3,925 val images), "
        "from random init. Wall time includes decoding the data once and every epoch's eval.",
        "",
        "## The race (5 epochs)",
        "",
        "| run | question | command | seed | train/eval px | precision | wall time | train img/s "
        "| final val top-1 | best |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *(_row(name) for name in EXPERIMENTS),
        "",
        "Peer figures (not measured here):",
        *(f"- {p}" for p in PEERS),
        "",
        *_ladder_section(),
    ]
    if REGISTERED.is_file():
        lines += [REGISTERED.read_text().replace("# Registered", "## Registered", 1), ""]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines))
    print(RESULTS)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="action", required=True)
    p = sub.add_parser("run", help="run (or resume) one experiment")
    p.add_argument("name", choices=sorted(EXPERIMENTS))
    p.add_argument("extra", nargs=argparse.REMAINDER, help="more zoo train options")
    p = sub.add_parser("ladder", help="run (or continue) the Table-6 ladder")
    p.add_argument("extra", nargs=argparse.REMAINDER, help="more zoo ablate options")
    sub.add_parser("register", help="zoo weights add the best runs; record predict and eval")
    sub.add_parser("report", help="regenerate benchmarks/results/imagenette.md")
    args = parser.parse_args()
    if args.action == "run":
        return run(args.name, args.extra)
    if args.action == "ladder":
        return ladder(args.extra)
    return register() if args.action == "register" else report()


if __name__ == "__main__":
    sys.exit(main())
