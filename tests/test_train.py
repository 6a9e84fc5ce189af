"""zoo train end to end on real Imagenette photos: it learns, resumes bitwise, runs under DDP,
and meets bad input with one message."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import SHARED
from safetensors.torch import load_file

import zoo
from zoo.cli import main as cli_main
from zoo.training.loop import train

IMAGENETTE = SHARED / "data" / "imagenette2_160"
needs_imagenette = pytest.mark.skipif(not IMAGENETTE.is_dir(), reason="../shared imagenette")


def subset(dst: Path, per_class: dict[str, int], classes: int = 10) -> Path:
    """A small ImageFolder copy (symlinks) of the first N images per class of each split."""
    for split, n in per_class.items():
        for wnid in sorted(os.listdir(IMAGENETTE / split))[:classes]:
            (dst / split / wnid).mkdir(parents=True)
            for name in sorted(os.listdir(IMAGENETTE / split / wnid))[:n]:
                (dst / split / wnid / name).symlink_to(IMAGENETTE / split / wnid / name)
    return dst


TINY = ["workers=1", "precision=fp32", "tricks.ema_decay=0.5", "tricks.mixup_alpha=0.2"]


@needs_imagenette
def test_resume_mid_epoch_is_bitwise_identical(tmp_path: Path) -> None:
    data = subset(tmp_path / "data", {"train": 12, "val": 4}, classes=2)
    common = dict(
        recipe="bag_of_tricks", overrides=TINY, epochs=2, img_size=32, batch_size=8, progress=False
    )
    full = train("resnet18_v1d", data, out=tmp_path / "full", **common)
    part = train("resnet18_v1d", data, out=tmp_path / "part", stop_after_steps=4, **common)
    assert not part.finished and part.metrics["steps"] == 4  # 3 steps per epoch: mid-epoch 2
    assert not (tmp_path / "part" / "final.safetensors").exists()
    state = torch.load(tmp_path / "part" / "last.ckpt", weights_only=True)
    assert state["progress"]["step"] == 4 and "ema" in state
    resumed = train("", "", resume=tmp_path / "part", progress=False)
    assert resumed.finished and full.finished
    a = load_file(tmp_path / "full" / "final.safetensors")
    b = load_file(tmp_path / "part" / "final.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ"
    assert resumed.metrics["top1"] == full.metrics["top1"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


DDP_SCRIPT = """
import sys, logging
from zoo.training.loop import train
train("resnet18_v1d", sys.argv[1], recipe="bag_of_tricks", epochs=1, img_size=32, batch_size=8,
      overrides=["workers=0", "precision=fp32", "tricks.mixup_alpha=0.2"], out=sys.argv[2],
      progress=False)
