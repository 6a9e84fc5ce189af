"""ResNet family: GluonCV, timm and torchvision parity, parameter counts, the model contract."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import GLUON_FIXTURES, gluon_fixture, randomize, stage_outputs
from safetensors.torch import save_file

import zoo
from zoo.convert import convert
from zoo.convert.mxnet_params import read_params, write_params
from zoo.factory import count_parameters
from zoo.registry import get_spec

GLUON_COUNTS = json.loads((GLUON_FIXTURES / "gluoncv_models.json").read_text())["models"]
RESNETS = zoo.list_models(["resnet*", "resnext*", "se_resnext*"])


def _load_converted(path, name, **kw) -> torch.nn.Module:
    converted = convert(path, model=name, **kw)
    model = get_spec(name).build(converted.config).eval()
    model.load_state_dict(converted.state_dict)
    return model


def _check_gluon(model: torch.nn.Module, ref: dict) -> None:
    with torch.no_grad():
        y = model(torch.from_numpy(ref["x"]))
        torch.testing.assert_close(y, torch.from_numpy(ref["y"]), atol=1e-4, rtol=0)
        if "x_odd" in ref:  # 225x225 exposes ceil-mode and padding mistakes
            y_odd = model(torch.from_numpy(ref["x_odd"]))
            torch.testing.assert_close(y_odd, torch.from_numpy(ref["y_odd"]), atol=1e-4, rtol=0)


def test_gluon_parity_resnet18_v1b_float64():
    params, ref = gluon_fixture("resnet18_v1b")
    model = _load_converted(params, "resnet18_v1b")
    _check_gluon(model, ref)
    with torch.no_grad():
        y64 = model.double()(torch.from_numpy(ref["x"]).double())
    torch.testing.assert_close(y64, torch.from_numpy(ref["y64"]), atol=1e-10, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    [
        "resnet18_v1", "resnet34_v1b", "resnet50_v1", "resnet50_v1b", "resnet50_v1c",
        "resnet50_v1d", "resnet50_v1e", "resnet50_v1s", "resnet101_v1", "resnet101_v1d",
        "resnet152_v1d", "resnext50_32x4d", "se_resnext50_32x4d",
    ],
)  # fmt: skip
def test_gluon_parity_generated(name):
    """Fixtures made locally with ../shared/tools/gluoncv_reference (skipped where absent)."""
    params, ref = gluon_fixture(name)
    _check_gluon(_load_converted(params, name), ref)


def test_gluon_legacy_prefixed_keys(tmp_path):
    """Old GluonCV files use prefixed names (conv0_weight); build one from the real fixture."""
    params, ref = gluon_fixture("resnet18_v1b")
    meta = json.loads((GLUON_FIXTURES / "resnet18_v1b.json").read_text())
    arrays = read_params(params)
    legacy = {p["legacy_name_stripped"]: arrays[p["name"]] for p in meta["params"]}
    assert "conv0_weight" in legacy and "layers1_batchnorm3_running_var" in legacy
    path = tmp_path / "resnet18_v1b.legacy.params"
    write_params(path, legacy)
    _check_gluon(_load_converted(path, "resnet18_v1b"), ref)


def test_gluon_legacy_wrong_arch_names_the_mismatch(tmp_path):
    params, _ = gluon_fixture("resnet18_v1b")
    meta = json.loads((GLUON_FIXTURES / "resnet18_v1b.json").read_text())
    arrays = read_params(params)
    legacy = {p["legacy_name_stripped"]: arrays[p["name"]] for p in meta["params"]}
    path = tmp_path / "legacy.params"
    write_params(path, legacy)
    with pytest.raises(ValueError, match="legacy tensors, the model has"):
        convert(path, model="resnet18_v1d")


# timm name, timm kwargs, zoo name
TIMM_PAIRS = [
    ("resnet50", {}, "resnet50_v1b"),
    ("resnet50c", {}, "resnet50_v1c"),
    ("resnet50d", {}, "resnet50_v1d"),
    ("resnet50s", {}, "resnet50_v1s"),
    ("resnet50d", {"stem_width": 64}, "resnet50_v1e"),  # timm has no resnet50e
    ("resnet18d", {}, "resnet18_v1d"),
    ("resnext50_32x4d", {}, "resnext50_32x4d"),
    ("seresnext50_32x4d", {}, "se_resnext50_32x4d"),
    ("resnet101d", {}, "resnet101_v1d"),
    ("resnet152", {}, "resnet152_v1b"),
]


def _assert_same_logits(reference: torch.nn.Module, ours: torch.nn.Module, size: int = 64) -> None:
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, actual = reference.eval()(x), ours.eval()(x)
    scale = expected.abs().max().clamp(min=1.0)
    torch.testing.assert_close(actual / scale, expected / scale, atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    ("timm_name", "kwargs", "name"), TIMM_PAIRS, ids=[p[2] for p in TIMM_PAIRS]
)
def test_timm_parity(tmp_path, timm_name, kwargs, name):
    timm = pytest.importorskip("timm")
    reference = randomize(timm.create_model(timm_name, pretrained=False, **kwargs))
    src = tmp_path / f"{timm_name}.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(src))
    ours = _load_converted(src, name, format="timm")
    _assert_same_logits(reference, ours, size=65)  # odd size: ceil-mode average pools differ


@pytest.mark.parametrize(
    ("tv_name", "name"), [("resnet18", "resnet18_v1b"), ("resnet50", "resnet50_v1b")]
)
def test_torchvision_parity(tmp_path, tv_name, name):
    import torchvision

    reference = randomize(getattr(torchvision.models, tv_name)(weights=None))
    src = tmp_path / f"{tv_name}.pth"
    torch.save(reference.state_dict(), src)
    ours = _load_converted(src, name, format="torchvision")
    _assert_same_logits(reference, ours)


@pytest.mark.parametrize("name", RESNETS)
def test_parameter_counts(name):
    params, stats = count_parameters(get_spec(name))
    if name in GLUON_COUNTS:
        assert (params, stats) == (
            GLUON_COUNTS[name]["params"],
            GLUON_COUNTS[name]["running_stats"],
        )
    else:  # our extensions: resnet18/34 _v1c/_v1d equal timm's resnet18d/34d
        timm = pytest.importorskip("timm")
        with torch.device("meta"):
            reference = timm.create_model(name.replace("_v1c", "d").replace("_v1d", "d"))
        assert params == sum(p.numel() for p in reference.parameters())


def test_every_gluon_resnet_is_registered():
    gluon = {n for n in GLUON_COUNTS if n.startswith(("resnet", "resnext", "se_resnext"))}
    assert gluon <= set(RESNETS)


def test_model_contract():
    model = zoo.get_model("resnet18_v1d", num_classes=7, drop_rate=0.2).eval()
    x = torch.randn(2, 3, 64, 64)
    features = model.forward_features(x)
    assert features.shape == (2, 512, 2, 2)
    assert model.forward_head(features, pre_logits=True).shape == (2, 512)
    assert model(x).shape == (2, 7)
    model.reset_classifier(3)
    assert model(x).shape == (2, 3)
    model.reset_classifier(0)
    assert model(x).shape == (2, 512)
    assert [f.reduction for f in model.feature_info] == [2, 4, 8, 16, 32]
    assert [f.num_chs for f in model.feature_info] == [64, 64, 128, 256, 512]
    outputs = stage_outputs(model.eval(), x)
    for info in model.feature_info:  # each named stage really has that width and reduction
        assert outputs[info.module].shape[1:] == (
            info.num_chs,
            64 // info.reduction,
            64 // info.reduction,
        )


def test_zero_init_last_zeroes_only_residual_branch_ends():
    model = zoo.get_model("resnet50_v1d", zero_init_last=True)
    for block in model.layer1:
        assert torch.count_nonzero(block.bn3.weight) == 0
        assert torch.all(block.bn2.weight == 1)
    assert torch.all(model.layer1[0].downsample[2].weight == 1)  # shortcut BN untouched
    plain = zoo.get_model("resnet50_v1d")
    assert torch.all(plain.layer1[0].bn3.weight == 1)


def test_zero_init_last_makes_blocks_identity_at_init():
    model = zoo.get_model("resnet18_v1b", zero_init_last=True).eval()
    block = model.layer1[0]
    x = torch.rand(1, 64, 8, 8)  # non-negative: the block's final ReLU is then the identity
    torch.testing.assert_close(block(x), x)


def test_in_chans_and_output_stride():
    model = zoo.get_model("resnet18_v1d", in_chans=1, output_stride=8).eval()
    out = model.forward_features(torch.randn(1, 1, 64, 64))
    assert out.shape == (1, 512, 8, 8)
    assert [f.reduction for f in model.feature_info] == [2, 4, 8, 8, 8]


def test_frozen_batchnorm_option():
    from torchvision.ops import FrozenBatchNorm2d

    model = zoo.get_model("resnet18_v1b", norm_layer="frozen_batchnorm")
    assert isinstance(model.bn1, FrozenBatchNorm2d)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
