"""What a run leaves behind as it goes: per-epoch evaluation and log records, the resumable
checkpoint, the final zoo-layout weights and ``metrics.json``; and the signal handling that lets
a run stop cleanly."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import signal
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from zoo.training import data as D
from zoo.training import rundir
from zoo.training.context import Ctx, RunArgs, State, autocast
from zoo.training.recipe import Recipe
from zoo.training.schedule import lr_at

log = logging.getLogger("zoo")


def end_of_epoch(
    ctx: Ctx, st: State, epoch: int, train_loss: float, seen: int, seconds: float
) -> None:
    record = {
        "epoch": epoch + 1,
        "step": st.step,
        "lr": lr_at(max(0, st.step - 1), ctx.plan),
        "train_loss": round(train_loss, 5),
        "images_per_second": round(seen * ctx.d.world / max(seconds, 1e-9), 2),
    }
    last = st.step >= ctx.plan.total_steps
    if last or (epoch + 1) % ctx.rec.eval_every == 0:
        _evaluate_into(ctx, st, epoch, record)
    if ctx.d.is_main:
        rundir.append_log(ctx.run_dir, record)
        shown = (
            f", val top-1 {record['val_top1']:.2f}%, top-5 {record['val_top5']:.2f}%"
            if "val_top1" in record
            else ""
        )
        log.info(
            "epoch %d: loss %.4f%s, %.1f img/s",
            epoch + 1,
            train_loss,
            shown,
            record["images_per_second"],
        )


def _evaluate_into(ctx: Ctx, st: State, epoch: int, record: dict[str, Any]) -> None:
    top1, top5, val_loss = evaluate_split(ctx, ctx.model)
    record["val_loss"] = round(val_loss, 5)
    record["val_top1"], record["val_top5"] = round(top1, 3), round(top5, 3)
    if ctx.ema is not None:
        record["ema_top1"], record["ema_top5"], _ = (
            round(v, 3) for v in evaluate_split(ctx, ctx.ema.module)
        )
        top1, top5 = record["ema_top1"], record["ema_top5"]
    if top1 > st.best_top1:
        st.best_top1, st.best_top5, st.best_epoch = top1, top5, epoch + 1


@torch.no_grad()
def evaluate_split(ctx: Ctx, model: nn.Module) -> tuple[float, float, float]:
    """(top-1 %, top-5 %, mean CE) on the val split, summed over processes."""
    loader = D.eval_loader(
        ctx.val_images,
        ctx.val_targets,
        ctx.val_tf,
        max(32, ctx.layout.micro),
        ctx.rec.workers,
        ctx.d.rank,
        ctx.d.world,
    )
    was_training = model.training
    model.eval()
    c1 = c5 = n = loss = 0.0
    for images, labels in loader:
        images = images.to(ctx.d.device).contiguous(memory_format=torch.channels_last)
        with autocast(ctx):
            logits = model(images).float()
        labels = labels.to(ctx.d.device)
        top5 = logits.topk(min(5, logits.shape[1]), dim=1).indices
        c1 += float((top5[:, 0] == labels).sum())
        c5 += float((top5 == labels[:, None]).any(dim=1).sum())
        loss += float(F.cross_entropy(logits, labels, reduction="sum"))
        n += len(labels)
    model.train(was_training)
    c1, c5, loss, n = ctx.d.all_sum([c1, c5, loss, n])
    return 100.0 * c1 / n, 100.0 * c5 / n, loss / n


def checkpoint(ctx: Ctx, st: State) -> None:
    if not ctx.d.is_main:
        return
    state = {
        "model": ctx.model.state_dict(),
        "optimizer": ctx.optimizer.state_dict(),
        "scaler": ctx.scaler.state_dict(),
        "progress": dataclasses.asdict(st),
        "rng": torch.get_rng_state(),
    }
    if ctx.ema is not None:
        state["ema"] = ctx.ema.state_dict()
    rundir.save_state(ctx.run_dir, state)


def save_final(
    model: nn.Module,
    run_dir: Path,
    class_ids: tuple[str, ...],
    pre: Any,
    args: RunArgs,
    rec: Recipe,
) -> None:
    import zoo
    from zoo.labels import imagenet1k

    wnid_names = dict(zip(imagenet1k().wnids or (), imagenet1k().names, strict=True))
    names = tuple(wnid_names.get(c, c) for c in class_ids)
    zoo.save_model(
        model,
        run_dir / rundir.FINAL_FILE,
        labels=class_ids,
        label_names=names,
        preprocess=pre,
        source=f"zoo train --recipe {rec.name} ({run_dir.name})",
    )


def zoo_version() -> str:
    import zoo

    return zoo.__version__


def metrics(
    args: RunArgs,
    rec: Recipe,
    st: State,
    ctx: Ctx,
    skipped: dict[str, int],
    wall: float,
    stopped: bool,
) -> dict[str, Any]:
    records = [r for r in rundir.read_log(ctx.run_dir) if "val_top1" in r] if ctx.d.is_main else []
    final = records[-1] if records else {}
    use_ema = ctx.ema is not None
    return {
        "model": args.model,
        "recipe": rec.name,
        "finished": not stopped,
        "epochs": rec.epochs,
        "steps": st.step,
        "img_size": rec.img_size,
        "eval_img_size": rec.eval_size,
        "batch_size": rec.batch_size,
        "top1": final.get("ema_top1" if use_ema else "val_top1"),
        "top5": final.get("ema_top5" if use_ema else "val_top5"),
        "best_top1": st.best_top1 if st.best_top1 >= 0 else None,
        "best_top5": st.best_top5 if st.best_top1 >= 0 else None,
        "best_epoch": st.best_epoch or None,
        "weights": "ema" if use_ema else "model",
        "images_per_second": round(st.train_images / st.train_seconds, 2)
        if st.train_seconds
        else None,
        "train_seconds": round(st.train_seconds, 1),
        "wall_seconds": round(wall, 1),
        "skipped_images": skipped,
        "processes": ctx.d.world,
        "data_fingerprint": D.fingerprint(args.data),
        "zoo_version": zoo_version(),
        "precision": str(ctx.amp).replace("torch.", "") if ctx.amp else "float32",
    }


class StopFlag:
    """SIGINT/SIGTERM ask the loop to checkpoint after the current step and stop."""

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.requested = True
        log.warning("signal %d: stopping after this step (again to abort)", signum)

    def __enter__(self) -> StopFlag:
        with contextlib.suppress(ValueError):  # not the main thread: no handlers
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
