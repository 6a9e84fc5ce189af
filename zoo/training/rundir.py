"""A run directory: what a run leaves behind, written atomically, readable without zoo's trainer.

``run.json``      how the run was started (model, data, weights, teacher): what --resume reuses
``recipe.toml``   the fully resolved recipe
``log.jsonl``     one record per epoch (and the final one)
``metrics.json``  final and best val top-1/top-5 (percent), images/s, wall time, skipped images
``plot.png``      loss, accuracy and LR curves
``last.ckpt``     everything resuming needs; ``torch.load(weights_only=True)`` reads it
``final.safetensors`` the trained model, zoo layout (``zoo.get_model(arch, pretrained=path)``)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from zoo.hub.atomic import atomic_path

RUN_FILE, RECIPE_FILE, LOG_FILE = "run.json", "recipe.toml", "log.jsonl"
METRICS_FILE, PLOT_FILE, CKPT_FILE, FINAL_FILE = (
    "metrics.json",
    "plot.png",
    "last.ckpt",
    "final.safetensors",
)


class RunDirError(ValueError):
    """A folder that is not a (resumable) run directory."""


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def append_log(run_dir: Path, record: dict[str, Any]) -> None:
    with open(run_dir / LOG_FILE, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")


def read_log(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / LOG_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def save_state(run_dir: Path, state: dict[str, Any]) -> None:
    with atomic_path(run_dir / CKPT_FILE) as tmp:
        torch.save(state, tmp)


def load_state(run_dir: Path) -> dict[str, Any]:
    path = run_dir / CKPT_FILE
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError) as err:
        raise RunDirError(
            f"{path}: unreadable checkpoint ({type(err).__name__}); "
            "the run cannot be resumed from it"
        ) from None


def check_resumable(run_dir: Path) -> dict[str, Any]:
    """The run's start arguments, after checking the folder holds a resumable run."""
    if not run_dir.is_dir():
        raise RunDirError(f"--resume {run_dir}: folder not found")
    missing = [f for f in (RUN_FILE, RECIPE_FILE, CKPT_FILE) if not (run_dir / f).is_file()]
    if missing:
        raise RunDirError(
            f"--resume {run_dir}: not a zoo run directory (missing {', '.join(missing)}); "
            "give the --out folder of an earlier `zoo train`"
        )
    try:
        return json.loads((run_dir / RUN_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise RunDirError(f"{run_dir / RUN_FILE}: unreadable ({err})") from None


def plot_curves(run_dir: Path, records: list[dict[str, Any]], lrs: list[float]) -> Path | None:
    """Loss, accuracy and LR against epochs, as ``plot.png``; None when nothing to draw yet."""
    every = [r for r in records if "epoch" in r]
    epochs = [r for r in every if "val_top1" in r]  # evaluated ones (recipe.eval_every)
    if not epochs:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [r["epoch"] for r in epochs]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot(
        [r["epoch"] for r in every], [r["train_loss"] for r in every], marker="o", label="train"
    )
    if any("val_loss" in r for r in epochs):
        axes[0].plot(x, [r.get("val_loss") for r in epochs], marker="o", label="val")
    axes[0].set(title="loss", xlabel="epoch")
    axes[0].legend()
    axes[1].plot(x, [r["val_top1"] for r in epochs], marker="o", label="val top-1")
    axes[1].plot(x, [r["val_top5"] for r in epochs], marker=".", label="val top-5")
    if any("ema_top1" in r for r in epochs):
        axes[1].plot(x, [r.get("ema_top1") for r in epochs], marker="o", label="EMA top-1")
    axes[1].set(title="val accuracy (%)", xlabel="epoch")
    axes[1].legend()
    axes[2].plot([i / max(1, len(lrs)) * every[-1]["epoch"] for i in range(len(lrs))], lrs)
    axes[2].set(title="learning rate", xlabel="epoch")
    fig.tight_layout()
    path = run_dir / PLOT_FILE
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
    return path
