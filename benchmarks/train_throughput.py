"""Benchmark: `zoo train` throughput vs a bare PyTorch loop, side by side (target >= 0.95x).

Both sides train the same model (resnet18_v1d, zoo's init, zero-gamma, channels_last) at the same
batch, image size and dtype (bf16 autocast or fp32) on the same images, through the same input
pipeline: the split decoded once to uint8 tensors by ``zoo.training.data.decode_split``, the
recipe's own training transforms (``zoo.training.data.train_transform``), a DataLoader with the
same workers and prefetch, made afresh each epoch. The bare loop is what one writes by hand:
shuffle, forward under autocast, cross-entropy, backward, SGD step; no per-sample seeding, LR
schedule, checkpoint, NaN check or progress bar.

What is timed is the same span on both sides: from making each epoch's DataLoader to its last
optimizer step, summed over epochs (images / seconds). For `zoo train` that is its own
``images_per_second`` in ``metrics.json`` (eval and checkpoints are outside it); the wall time of
the whole command is recorded beside it. Each measurement is a fresh process; the two sides
alternate (and swap which goes first every repeat) so that machine noise hits both alike; the
result is the ratio of medians.

    python benchmarks/train_throughput.py [--repeats 5] [--per-class 40] [--epochs 2]
        [--dtypes bf16,fp32] [--out benchmarks/results/train_throughput.json]

Needs ../shared/data/imagenette2_160 (or --data DIR with train/ and val/ ImageFolders).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMAGENETTE = ROOT.parent / "shared" / "data" / "imagenette2_160"
ARCH, RECIPE, TARGET = "resnet18_v1d", "imagenette", 0.95


def subset(src: Path, dst: Path, train_per_class: int, val_per_class: int) -> Path:
    """An ImageFolder of symlinks: the first N images of each class (val kept tiny: not timed)."""
    for split, n in (("train", train_per_class), ("val", val_per_class)):
        for wnid in sorted(os.listdir(src / split)):
            (dst / split / wnid).mkdir(parents=True)
            for name in sorted(os.listdir(src / split / wnid))[:n]:
                (dst / split / wnid / name).symlink_to(src / split / wnid / name)
    return dst


def zoo_cmd(args: argparse.Namespace, data: Path, dtype: str, out: Path) -> list[str]:
    return [
        sys.executable, "-m", "zoo", "train", "--recipe", RECIPE, "--model", ARCH,
        "--data", str(data), "--epochs", str(args.epochs), "--img-size", str(args.img_size),
        "--batch-size", str(args.batch_size), "--set", f"precision={dtype}",
        "--set", f"workers={args.workers}", "--out", str(out), "--quiet", "--json",
    ]  # fmt: skip


def bare_cmd(args: argparse.Namespace, data: Path, dtype: str) -> list[str]:
    return [
        sys.executable, __file__, "--child", "--data", str(data), "--dtypes", dtype,
        "--epochs", str(args.epochs), "--img-size", str(args.img_size),
        "--batch-size", str(args.batch_size), "--workers", str(args.workers),
    ]  # fmt: skip


def run(cmd: list[str]) -> tuple[dict, float]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    out = proc.stdout
    return json.loads(out[out.index("{") :]), wall


def bare_loop(args: argparse.Namespace) -> dict:
    """The hand-written loop on zoo's decoded tensors and transforms (child process)."""
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, Dataset

    import zoo
    from zoo.training import data as D
    from zoo.training.recipe import resolve

    dtype = args.dtypes
    rec = resolve(RECIPE, epochs=args.epochs, batch_size=args.batch_size, img_size=args.img_size)
    train_split, _ = D.scan_dataset(args.data)
    short = D.eval_resize(rec.img_size)
    images, targets, _ = D.decode_split(train_split, short, args.workers, progress=False)
    torch.manual_seed(rec.seed)
    model = zoo.get_model(ARCH, num_classes=len(train_split.classes), zero_init_last=True)
    pre = dataclasses.replace(model.pretrained_cfg.preprocess, crop=rec.img_size, resize=short)
    transform = D.train_transform(rec.augment, rec.img_size, pre)

    class Images(Dataset):
        def __len__(self) -> int:
            return len(images)

        def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
            return transform(images[i]), targets[i]

    model = model.to(memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(
        model.parameters(),
        lr=rec.optim.lr,
        momentum=rec.optim.momentum,
        nesterov=rec.optim.nesterov,
        weight_decay=rec.optim.weight_decay,
    )
    autocast = dtype == "bf16"
    seconds, seen = 0.0, 0
    for _ in range(int(args.epochs)):
        t0 = time.perf_counter()
        loader = DataLoader(
            Images(),
            batch_size=args.batch_size,
            shuffle=True,
            drop_last=True,
            num_workers=args.workers,
            prefetch_factor=4 if args.workers else None,
        )
        for x, y in loader:
            x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                loss = F.cross_entropy(model(x), y, label_smoothing=rec.tricks.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            seen += len(y)
        seconds += time.perf_counter() - t0
    return {"images_per_second": seen / seconds, "train_seconds": seconds, "images": seen}


def machine() -> dict[str, object]:
    import torch

    flags = Path("/proc/cpuinfo").read_text()
    cpu = next(
        (line.split(":", 1)[1].strip() for line in flags.splitlines() if "model name" in line),
        platform.processor(),
    )
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "avx512_bf16": "avx512_bf16" in flags,
        "amx_bf16": "amx_bf16" in flags,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "load_average_at_start": round(os.getloadavg()[0], 2),
    }


def git_head() -> str:
    proc = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    return proc.stdout.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="ImageFolder root (default: a subset of shared)")
    parser.add_argument("--per-class", type=int, default=40, help="train images per class")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--img-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dtypes", default="bf16,fp32")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks/results/train_throughput.json"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(bare_loop(args)))
        return 0
    info, dtypes = machine(), args.dtypes.split(",")
    runs: dict[str, dict[str, list[dict]]] = {d: {"zoo": [], "bare": []} for d in dtypes}
    with tempfile.TemporaryDirectory(prefix="zoo_train_bench_") as tmp:
        folder = Path(tmp)
        if args.data:
            data = args.data
        else:
            if not IMAGENETTE.is_dir():
                raise SystemExit(f"{IMAGENETTE} not found; give --data DIR")
            data = subset(IMAGENETTE, folder / "data", args.per_class, 2)
        n = sum(1 for _ in (data / "train").rglob("*.JPEG"))
        for r in range(args.repeats):
            for dtype in dtypes:
                sides = ("zoo", "bare") if r % 2 == 0 else ("bare", "zoo")
                for side in sides:
                    load = round(os.getloadavg()[0], 2)  # the noise this run met
                    if side == "zoo":
                        out = folder / f"run-{dtype}-{r}"
                        result, wall = run(zoo_cmd(args, data, dtype, out))
                        record = {
                            "images_per_second": result["images_per_second"],
                            "train_seconds": result["train_seconds"],
                            "wall_seconds": round(wall, 2),
                            "precision": result["precision"],
                        }
                    else:
                        result, wall = run(bare_cmd(args, data, dtype))
                        record = {**result, "wall_seconds": round(wall, 2)}
                    runs[dtype][side].append({**record, "load_average": load})
                    print(f"repeat {r + 1}/{args.repeats} {dtype} {side}: "
                          f"{record['images_per_second']:.1f} img/s", flush=True)  # fmt: skip
    info["load_average_at_end"] = round(os.getloadavg()[0], 2)
    results = {}
    for dtype, sides in runs.items():
        med = {s: statistics.median(x["images_per_second"] for x in v) for s, v in sides.items()}
        results[dtype] = {
            "zoo_median_images_per_second": round(med["zoo"], 2),
            "bare_median_images_per_second": round(med["bare"], 2),
            "zoo_over_bare": round(med["zoo"] / med["bare"], 3),
            "meets_target": med["zoo"] / med["bare"] >= TARGET,
            "runs": sides,
        }
    report = {
        "measured_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "revision": git_head(),
        "machine": info,
        "settings": {
            "model": ARCH,
            "recipe": RECIPE,
            "train_images": n,
            "epochs": args.epochs,
            "img_size": args.img_size,
            "batch_size": args.batch_size,
            "workers": args.workers,
            "repeats": args.repeats,
            "target_zoo_over_bare": TARGET,
            "command": " ".join(["python", "benchmarks/train_throughput.py", *sys.argv[1:]]),
        },
        "note": "images/s over the training steps of every epoch (DataLoader start included, "
        "eval and checkpoints excluded), median over repeats, fresh process each, sides "
        "alternating. A busy machine (see load averages) makes single runs noisy.",
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for dtype, res in results.items():
        print(
            f"{dtype}: zoo {res['zoo_median_images_per_second']:.1f} img/s, bare "
            f"{res['bare_median_images_per_second']:.1f} img/s -> {res['zoo_over_bare']:.3f}x "
            f"(target {TARGET}x)"
        )
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
