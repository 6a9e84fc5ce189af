"""zoo finetune / the recipe's [finetune] section on the trainer (issue 11, part 5)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import randomize
from safetensors.torch import load_file
from test_train import needs_imagenette, run_cli, subset

import zoo
from zoo.training.loop import train
from zoo.training.recipe import resolve
from zoo.training.schedule import StepPlan, lr_at

ARCH = "mobilenetv2_0_25"
FAST = ["workers=1", "precision=fp32", "channels_last=false"]


def _pretrained(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """A 1000-class "pretrained" file with random weights and BN statistics."""
    path = zoo.save_model(randomize(zoo.get_model(ARCH)), tmp_path / "pre.safetensors")
    return path, load_file(path)


@needs_imagenette
def test_per_group_lrs_and_frozen_stages_unchanged(tmp_path: Path) -> None:
    data = subset(tmp_path / "data", {"train": 8, "val": 2}, classes=2)
    path, before = _pretrained(tmp_path)
    overrides = [*FAST, "finetune.freeze_stages=2", "finetune.head_lr_mult=2.0"]
    # Live BN in the stages that are not frozen; the multiplier set here, not the recipe's.
    overrides += ["finetune.backbone_lr_mult=0.1", "finetune.freeze_bn=false"]
    result = train(
        ARCH, data, recipe="finetune", pretrained=str(path), overrides=overrides,
        epochs=1, img_size=32, batch_size=8, out=tmp_path / "run", progress=False,
    )  # fmt: skip
    assert result.finished
    ckpt = torch.load(tmp_path / "run" / "last.ckpt", weights_only=True)
    groups = {g["name"]: g for g in ckpt["optimizer"]["param_groups"]}
    # GluonCV's v2 classifier has no bias: no head.no_decay group.
    assert set(groups) == {"backbone.decay", "backbone.no_decay", "head.decay"}
    rec = resolve("finetune", overrides=overrides, epochs=1, batch_size=8, img_size=32)
    last_lr = lr_at(ckpt["progress"]["step"] - 1, StepPlan.from_recipe(rec, 2))
    assert groups["backbone.decay"]["lr"] == pytest.approx(0.1 * last_lr)
    assert groups["head.decay"]["lr"] == pytest.approx(2.0 * last_lr)
    assert groups["backbone.no_decay"]["weight_decay"] == 0.0
    after = load_file(tmp_path / "run" / "final.safetensors")
    frozen = ("stem.", "blocks.0.", "blocks.1.", "blocks.2.")  # stages 0 and 1 (stride 2, 4)
    checked = [k for k in before if k.startswith(frozen) and not k.endswith("num_batches_tracked")]
    assert any(k.endswith("running_var") for k in checked)
    for key in checked:
        assert torch.equal(after[key], before[key]), f"{key} changed"
    assert not torch.equal(after["blocks.5.dw.conv.weight"], before["blocks.5.dw.conv.weight"])
    assert not torch.equal(
        after["blocks.5.dw.bn.running_mean"], before["blocks.5.dw.bn.running_mean"]
    )
    assert after["fc.weight"].shape[0] == 2  # a new head for the data's classes
    model = zoo.get_model(ARCH, pretrained=tmp_path / "run" / "final.safetensors")
    assert isinstance(model.stem.bn, torch.nn.BatchNorm2d)  # the ordinary BN layout


@needs_imagenette
def test_cli_freeze_bn_and_limit_per_class(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = subset(tmp_path / "data", {"train": 6, "val": 2}, classes=2)
    path, before = _pretrained(tmp_path)
    args = [
        "finetune", "--model", ARCH, "--pretrained", str(path), "--data", str(data),
        "--limit-per-class", "2", "--freeze-bn", "--epochs", "1", "--img-size", "32",
        "--batch-size", "2", "--out", str(tmp_path / "run"), "--quiet", "--json",
        *(a for o in FAST for a in ("--set", o)),
    ]  # fmt: skip
    code, out = run_cli(args, capsys)
    assert code == 0, out
    metrics = json.loads(out[out.index("{") :])
    assert metrics["steps"] == 2  # 2 classes x 2 images, batch 2: the limit applied
    after = load_file(tmp_path / "run" / "final.safetensors")
    stats = [k for k in before if k.endswith(("running_mean", "running_var", "bn.weight"))]
    assert stats and all(torch.equal(after[k], before[k]) for k in stats)
    assert not torch.equal(after["blocks.5.dw.conv.weight"], before["blocks.5.dw.conv.weight"])
    code, out = run_cli(["finetune", "--model", ARCH, "--data", str(data)], capsys)
    assert code == 2 and "--pretrained" in out and "Traceback" not in out


@needs_imagenette
def test_known_classes_start_from_the_pretrained_rows(tmp_path: Path) -> None:
    # Imagenette's folders are ImageNet WordNet ids: with finetune.reuse_head (the recipe's
    # default) the new 2-way head is the pretrained classifier's rows 0 (tench) and 217 (English
    # springer), not a fresh one; at a negligible LR it is still those rows after a step.
    data = subset(tmp_path / "data", {"train": 2, "val": 1}, classes=2)
    model = randomize(zoo.get_model(ARCH))
    path = zoo.save_model(model, tmp_path / "pre.safetensors", labels="imagenet-1k")
    rows = load_file(path)["fc.weight"][[0, 217]]
    result = train(
        ARCH, data, recipe="finetune", pretrained=str(path), overrides=[*FAST, "optim.lr=1e-9"],
        epochs=1, img_size=32, batch_size=4, out=tmp_path / "run", progress=False,
    )  # fmt: skip
    assert result.finished and result.metrics["steps"] == 1
    torch.testing.assert_close(load_file(tmp_path / "run" / "final.safetensors")["fc.weight"], rows)
