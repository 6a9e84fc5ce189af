"""``zoo.train``: one recipe, one model, one ImageFolder dataset -> a run directory.

The loop reads top to bottom in one screen (``_train_steps``); ``_run`` prepares what it needs
as typed records (:class:`~zoo.training.context.Ctx`): the resolved :class:`Recipe`, the
:class:`RunArgs`, the decoded data, the model, optimizer, EMA and, for distillation, a
:class:`~zoo.training.teacher.Teacher`. What a run writes lives in :mod:`zoo.training.outputs`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zoo.training import data as D
from zoo.training import distributed, rundir
from zoo.training.context import Ctx, RunArgs, RunResult, State, TrainingError, autocast
from zoo.training.losses import distillation_loss, mixup, smooth_targets, soft_cross_entropy
from zoo.training.outputs import (
    StopFlag,
    checkpoint,
    end_of_epoch,
    evaluate_split,
    metrics,
    save_final,
)
from zoo.training.params import EMA, param_groups, prepare_finetune
from zoo.training.recipe import Recipe, load_resolved, resolve
from zoo.training.schedule import StepPlan, lr_at

log = logging.getLogger("zoo")


def _precision(recipe: Recipe, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for fp32: fp16 needs CUDA; bf16 on CPUs that support it."""
    if recipe.precision == "fp32":
        return None
    if device.type == "cuda":
        return torch.float16 if recipe.precision == "fp16" else torch.bfloat16
    if torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        if recipe.precision == "fp16":
            log.info("fp16 needs CUDA: using bf16 autocast on this CPU instead")
        return torch.bfloat16
    log.info("this CPU has no bf16 support: training in fp32")
    return None


def _build_model(
    args: RunArgs, recipe: Recipe, class_ids: tuple[str, ...], d: distributed.Dist
) -> nn.Module:
    import zoo
    from zoo import transfer

    num_classes = len(class_ids)
    if args.pretrained:
        reuse = recipe.finetune.reuse_head  # the whole classifier first, then its rows
        with d.local_main_first():  # weights fetched and converted once per node
            model = zoo.get_model(
                args.model, pretrained=args.pretrained, num_classes=None if reuse else num_classes
            )
        if reuse and transfer.head_from_classes(model, class_ids):
            log.info("new head: the pretrained classifier's rows for the %d classes", num_classes)
        elif reuse:
            log.info("new head for %d classes (not all are among the weights' own)", num_classes)
            model.reset_classifier(num_classes)
    else:
        model = zoo.get_model(
            args.model, num_classes=num_classes, zero_init_last=recipe.tricks.zero_gamma
        )
    return prepare_finetune(model, recipe.finetune)


def _build_teacher(
    args: RunArgs, student_pre: Any, class_ids: tuple[str, ...], d: distributed.Dist
) -> nn.Module | None:
    if not args.teacher:
        return None
    import zoo
    from zoo.training.teacher import Teacher

    with d.local_main_first():
        model = zoo.get_model(args.teacher, pretrained=args.teacher_pretrained or True)
    return Teacher(model, student_pre, class_ids)