"""


@needs_imagenette
def test_ddp_two_processes_equal_one_process_accumulating(tmp_path: Path) -> None:
    data = subset(tmp_path / "data", {"train": 8, "val": 2}, classes=2)
    single = train(
        "resnet18_v1d",
        data,
        recipe="bag_of_tricks",
        epochs=1,
        img_size=32,
        batch_size=8,
        out=tmp_path / "single",
        progress=False,
        overrides=["workers=0", "precision=fp32", "tricks.mixup_alpha=0.2", "micro_batch=4"],
    )
    assert single.metrics["steps"] == 2
    port = _free_port()
    procs = []
    for rank in range(2):
        env = {
            **os.environ,
            "WORLD_SIZE": "2",
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "OMP_NUM_THREADS": "1",
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", DDP_SCRIPT, str(data), str(tmp_path / "ddp")],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outs = [p.communicate(timeout=240)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    a = load_file(tmp_path / "single" / "final.safetensors")
    b = load_file(tmp_path / "ddp" / "final.safetensors")
    # Parameters agree; BN running statistics differ by design (DDP keeps rank 0's, which saw
    # its own micro-batch only, while accumulation updates them once per micro-batch).
    params = {n for n, _ in zoo.get_model("resnet18_v1d", num_classes=2).named_parameters()}
    worst = max(float((a[k] - b[k]).abs().max()) for k in params)
    assert worst < 1e-4, worst
    assert json.loads((tmp_path / "ddp" / "metrics.json").read_text())["processes"] == 2


@needs_imagenette
def test_a_short_real_run_learns(tmp_path: Path) -> None:
    data = subset(tmp_path / "data", {"train": 100, "val": 40})
    result = train(
        "resnet18_v1d",
        data,
        recipe="imagenette_5ep",  # trains at 112 px and tests at 128: here 56 and 64
        overrides=["eval_every=2"],  # epochs 2 and 3 (the last always is)
        epochs=3,
        img_size=56,
        out=tmp_path / "run",
        progress=False,
    )
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics == result.metrics
    assert (metrics["img_size"], metrics["eval_img_size"]) == (56, 64)
    assert metrics["top1"] >= 25.0, metrics  # chance is 10 %
    assert metrics["skipped_images"] == {"train": 0, "val": 0}
    assert metrics["images_per_second"] > 0 and metrics["epochs"] == 3
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2, 3]
    assert ["val_top1" in r for r in log] == [False, True, True]
    assert metrics["top1"] == log[-1]["val_top1"]
    png = (tmp_path / "run" / "plot.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    # The final weights reload with their class ids and names, and evaluate on the folders.
    model = zoo.get_model("resnet18_v1d", pretrained=tmp_path / "run" / "final.safetensors")
    assert model.pretrained_cfg.labels[0] == "n01440764"
    assert model.pretrained_cfg.label_names[0] == "tench"
    assert model.pretrained_cfg.preprocess.crop == 64  # the weights carry the eval size
    (pred,) = zoo.predict(model, sorted((data / "val" / "n01440764").iterdir())[0], topk=1)
    assert pred[0].label == "tench" or pred[0].label in model.pretrained_cfg.label_names


def _corrupt_data(root: Path) -> Path:
    data = subset(root, {"train": 6, "val": 2}, classes=2)
    bad = data / "train" / sorted(os.listdir(data / "train"))[0] / "broken.JPEG"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    return data


@needs_imagenette
def test_corrupt_images_are_skipped_and_counted(tmp_path: Path) -> None:
    data = _corrupt_data(tmp_path / "data")
    result = train(
        "resnet18_v1d",
        data,
        recipe="imagenette",
        epochs=1,
        img_size=32,
        batch_size=4,
        overrides=["workers=0"],
        out=tmp_path / "run",
        progress=False,
    )
    assert result.metrics["skipped_images"] == {"train": 1, "val": 0}


def run_cli(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    code = cli_main(args)
    out = capsys.readouterr()
    return code, out.out + out.err


@needs_imagenette
def test_bad_input_gives_one_message(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    base = ["train", "--model", "resnet18_v1d", "--recipe", "imagenette", "--quiet"]
    (tmp_path / "only_train" / "train" / "a").mkdir(parents=True)
    code, out = run_cli([*base, "--data", str(tmp_path / "only_train")], capsys)
    assert code != 0 and "missing val folder" in out and "Traceback" not in out
    empty = subset(tmp_path / "empty", {"train": 2, "val": 1}, classes=2)
    (empty / "train" / "zzz").mkdir()
    code, out = run_cli([*base, "--data", str(empty)], capsys)
    assert code != 0 and "without images: zzz" in out
    code, out = run_cli([*base, "--data", str(empty), "--set", "optim.lrr=1"], capsys)
    assert code != 0 and "did you mean 'lr'" in out
    (empty / "train" / "zzz").rmdir()
    code, out = run_cli(["train", "--resume", str(tmp_path)], capsys)
    assert code != 0 and "not a zoo run directory" in out
    code, out = run_cli([*base, "--data", str(empty), "--batch-size", "64"], capsys)
    assert code != 0 and "fewer than one batch" in out
    code, out = run_cli(["train", "--data", str(empty)], capsys)
    assert code != 0 and "--model" in out


def test_nan_loss_stops_naming_the_step(tmp_path: Path) -> None:
    data = tmp_path / "data"
    from PIL import Image

    for split in ("train", "val"):
        for c in ("a", "b"):
            (data / split / c).mkdir(parents=True)
            for i in range(4):
                Image.new("RGB", (20, 20), (i * 40, 0, 0)).save(data / split / c / f"{i}.png")
    with pytest.raises(ValueError, match=r"loss is (nan|inf) at step \d+"):
        train(
            "resnet18_v1d",
            data,
            recipe="imagenette",
            epochs=1,
            img_size=16,
            batch_size=4,
            overrides=["workers=0", "optim.lr=1e30", "precision=fp32"],
            out=tmp_path / "run",
            progress=False,
        )


@needs_imagenette
def test_distillation_from_a_zoo_checkpoint(tmp_path: Path) -> None:
    data = subset(tmp_path / "data", {"train": 8, "val": 2}, classes=2)
    common = dict(epochs=1, img_size=32, batch_size=8, progress=False)
    train(
        "resnet18_v1d",
        data,
        recipe="imagenette",
        overrides=["workers=0"],
        out=tmp_path / "teacher",
        **common,
    )
    teacher_file = tmp_path / "teacher" / "final.safetensors"
    student = train(
        "mobilenetv2_0_25",
        data,
        recipe="bag_of_tricks",
        teacher="resnet18_v1d",
        teacher_pretrained=str(teacher_file),
        out=tmp_path / "student",
        overrides=["workers=0", "tricks.distill_temperature=4"],
        **common,
    )
    assert student.finished
    args = json.loads((tmp_path / "student" / "run.json").read_text())
    assert args["teacher"] == "resnet18_v1d" and args["teacher_pretrained"] == str(teacher_file)
    # the KD term makes the training loss larger than a plain CE run's (T² · soft CE > 0)
    log = [json.loads(x) for x in (tmp_path / "student" / "log.jsonl").read_text().splitlines()]
    assert log[0]["train_loss"] > 1.0


@needs_imagenette
def test_sigterm_checkpoints_then_exits_and_resume_finishes(tmp_path: Path) -> None:
    import signal
    import time

    data = subset(tmp_path / "data", {"train": 16, "val": 2}, classes=2)
    run = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "zoo",
        "train",
        "--model",
        "resnet18_v1d",
        "--recipe",
        "imagenette",
        "--data",
        str(data),
        "--img-size",
        "32",
        "--batch-size",
        "4",
        "--epochs",
        "50",
        "--set",
        "workers=0",
        "--quiet",
        "--out",
        str(run),
    ]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 180
    while not (run / "log.jsonl").is_file() and time.monotonic() < deadline:
        time.sleep(0.2)  # the first epoch has ended: training is under way
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    assert "continue with: zoo train --resume" in out and "Traceback" not in out
    state = torch.load(run / "last.ckpt", weights_only=True)
    assert 8 <= state["progress"]["step"] < 400  # stopped early, after at least one epoch
    assert not (run / "final.safetensors").exists()
    assert (
        cli_main(
            [
                "train",
                "--resume",
                str(run),
                "--quiet",
                "--stop-after-steps",
                str(state["progress"]["step"] + 2),
            ]
        )
        == 0
    )
    assert torch.load(run / "last.ckpt", weights_only=True)["progress"]["step"] == (
        state["progress"]["step"] + 2
    )
