"""Inception v3: GluonCV, timm and torchvision parity, GluonCV key mapping, the model contract."""

from __future__ import annotations

import functools
import json

import pytest
import torch
from conftest import GLUON_FIXTURES, gluon_fixture, randomize, stage_outputs
from safetensors.torch import save_file

import zoo
from zoo.convert import convert
from zoo.convert.gluoncv import rename_inception
from zoo.factory import count_parameters
from zoo.registry import get_spec

GLUON_COUNTS = json.loads((GLUON_FIXTURES / "gluoncv_models.json").read_text())["models"]


def _load_converted(path, **kw) -> torch.nn.Module:
    converted = convert(path, model="inceptionv3", **kw)
    model = get_spec("inceptionv3").build(converted.config).eval()
    model.load_state_dict(converted.state_dict)
    return model


@pytest.mark.slow
def test_gluon_parity_generated():
    """299x299 fixture made locally with ../shared/tools/gluoncv_reference (skipped if absent)."""
    params, ref = gluon_fixture("inceptionv3")
    model = _load_converted(params)
    with torch.no_grad():
        y = model(torch.from_numpy(ref["x"]))
        torch.testing.assert_close(y, torch.from_numpy(ref["y"]), atol=1e-4, rtol=0)
        y64 = model.double()(torch.from_numpy(ref["x"]).double())
        torch.testing.assert_close(y64, torch.from_numpy(ref["y64"]), atol=1e-10, rtol=0)


@pytest.mark.parametrize(
    ("gluon", "zoo_key"),
    [
        ("features.0.0.weight", "Conv2d_1a_3x3.conv.weight"),
        ("features.2.1.gamma", "Conv2d_2b_3x3.bn.weight"),
        ("features.4.1.running_var", "Conv2d_3b_1x1.bn.running_var"),
        ("features.5.0.weight", "Conv2d_4a_3x3.conv.weight"),
        ("features.7.1.1.0.weight", "Mixed_5b.branch5x5_2.conv.weight"),
        ("features.9.3.1.1.beta", "Mixed_5d.branch_pool.bn.bias"),
        ("features.10.1.2.0.weight", "Mixed_6a.branch3x3dbl_3.conv.weight"),
        ("features.11.2.4.1.gamma", "Mixed_6b.branch7x7dbl_5.bn.weight"),
        ("features.14.1.2.0.weight", "Mixed_6e.branch7x7_3.conv.weight"),
        ("features.15.0.1.0.weight", "Mixed_7a.branch3x3_2.conv.weight"),
        ("features.15.1.3.1.running_mean", "Mixed_7a.branch7x7x3_4.bn.running_mean"),
        ("features.16.1.0.0.0.weight", "Mixed_7b.branch3x3_1.conv.weight"),
        ("features.16.1.1.1.0.0.weight", "Mixed_7b.branch3x3_2b.conv.weight"),
        ("features.17.2.0.1.1.gamma", "Mixed_7c.branch3x3dbl_2.bn.weight"),
        ("features.17.2.1.0.0.1.beta", "Mixed_7c.branch3x3dbl_3a.bn.bias"),
        ("output.weight", "fc.weight"),
        ("features.7.3.0.weight", None),  # a pool has no parameters: no rule
    ],
)
def test_gluon_key_mapping(gluon, zoo_key):
    """Real GluonCV keys (from the inceptionv3 fixture's .json) of every block and branch kind."""
    assert rename_inception(gluon) == zoo_key
    if zoo_key is not None:
        assert zoo_key in _zoo_keys()


@functools.cache
def _zoo_keys() -> set[str]:
    spec = get_spec("inceptionv3")
    with torch.device("meta"):
        return set(spec.build(spec.config).state_dict())


def _assert_same_logits(reference: torch.nn.Module, ours: torch.nn.Module) -> None:
    x = torch.randn(1, 3, 299, 299, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, actual = reference.eval()(x), ours.eval()(x)
    scale = expected.abs().max().clamp(min=1.0)
    torch.testing.assert_close(actual / scale, expected / scale, atol=1e-4, rtol=0)


def test_timm_parity(tmp_path):
    timm = pytest.importorskip("timm")
    reference = randomize(timm.create_model("inception_v3", pretrained=False))
    src = tmp_path / "inception_v3.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(src))
    _assert_same_logits(reference, _load_converted(src, format="timm"))


def test_torchvision_parity_ignores_aux_head(tmp_path):
    import torchvision

    reference = torchvision.models.inception_v3(
        weights=None, aux_logits=True, transform_input=False, init_weights=False
    )
    randomize(reference)
    src = tmp_path / "inception_v3.pth"
    torch.save(reference.state_dict(), src)
    converted = convert(src, model="inceptionv3", format="torchvision")
    aux = [k for k in reference.state_dict() if k.startswith("AuxLogits.")]
    assert aux and set(aux) <= set(converted.report.ignored)
    assert not any(k.startswith("AuxLogits") for k in converted.state_dict)
    ours = get_spec("inceptionv3").build(converted.config)
    ours.load_state_dict(converted.state_dict)
    _assert_same_logits(reference, ours)  # eval mode: torchvision returns plain logits


def test_parameter_count():
    gluon = GLUON_COUNTS["inceptionv3"]
    assert count_parameters(get_spec("inceptionv3")) == (gluon["params"], gluon["running_stats"])


def test_model_contract():
    model = zoo.get_model("inceptionv3", num_classes=7).eval()
    assert model.config.bn_eps == 1e-3 and model.config.drop_rate == 0.5
    assert all(m.eps == 1e-3 for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    x = torch.randn(1, 3, 299, 299)
    with torch.no_grad():
        features = model.forward_features(x)
        assert features.shape == (1, 2048, 8, 8)
        assert model.forward_head(features, pre_logits=True).shape == (1, 2048)
        assert model.forward_head(features).shape == (1, 7)
    outputs = stage_outputs(model, x)
    assert [f.reduction for f in model.feature_info] == [2, 4, 8, 16, 32]
    sizes = [(outputs[f.module].shape[1], outputs[f.module].shape[-1]) for f in model.feature_info]
    assert sizes == [(64, 147), (192, 71), (288, 35), (768, 17), (2048, 8)]
    small = torch.randn(2, 3, 75, 75)  # the smallest input the valid convs allow
    with torch.no_grad():
        model.reset_classifier(10)
        assert model(small).shape == (2, 10)
        model.reset_classifier(0)
        assert model(small).shape == (2, 2048)
    one = zoo.get_model("inceptionv3", in_chans=1).eval()
    assert one.get_submodule(one.first_conv).weight.shape[1] == 1
    with torch.no_grad():
        assert one(torch.randn(1, 1, 75, 75)).shape == (1, 1000)


def test_gluon_alias_and_preprocess():
    assert zoo.registry.canonical_name("InceptionV3") == "inceptionv3"
    pre = get_spec("inceptionv3").preprocess
    assert (pre.crop, pre.resize) == (299, 342)  # GluonCV rounds 299 / 0.875 up