def train(
    model: str,
    data: str | Path,
    *,
    recipe: str = "baseline",
    overrides: tuple[str, ...] | list[str] = (),
    epochs: float | None = None,
    img_size: int | None = None,
    batch_size: int | None = None,
    pretrained: str | None = None,
    teacher: str | None = None,
    teacher_pretrained: str | None = None,
    out: str | Path | None = None,
    resume: str | Path | None = None,
    stop_after_steps: int | None = None,
    progress: bool = True,
) -> RunResult:
    """Train ``model`` on ``data`` (``DIR/train``, ``DIR/val`` ImageFolders) with a recipe.

    ``resume``: continue a run directory exactly where it stopped (all other arguments come
    from it). ``stop_after_steps``: checkpoint and stop once that many optimizer steps are done
    in total (resume later), as SIGINT/SIGTERM do.
    """
    if resume is not None:
        run_dir = Path(resume)
        args = RunArgs(**{**rundir.check_resumable(run_dir), "overrides": ()})
        rec = load_resolved(run_dir / rundir.RECIPE_FILE)
        state_dict = rundir.load_state(run_dir)
    else:
        rec = resolve(
            recipe, overrides=overrides, epochs=epochs, batch_size=batch_size, img_size=img_size
        )
        args = RunArgs(
            model,
            str(Path(data).expanduser().resolve()),
            rec.name,
            pretrained,
            teacher,
            teacher_pretrained,
            tuple(overrides),
        )
        run_dir = (
            Path(out)
            if out
            else Path("runs") / f"{model}-{rec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        )
        if (run_dir / rundir.CKPT_FILE).exists():
            raise rundir.RunDirError(
                f"{run_dir} already holds a run; continue it with --resume {run_dir} or choose "
                "another --out"
            )
        state_dict = None
    try:  # fail before hours of training, not after
        import matplotlib  # noqa: F401
    except ImportError:
        raise TrainingError(
            "zoo train draws its curves (plot.png) with matplotlib: pip install 'zoo[train]'"
        ) from None

    d = distributed.setup()
    try:
        return _run(args, rec, run_dir, state_dict, d, stop_after_steps, progress)
    finally:
        distributed.teardown(d)


def _run(
    args: RunArgs,
    rec: Recipe,
    run_dir: Path,
    saved: dict | None,
    d: distributed.Dist,
    stop_after_steps: int | None,
    progress: bool,
) -> RunResult:
    from zoo.preprocess import Preprocess

    wall_start = time.perf_counter()
    train_split, val_split = D.scan_dataset(args.data)
    train_split = D.limit_per_class(train_split, rec.limit_per_class)
    class_ids = train_split.classes
    torch.manual_seed(rec.seed)  # the initial weights are part of what a seed reproduces
    model = _build_model(args, rec, class_ids, d)
    arch_pre: Preprocess = model.pretrained_cfg.preprocess
    # Normalisation comes from the weights (e.g. mean = std = 0.5 for the _tf weights).
    pre = dataclasses.replace(arch_pre, crop=rec.eval_size, resize=D.eval_resize(rec.eval_size))
    show = progress and d.is_main
    # Decoded once, at the short side each split's transform starts from.
    train_short = D.eval_resize(rec.img_size)
    tr_imgs, tr_tgts, tr_skip = D.decode_split(train_split, train_short, rec.workers, show)
    va_imgs, va_tgts, va_skip = D.decode_split(val_split, pre.resize, rec.workers, show)
    layout = D.Layout.plan(rec.batch_size, rec.micro_batch, d.world)
    steps_per_epoch = len(tr_imgs) // rec.batch_size
    if steps_per_epoch == 0:
        raise D.DataError(
            f"{train_split.root}: {len(tr_imgs)} images is fewer than one batch of "
            f"{rec.batch_size}; lower --batch-size"
        )
    plan = StepPlan.from_recipe(rec, steps_per_epoch)
    train_set = D.SeededImages(tr_imgs, tr_tgts, D.train_transform(rec.augment, rec.img_size, pre))
    val_tf = D.eval_transform(rec.eval_size, pre)

    model.to(d.device)
    if rec.channels_last:
        model.to(memory_format=torch.channels_last)
    teacher = _build_teacher(args, pre, class_ids, d)
    if teacher is not None:
        teacher.to(d.device, memory_format=torch.channels_last)
    ddp = distributed.wrap(model, d)
    optimizer = torch.optim.SGD(
        param_groups(model, rec.optim.weight_decay, rec.optim.no_bias_decay, rec.finetune),
        lr=rec.optim.lr,
        momentum=rec.optim.momentum,
        nesterov=rec.optim.nesterov,
    )
    amp = _precision(rec, d.device)
    scaler = torch.amp.GradScaler(d.device.type, enabled=amp is torch.float16)
    ema = EMA(model, rec.tricks.ema_decay) if rec.tricks.ema_decay > 0 else None
    st = State()
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scaler.load_state_dict(saved["scaler"])
        if ema is not None:
            ema.load_state_dict(saved["ema"])
        st = State(**saved["progress"])
        torch.set_rng_state(saved["rng"])
        log.info("resuming %s at step %d of %d", run_dir, st.step, plan.total_steps)
    if d.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        rundir.write_json(run_dir / rundir.RUN_FILE, dataclasses.asdict(args))
        rundir.write_text(run_dir / rundir.RECIPE_FILE, rec.to_toml())

    ctx = Ctx(
        rec,
        plan,
        layout,
        d,
        ddp,
        model,
        teacher,
        optimizer,
        scaler,
        ema,
        amp,
        len(class_ids),
        run_dir,
        train_set,
        va_imgs,
        va_tgts,
        val_tf,
        steps_per_epoch,
    )
    skipped = {"train": len(tr_skip), "val": len(va_skip)}
    stopped = _train_steps(ctx, st, stop_after_steps, show)
    final_model = ema.module if ema is not None else model
    summary = metrics(args, rec, st, ctx, skipped, time.perf_counter() - wall_start, stopped)
    if d.is_main:
        if not stopped:
            save_final(final_model, run_dir, class_ids, pre, args, rec)
        rundir.write_json(run_dir / rundir.METRICS_FILE, summary)
        lr_curve = [lr_at(s, plan) for s in range(plan.total_steps)]
        rundir.plot_curves(run_dir, rundir.read_log(run_dir), lr_curve)
    return RunResult(run_dir, summary, finished=not stopped)


def _loss(
    ctx: Ctx, images: torch.Tensor, labels: torch.Tensor, step: int, chunk: int, epoch: float
) -> torch.Tensor:
    """The training loss of one micro-batch, every trick applied as the recipe says."""
    tricks = ctx.rec.tricks
    targets = smooth_targets(labels, ctx.num_classes, tricks.label_smoothing)
    mixing = tricks.mixup_alpha > 0 and epoch < ctx.rec.epochs - tricks.mixup_off_epochs
    if mixing:  # λ depends on (seed, step, chunk) only: the same in DDP and in accumulation
        g = torch.Generator().manual_seed(ctx.rec.seed * 1_000_003 + step * 4099 + chunk)
        lam = _beta(tricks.mixup_alpha, g)
        images, targets = mixup(images, targets, lam)
    with autocast(ctx):
        logits = ctx.ddp(images)
        if ctx.teacher is None:
            return soft_cross_entropy(logits, targets)
        teacher_logits = ctx.teacher(images)
    return distillation_loss(
        logits, teacher_logits, targets, tricks.distill_temperature, tricks.distill_weighting
    )


def _beta(alpha: float, g: torch.Generator) -> float:
    """λ ~ Beta(α, α) from two Gamma draws made with our own generator (reproducible)."""
    x = torch._standard_gamma(torch.full((2,), alpha, dtype=torch.float64), generator=g)
    return float(x[0] / x.sum())


def _train_steps(ctx: Ctx, st: State, stop_after: int | None, show: bool) -> bool:
    """Run until the plan's last step; True when stopped early (signal or stop_after)."""
    from tqdm import tqdm

    rec, lay, d = ctx.rec, ctx.layout, ctx.d
    stop = StopFlag()

    def early(st: State) -> bool:  # asked to stop before the plan's last step
        asked = stop.requested or (stop_after is not None and st.step >= stop_after)
        return asked and st.step < ctx.plan.total_steps

    with stop:
        while st.step < ctx.plan.total_steps:
            epoch, in_epoch = divmod(st.step, ctx.steps_per_epoch)
            last = min(ctx.steps_per_epoch, ctx.plan.total_steps - epoch * ctx.steps_per_epoch)
            sampler = D.StepSampler(len(ctx.train_set), lay, rec.seed, epoch, in_epoch, d.rank)
            loader = D.train_loader(ctx.train_set, sampler, rec.workers)
            bar = tqdm(
                total=last - in_epoch,
                desc=f"epoch {epoch + 1}",
                unit="step",
                disable=not show,
                leave=False,
            )
            ctx.ddp.train()
            loss_sum, loss_n, t0, seen = 0.0, 0, time.perf_counter(), 0
            for i, (images, labels) in enumerate(loader):
                micro = i % lay.accum
                if micro == 0:
                    lr = lr_at(st.step, ctx.plan)
                    for group in ctx.optimizer.param_groups:
                        group["lr"] = lr * group.get("lr_scale", 1.0)  # finetune: per part
                    torch.manual_seed(rec.seed * 1_000_003 + st.step)  # dropout, per step
                images = images.to(ctx.d.device, non_blocking=True)
                if rec.channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
                labels = labels.to(ctx.d.device)
                sync = micro == lay.accum - 1
                no_sync = ctx.ddp.no_sync() if d.enabled and not sync else contextlib.nullcontext()
                with no_sync:
                    loss = _loss(
                        ctx,
                        images,
                        labels,
                        st.step,
                        micro * lay.world + d.rank,
                        st.step / ctx.steps_per_epoch,
                    )
                    if not torch.isfinite(loss):
                        raise TrainingError(
                            f"loss is {loss.item()} at step {st.step} (epoch {epoch + 1}); "
                            "lower the learning rate (--set optim.lr=...) or use fp32"
                        )
                    ctx.scaler.scale(loss / lay.accum).backward()
                loss_sum, loss_n, seen = loss_sum + loss.item(), loss_n + 1, seen + len(labels)
                if not sync:
                    continue
                ctx.scaler.step(ctx.optimizer)
                ctx.scaler.update()
                ctx.optimizer.zero_grad(set_to_none=True)
                if ctx.ema is not None:
                    ctx.ema.update(ctx.model)
                st.step += 1
                bar.update()
                bar.set_postfix(
                    loss=f"{loss_sum / loss_n:.3f}",
                    lr=f"{lr:.3g}",
                    img_s=f"{seen * d.world / (time.perf_counter() - t0):.0f}",
                )
                if early(st) or st.step >= ctx.plan.total_steps:
                    break
            bar.close()
            del loader
            st.train_seconds += time.perf_counter() - t0
            st.train_images += seen * d.world
            epoch_done = st.step % ctx.steps_per_epoch == 0 or st.step >= ctx.plan.total_steps
            if epoch_done:
                end_of_epoch(
                    ctx, st, epoch, loss_sum / max(1, loss_n), seen, time.perf_counter() - t0
                )
            checkpoint(ctx, st)
            if early(st):
                why = "signal" if stop.requested else f"stop_after_steps={stop_after}"
                log.info(
                    "stopped at step %d (%s); resume with --resume %s", st.step, why, ctx.run_dir
                )
                return True
    return False


__all__ = ["RunArgs", "RunResult", "TrainingError", "evaluate_split", "train"]
