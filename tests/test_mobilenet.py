"""MobileNet v1/v2/v3: GluonCV parity, parameter counts, TensorFlow twins, the model contract."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import GLUON_FIXTURES, gluon_fixture, stage_outputs

import zoo
from zoo.convert import ConversionError, convert
from zoo.convert.gluoncv import is_legacy
from zoo.convert.mxnet_params import read_params, write_params
from zoo.factory import count_parameters
from zoo.models.mobilenet import V1_BLOCKS, Conv2dSame, conv2d
from zoo.registry import get_spec

GLUON_COUNTS = json.loads((GLUON_FIXTURES / "gluoncv_models.json").read_text())["models"]
MOBILENETS = zoo.list_models("mobilenet*")
TWINS = [n for n in MOBILENETS if n.endswith("_tf")]


def _load_converted(path, name, **kw) -> torch.nn.Module:
    converted = convert(path, model=name, **kw)
    model = get_spec(name).build(converted.config).eval()
    model.load_state_dict(converted.state_dict)
    return model


def _check_gluon(model: torch.nn.Module, ref: dict, float64: bool = True) -> None:
    with torch.no_grad():
        y = model(torch.from_numpy(ref["x"]))
        torch.testing.assert_close(y, torch.from_numpy(ref["y"]), atol=1e-4, rtol=0)
        if "x_odd" in ref:  # 225x225 exposes padding and pooling mistakes
            y_odd = model(torch.from_numpy(ref["x_odd"]))
            torch.testing.assert_close(y_odd, torch.from_numpy(ref["y_odd"]), atol=1e-4, rtol=0)
        if float64:
            model = model.double()
            y64 = model(torch.from_numpy(ref["x"]).double())
            torch.testing.assert_close(y64, torch.from_numpy(ref["y64"]), atol=1e-10, rtol=0)
            if "x_odd" in ref:
                y64 = model(torch.from_numpy(ref["x_odd"]).double())
                expected = torch.from_numpy(ref["y64_odd"])
                torch.testing.assert_close(y64, expected, atol=1e-10, rtol=0)


# (fixture file stem, zoo name): the fixtures kept in ../shared, structural and legacy keys.
SHARED = [
    ("mobilenet0.25", "mobilenet0_25"),
    ("mobilenet0.25.legacy", "mobilenet0_25"),
    ("mobilenetv2_0.25", "mobilenetv2_0_25"),
    ("mobilenetv2_0.25.legacy", "mobilenetv2_0_25"),
    ("mobilenetv3_small", "mobilenetv3_small"),
]


@pytest.mark.parametrize(("stem", "name"), SHARED, ids=[s for s, _ in SHARED])
def test_gluon_parity(stem, name):
    params, ref = gluon_fixture(stem.removesuffix(".legacy"))
    path = params.with_name(f"{stem}.params")
    assert is_legacy(list(read_params(path))) == stem.endswith(".legacy")
    _check_gluon(_load_converted(path, name), ref)


@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    [
        "mobilenet1.0", "mobilenet0.75", "mobilenet0.5",
        "mobilenetv2_1.0", "mobilenetv2_0.75", "mobilenetv2_0.5", "mobilenetv3_large",
    ],
)  # fmt: skip
def test_gluon_parity_generated(name):
    """Fixtures made locally with ../shared/tools/gluoncv_reference (skipped where absent)."""
    params, ref = gluon_fixture(name)
    _check_gluon(_load_converted(params, zoo.registry.canonical_name(name)), ref)


def test_gluon_legacy_mobilenetv3_is_refused_clearly(tmp_path):
    params, _ = gluon_fixture("mobilenetv3_small")
    meta = json.loads((GLUON_FIXTURES / "mobilenetv3_small.json").read_text())
    arrays = read_params(params)
    path = tmp_path / "v3.legacy.params"
    write_params(path, {p["legacy_name"]: arrays[p["name"]] for p in meta["params"]})
    with pytest.raises(ConversionError, match="not supported for the mobilenetv3 family"):
        convert(path, model="mobilenetv3_small")


@pytest.mark.parametrize("gluon_name", [n for n in GLUON_COUNTS if n.startswith("mobilenet")])
def test_parameter_counts(gluon_name):
    gluon = GLUON_COUNTS[gluon_name]
    spec = get_spec(gluon_name)  # GluonCV's spelling is an alias
    assert count_parameters(spec) == (gluon["params"], gluon["running_stats"])


def _tf_v1_counts(m: float, classes: int = 1000) -> tuple[int, int]:
    """TensorFlow-slim MobileNetV1 by arithmetic: widths max(int(c * m), 8), BN after each conv."""

    def width(c: int) -> int:
        return max(int(c * m), 8)

    params, stats = 27 * width(32) + 2 * width(32), 2 * width(32)
    in_chs = width(32)
    for c, _ in V1_BLOCKS:
        out = width(c)
        params += 9 * in_chs + 2 * in_chs + in_chs * out + 2 * out
        stats += 2 * in_chs + 2 * out
        in_chs = out
    return params + in_chs * classes + classes, stats


@pytest.mark.parametrize("name", TWINS)
def test_tf_twin_parameter_counts(name):
    params, stats = count_parameters(get_spec(name))
    if name.startswith("mobilenetv2"):
        timm = pytest.importorskip("timm")
        with torch.device("meta"):
            reference = timm.create_model("mobilenetv2_100")
        assert params == sum(p.numel() for p in reference.parameters())
        assert stats == sum(
            b.numel() for k, b in reference.named_buffers() if k.endswith(("_mean", "_var"))
        )
    else:
        assert (params, stats) == _tf_v1_counts(get_spec(name).config.multiplier)


def test_every_gluon_mobilenet_is_registered():
    gluon = {n for n in GLUON_COUNTS if n.startswith("mobilenet")}
    assert {zoo.registry.canonical_name(n) for n in gluon} <= set(MOBILENETS)
    assert zoo.registry.canonical_name("mobilenetv2_0.25") == "mobilenetv2_0_25"
    assert zoo.registry.canonical_name("mobilenet1.0") == "mobilenet1_0"


# --- TensorFlow "SAME" padding ---------------------------------------------------------------


def _tf_same(x: torch.Tensor, conv: torch.nn.Conv2d) -> torch.Tensor:
    """The reference: TensorFlow's formula, written out independently of zoo's code."""
    pads = []
    for size, k, s in zip(x.shape[-2:], conv.kernel_size, conv.stride, strict=True):
        total = max((math.ceil(size / s) - 1) * s + k - size, 0)
        pads.append((total // 2, total - total // 2))
    (top, bottom), (left, right) = pads
    x = F.pad(x, (left, right, top, bottom))
    return F.conv2d(x, conv.weight, conv.bias, conv.stride, 0, 1, conv.groups)


@pytest.mark.parametrize("size", [8, 9, 16, 17])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize(("kernel", "depthwise"), [(3, False), (3, True), (5, True), (1, False)])
def test_same_padding_matches_tensorflow(size, stride, kernel, depthwise):
    torch.manual_seed(0)
    chs = 4
    conv = conv2d(chs, chs, kernel, stride, groups=chs if depthwise else 1, padding="same")
    assert isinstance(conv, Conv2dSame) == (stride > 1)
    x = torch.randn(2, chs, size, size)
    with torch.no_grad():
        torch.testing.assert_close(conv(x), _tf_same(x, conv), atol=1e-6, rtol=0)
        assert conv(x).shape[-1] == math.ceil(size / stride)


def test_same_padding_stride2_even_input_pads_bottom_right_only():
    torch.manual_seed(0)
    conv = conv2d(3, 5, 3, 2, padding="same")
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        expected = F.conv2d(F.pad(x, (0, 1, 0, 1)), conv.weight, stride=2)
        torch.testing.assert_close(conv(x), expected, atol=1e-6, rtol=0)
        symmetric = F.conv2d(x, conv.weight, stride=2, padding=1)  # GluonCV's: different
        assert (conv(x) - symmetric).abs().max() > 1e-3


def test_tf_twin_is_the_same_network_with_tf_options():
    gluon, twin = zoo.get_model("mobilenet0_25"), zoo.get_model("mobilenet0_25_tf")
    assert list(gluon.state_dict()) == list(twin.state_dict())
    assert isinstance(twin.stem.conv, Conv2dSame) and not isinstance(gluon.stem.conv, Conv2dSame)
    assert isinstance(twin.blocks[0].dw.act, torch.nn.ReLU6)
    assert isinstance(gluon.blocks[0].dw.act, torch.nn.ReLU)
    assert twin.config.bn_eps == 1e-3 and twin.num_classes == 1000
    pre = get_spec("mobilenet0_25_tf").preprocess
    assert (pre.crop, pre.resize, pre.mean, pre.std) == (128, 146, (0.5,) * 3, (0.5,) * 3)
    assert get_spec("mobilenet1_0_tf").preprocess.crop == 224
    assert get_spec("mobilenetv2_1_0_tf").config.classifier_bias
    assert not get_spec("mobilenetv2_1_0").config.classifier_bias


def _fold_bn_as_tf(model: torch.nn.Module, seed: int = 0) -> dict[str, tuple]:
    """Random conv weights and TF-style folded biases, loaded as BN(1, b, 0, 1 - eps)."""
    gen = torch.Generator().manual_seed(seed)
    tf = {}
    with torch.no_grad():
        for name, module in model.named_modules():
            if hasattr(module, "conv") and hasattr(module, "bn"):
                conv, bn = module.conv, module.bn
                w = torch.randn(conv.weight.shape, generator=gen) * (2 / conv.weight[0].numel())
                b = torch.randn(conv.out_channels, generator=gen) * 0.1
                conv.weight.copy_(w)
                bn.weight.fill_(1.0)
                bn.bias.copy_(b)
                bn.running_mean.zero_()
                bn.running_var.fill_(1.0 - bn.eps)
                tf[name] = (w, b, conv.stride[0], conv.groups)
    return tf


def _tf_conv(x, w, b, stride, groups, relu6=True):
    total = [max((math.ceil(n / stride) - 1) * stride + w.shape[-1] - n, 0) for n in x.shape[-2:]]
    x = F.pad(x, (total[1] // 2, total[1] - total[1] // 2, total[0] // 2, total[0] - total[0] // 2))
    y = F.conv2d(x, w, b, stride, 0, 1, groups)
    return y.clamp(0, 6) if relu6 else y


@pytest.mark.parametrize("size", [128, 129])
def test_tf_v1_twin_matches_functional_tensorflow_reference(size):
    model = zoo.get_model("mobilenet0_25_tf").eval().double()
    tf = _fold_bn_as_tf(model)
    x = torch.randn(
        1, 3, size, size, dtype=torch.float64, generator=torch.Generator().manual_seed(3)
    )
    ref = _tf_conv(x, *[t.double() if torch.is_tensor(t) else t for t in tf["stem"]])
    for i in range(len(model.blocks)):
        for part in ("dw", "pw"):
            w, b, stride, groups = tf[f"blocks.{i}.{part}"]
            ref = _tf_conv(ref, w.double(), b.double(), stride, groups)
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(x), ref, atol=1e-9, rtol=0)


def test_tf_v2_twin_matches_functional_tensorflow_reference():
    model = zoo.get_model("mobilenetv2_1_0_tf").eval().double()
    tf = {k: (v[0].double(), v[1].double(), *v[2:]) for k, v in _fold_bn_as_tf(model).items()}
    x = torch.randn(1, 3, 97, 97, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    ref = _tf_conv(x, *tf["stem"])
    for i, block in enumerate(model.blocks):
        out = ref
        if f"blocks.{i}.expand" in tf:
            out = _tf_conv(out, *tf[f"blocks.{i}.expand"])
        out = _tf_conv(out, *tf[f"blocks.{i}.dw"])
        out = _tf_conv(out, *tf[f"blocks.{i}.project"], relu6=False)
        ref = out + ref if block.has_shortcut else out
    ref = _tf_conv(ref, *tf["conv_head"])
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(x), ref, atol=1e-9, rtol=0)


def test_tf_twin_folded_bn_is_lossless_in_float32():
    model = zoo.get_model("mobilenet0_25_tf").eval()
    _fold_bn_as_tf(model)
    bn = model.stem.bn
    x = torch.randn(2, bn.num_features, 5, 5)
    with torch.no_grad():
        assert torch.equal(bn(x), x + bn.bias[:, None, None])


# --- the model contract --------------------------------------------------------------------

CONTRACT = [
    # name, features (channels), pre-logits width, feature widths
    ("mobilenet0_25", 256, 256, [16, 32, 64, 128, 256]),
    ("mobilenetv2_0_25", 1280, 1280, [4, 6, 8, 24, 80]),
    ("mobilenetv3_small", 576, 1280, [16, 16, 24, 48, 96]),
    ("mobilenetv3_large", 960, 1280, [16, 24, 40, 112, 160]),
    ("mobilenet0_25_tf", 256, 256, [16, 32, 64, 128, 256]),
]


@pytest.mark.parametrize(("name", "chs", "pre", "widths"), CONTRACT, ids=[c[0] for c in CONTRACT])
def test_model_contract(name, chs, pre, widths):
    model = zoo.get_model(name, num_classes=7).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        features = model.forward_features(x)
        assert features.shape == (2, chs, 2, 2)
        assert model.forward_head(features, pre_logits=True).shape == (2, pre)
        assert model(x).shape == (2, 7)
        model.reset_classifier(10)
        assert model(x).shape == (2, 10)
        assert model.get_classifier().out_features == 10
        model.reset_classifier(0)
        assert model(x).shape == (2, pre)
    assert [f.reduction for f in model.feature_info] == [2, 4, 8, 16, 32]
    assert [f.num_chs for f in model.feature_info] == widths
    outputs = stage_outputs(model, x)
    for info in model.feature_info:  # each named stage really has that width and reduction
        assert outputs[info.module].shape[1:] == (
            info.num_chs,
            64 // info.reduction,
            64 // info.reduction,
        )


@pytest.mark.parametrize(
    "name", ["mobilenet0_25", "mobilenetv2_0_25", "mobilenetv3_small", "mobilenet0_25_tf"]
)
def test_in_chans_and_first_conv(name):
    model = zoo.get_model(name, in_chans=1).eval()
    assert model.get_submodule(model.first_conv).weight.shape[1] == 1
    with torch.no_grad():
        assert model(torch.randn(1, 1, 32, 32)).shape == (1, 1000)


@pytest.mark.parametrize("name", ["mobilenetv2_0_25", "mobilenetv3_small"])
def test_zero_init_last_zeroes_residual_branch_ends_only(name):
    model = zoo.get_model(name, zero_init_last=True)
    residual = [b for b in model.blocks if b.has_shortcut]
    assert residual and len(residual) < len(model.blocks)
    for block in model.blocks:
        expected = 0.0 if block.has_shortcut else 1.0
        assert torch.all(block.project.bn.weight == expected)
        assert torch.all(block.dw.bn.weight == 1)
    plain = zoo.get_model(name)
    assert all(torch.all(b.project.bn.weight == 1) for b in plain.blocks)
    block = residual[0].eval()  # a zeroed residual unit is the identity at init
    x = torch.randn(1, block.project.conv.out_channels, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(block(x), x)


def test_norm_layer_and_bn_eps_options():
    from torchvision.ops import FrozenBatchNorm2d

    model = zoo.get_model("mobilenetv3_small", norm_layer="frozen_batchnorm", bn_eps=1e-3)
    norms = [m for m in model.modules() if isinstance(m, FrozenBatchNorm2d)]
    assert norms and all(m.eps == 1e-3 for m in norms)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())


def test_builds_on_meta_device():
    for name in MOBILENETS:
        spec = get_spec(name)
        with torch.device("meta"):
            model = spec.build(spec.config)
        assert all(p.is_meta for p in model.parameters())


# The twins against TensorFlow's released MobileNets (real TFLite weights, through zoo's converter
# and compared with the TFLite runtime layer by layer): tests/test_tflite.py.
