"""zoo.freeze_bn / freeze_stages / sync_batchnorm / param_groups (issue 11, part 3)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import randomize
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

import zoo
from zoo.transfer import head_from_classes, param_groups, stage_modules


def _bns(model: nn.Module, kind: type) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, kind)]


def _sgd_step(model: nn.Module, x: torch.Tensor) -> None:
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.5)
    model.train()
    out = model(x)
    loss = sum(o.square().mean() for o in out) if isinstance(out, list) else out.square().mean()
    loss.backward()
    opt.step()


@pytest.mark.parametrize("arch", ["mobilenet0_25_tf", "resnet18_v1d"])
def test_freeze_bn_keeps_each_eps_and_the_eval_outputs(arch, tmp_path):
    model = randomize(zoo.get_model(arch, num_classes=5, drop_rate=0.0)).eval()
    eps = {m.eps for m in _bns(model, nn.BatchNorm2d)}
    assert eps == {1e-3 if arch.endswith("_tf") else 1e-5}
    x = torch.randn(2, 3, 67, 67)
    with torch.no_grad():
        expected = model(x)
    zoo.freeze_bn(model)
    assert not _bns(model, nn.BatchNorm2d)
    assert {m.eps for m in _bns(model, FrozenBatchNorm2d)} == eps
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()  # frozen BN ignores the mode: no batch statistics, no running updates
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, rtol=1e-4, atol=1e-5)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    # save_model writes the ordinary layout: it reloads as BatchNorm2d, same outputs.
    path = zoo.save_model(model, tmp_path / "frozen.safetensors")
    reloaded = zoo.get_model(arch, pretrained=path).eval()
    assert _bns(reloaded, nn.BatchNorm2d) and not _bns(reloaded, FrozenBatchNorm2d)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("features_only", [False, True])
def test_freeze_stages_keeps_weights_and_statistics_of_frozen_stages(features_only):
    kwargs = {"features_only": True, "out_indices": (1, 2, 3)} if features_only else {}
    model = randomize(zoo.get_model("resnet18_v1d", **kwargs))
    assert stage_modules(model, 2) == ["conv1", "bn1", "act1", "maxpool", "layer1"]
    zoo.freeze_stages(model, 2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _sgd_step(model, torch.randn(4, 3, 64, 64))
    after = model.state_dict()
    frozen = ("conv1.", "bn1.", "layer1.")
    for key, value in after.items():
        if key.startswith(frozen):
            assert torch.equal(value, before[key]), f"{key} changed"
    changed = [k for k in after if k.startswith("layer2.") and not torch.equal(after[k], before[k])]
    assert any(k.endswith("running_mean") for k in changed)  # live stages still learn
    assert any(k.endswith("conv1.weight") for k in changed)
    assert all(not p.requires_grad for n, p in model.named_parameters() if n.startswith(frozen))


def test_freeze_stages_on_every_family_covers_the_stem():
    for arch in ("mobilenet0_25", "mobilenetv2_0_25", "mobilenetv3_small"):
        model = zoo.freeze_stages(zoo.get_model(arch), 1)
        first = model.get_submodule(model.first_conv)
        assert not first.weight.requires_grad, arch
        assert model.fc.weight.requires_grad
    with pytest.raises(ValueError, match=r"in 0..5"):
        zoo.freeze_stages(zoo.get_model("mobilenet0_25"), 6)


def test_sync_batchnorm_keeps_keys_and_frozen_layers():
    model = zoo.freeze_stages(zoo.get_model("mobilenetv2_0_25"), 1)
    keys = set(model.state_dict())
    synced = zoo.sync_batchnorm(model)
    assert _bns(synced, nn.SyncBatchNorm) and not _bns(synced, nn.BatchNorm2d)
    assert isinstance(synced.stem.bn, FrozenBatchNorm2d)
    assert set(synced.state_dict()) == keys


def test_param_groups_split_backbone_and_head():
    model = zoo.freeze_stages(zoo.get_model("resnet18_v1d", num_classes=3), 1)
    groups = param_groups(
        model, weight_decay=1e-4, no_bias_decay=True, backbone_lr_mult=0.1, head_lr_mult=2.0
    )
    by_name = {g["name"]: g for g in groups}
    assert set(by_name) == {"backbone.decay", "backbone.no_decay", "head.decay", "head.no_decay"}
    assert by_name["head.decay"]["params"] == [model.fc.weight]
    assert by_name["head.no_decay"]["params"] == [model.fc.bias]
    assert by_name["head.decay"]["lr_scale"] == 2.0 and by_name["backbone.decay"]["lr_scale"] == 0.1
    assert by_name["backbone.no_decay"]["weight_decay"] == 0.0
    counted = sum(len(g["params"]) for g in groups)
    assert counted == sum(p.requires_grad for p in model.parameters())  # frozen stem left out
    assert all(p is not model.conv1[0].weight for p in by_name["backbone.decay"]["params"])


def test_head_from_classes_keeps_the_pretrained_rows(tmp_path):
    # A TensorFlow-style 1001-way file (row 0 = background) labelled as ImageNet-1k.
    model = randomize(zoo.get_model("mobilenet0_25_tf", num_classes=1001, drop_rate=0.0))
    model.pretrained_cfg = dataclasses.replace(
        model.pretrained_cfg, labels="imagenet-1k", label_offset=1
    )
    x = torch.randn(2, 3, 33, 33)
    with torch.no_grad():
        full = model.eval()(x)
    tench, chain_saw = "n01440764", "n03000684"  # ImageNet classes 0 and 491
    assert not head_from_classes(model, [tench, "cats"])  # not all known: model unchanged
    assert model.num_classes == 1001
    assert head_from_classes(model, [chain_saw, tench])
    assert model.num_classes == 2 and model.fc.bias is not None
    with torch.no_grad():
        torch.testing.assert_close(model(x), full[:, [1 + 491, 1 + 0]])
    path = zoo.save_model(model, tmp_path / "m.safetensors")
    unknown = zoo.get_model("mobilenet0_25_tf", pretrained=path)  # no labels left: not reusable
    assert not head_from_classes(unknown, ["cats", "dogs"])
    assert unknown.num_classes == 2
