"""zoo.optimize really optimizes: BN folded, channels_last, same outputs, argument untouched."""

from __future__ import annotations

import pytest
import torch
from conftest import randomize
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

import zoo
from zoo.optimization import OptimizedModel, fold_batchnorm

# The smallest arch of each family, the ResNet deep stem, squeeze-excite's biased convs and both
# TF-padding twins, with an input size each takes quickly; odd sizes for the twins, where SAME
# padding's asymmetric side shows. id -> (arch, config overrides, input size).
CASES = {
    "resnet18_v1": ("resnet18_v1", {}, 32),
    "resnet18_v1b": ("resnet18_v1b", {}, 32),
    "resnet18_v1d": ("resnet18_v1d", {}, 32),
    "resnet18_v1b-se": ("resnet18_v1b", {"se_reduction": 16}, 32),
    "mobilenet0_25": ("mobilenet0_25", {}, 32),
    "mobilenetv2_0_25": ("mobilenetv2_0_25", {}, 32),
    "mobilenetv3_small": ("mobilenetv3_small", {}, 32),
    "inceptionv3": ("inceptionv3", {}, 75),
    "mobilenet0_25_tf": ("mobilenet0_25_tf", {}, 33),
    "mobilenetv2_1_0_tf": ("mobilenetv2_1_0_tf", {}, 35),
}
NORMS = (nn.modules.batchnorm._BatchNorm, FrozenBatchNorm2d)


def _input(size: int, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1))


def realistic(model: nn.Module, x: torch.Tensor, top: float = 10.0) -> nn.Module:
    """Random weights and BN statistics, logits scaled to a trained model's range (|z| <= 10):
    the 1e-4 tolerance is about such logits, and fp32 round-off grows with their size."""
    randomize(model).eval()
    with torch.no_grad():
        scale = top / float(model(x).abs().max())
        classifier = model.get_classifier()
        classifier.weight.mul_(scale)
        if classifier.bias is not None:
            classifier.bias.mul_(scale)
    return model


def _norms(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, NORMS)]


@pytest.mark.parametrize("case", sorted(CASES))
def test_optimize_folds_every_bn_and_keeps_outputs(case):
    arch, overrides, size = CASES[case]
    x = _input(size)
    model = realistic(zoo.get_model(arch, **overrides), x)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x_copy = x.clone()
    with torch.no_grad():
        expected = model(x)

    fast = zoo.optimize(model)

    assert isinstance(fast, OptimizedModel) and not fast.training
    assert _norms(fast) == []  # every BatchNorm folded
    assert len(fast.fold_report.folded) == len(_norms(model))
    convs = [m for m in fast.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    out = fast(x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=0)
    # the argument and the input are untouched
    assert torch.equal(x, x_copy) and x.is_contiguous()
    assert len(_norms(model)) > 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_tf_twin_at_other_sizes_after_optimizing():
    # The probe runs at the weights' crop; SAME padding still follows each input's size.
    model = realistic(zoo.get_model("mobilenet0_25_tf"), _input(33))
    fast = zoo.optimize(model)
    for size in (31, 48, 65):
        x = _input(size, batch=1)
        with torch.no_grad():
            torch.testing.assert_close(fast(x), model(x), atol=1e-4, rtol=0)


def test_frozen_batchnorm_folds():
    x = _input(32)
    model = realistic(zoo.get_model("resnet18_v1d", norm_layer="frozen_batchnorm"), x)
    assert any(isinstance(m, FrozenBatchNorm2d) for m in model.modules())
    fast = zoo.optimize(model)
    assert _norms(fast) == []
    with torch.no_grad():
        torch.testing.assert_close(fast(x), model(x), atol=1e-4, rtol=0)


class _Shortcut(nn.Module):
    """conv -> BN, but the conv output also feeds a shortcut: folding would change the sum."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.bn(y) + y


class _InplaceBetween(nn.Module):
    """conv -> in-place ReLU -> BN: the BN sees the conv's tensor object, changed."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(torch.relu_(self.conv(x)))


@pytest.mark.parametrize("network", [_Shortcut, _InplaceBetween])
def test_a_conv_output_used_elsewhere_keeps_its_bn(network):
    model = randomize(network()).eval()
    x = _input(8)
    with torch.no_grad():
        expected = model(x)
        report = fold_batchnorm(model, x)
        assert report.folded == () and report.kept == ("bn",)
        torch.testing.assert_close(model(x), expected)


def test_shared_and_plain_pairs():
    shared = nn.BatchNorm2d(3)
    model = randomize(nn.Sequential(nn.Conv2d(3, 3, 1), shared, nn.Conv2d(3, 3, 1), shared))
    model.eval()
    x = _input(4)
    with torch.no_grad():
        expected = model(x)
        report = fold_batchnorm(model, x)
        assert report.folded == ()  # one BN run twice cannot be folded into two convs
        plain = randomize(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())).eval()
        reference = plain(x)
        assert fold_batchnorm(plain, x).folded == (("0", "1"),)
        torch.testing.assert_close(plain(x), reference, atol=1e-5, rtol=0)
        torch.testing.assert_close(model(x), expected)


def test_optimized_is_eval_only_and_refuses_bad_input():
    model = zoo.get_model("mobilenet0_25")
    fast = zoo.optimize(model)
    assert model.training  # optimize works on a copy: the argument keeps its mode
    fast.eval()
    with pytest.raises(RuntimeError, match="eval-only"):
        fast.train()
    with pytest.raises(TypeError, match="already optimized"):
        zoo.optimize(fast)
    with pytest.raises(ValueError, match="unsupported dtype 'int8'"):
        zoo.optimize(model, dtype="int8")
    with pytest.raises(TypeError, match="zoo model"):
        zoo.optimize(nn.Sequential(nn.Conv2d(3, 3, 1)))


@pytest.mark.skipif(
    not torch.ops.mkldnn._is_mkldnn_bf16_supported(), reason="no native bf16 on this CPU"
)
def test_bfloat16_autocast_outputs_float32_close_to_fp32():
    x = _input(64, batch=4)
    model = realistic(zoo.get_model("mobilenetv2_0_25"), x)
    with torch.no_grad():
        expected = model(x)
    out = zoo.optimize(model, dtype="bfloat16")(x)
    assert out.dtype == torch.float32
    assert not torch.equal(out, zoo.optimize(model)(x))  # it did run in reduced precision
    scale = expected.abs().max()
    assert (out - expected).abs().max() < 0.05 * scale


def test_predict_optimizes_by_default_with_the_same_result():
    model = randomize(zoo.get_model("mobilenetv2_0_25")).eval()
    image = torch.rand(3, 224, 224)
    fast = zoo.predict(model, image, topk=3)[0]
    eager = zoo.predict(model, image, topk=3, optimize=False)[0]
    assert [p.index for p in fast] == [p.index for p in eager]
    for a, b in zip(fast, eager, strict=True):
        assert a.probability == pytest.approx(b.probability, abs=1e-5)
