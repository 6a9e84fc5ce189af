"""features_only, output_stride and torch.fx for every family (issue 11, parts 1-2).

The smallest model of each family; sizes are odd on purpose (SAME and ceil-mode padding differ
from floor arithmetic there).
"""

from __future__ import annotations

import logging
import math

import pytest
import torch
from conftest import randomize, stage_outputs
from torchvision.models.feature_extraction import create_feature_extractor

import zoo

PADDED = ["resnet18_v1d", "mobilenet0_25", "mobilenetv2_0_25", "mobilenetv3_small"]
TF = ["mobilenet0_25_tf"]
SMALLEST = [*PADDED, *TF, "inceptionv3"]


def _shapes(features: list[torch.Tensor]) -> list[tuple[int, ...]]:
    return [tuple(f.shape[1:]) for f in features]


@pytest.mark.parametrize("arch", PADDED + TF)
@pytest.mark.parametrize("output_stride", [32, 16, 8])
def test_feature_shapes_are_ceil_of_size_over_reduction(arch, output_stride):
    model = zoo.get_model(arch, features_only=True, output_stride=output_stride).eval()
    reductions = [f.reduction for f in model.feature_info]
    assert reductions == [min(2**i, output_stride) for i in range(1, 6)]
    for h, w in [(97, 131), (64, 65)]:
        with torch.no_grad():
            shapes = _shapes(model(torch.randn(1, 3, h, w)))
        expected = [
            (f.num_chs, math.ceil(h / f.reduction), math.ceil(w / f.reduction))
            for f in model.feature_info
        ]
        assert shapes == expected, (h, w)


def test_resnet50_v1d_output_stride_8_at_225():
    model = zoo.get_model(
        "resnet50_v1d", features_only=True, out_indices=(1, 2, 3, 4), output_stride=8
    ).eval()
    with torch.no_grad():
        shapes = _shapes(model(torch.randn(1, 3, 225, 225)))
    assert shapes == [(256, 57, 57), (512, 29, 29), (1024, 29, 29), (2048, 29, 29)]


def test_inception_sizes_are_its_own_and_it_cannot_dilate():
    model = zoo.get_model("inceptionv3", features_only=True).eval()
    # 299: torchvision's and GluonCV's documented 147, 71, 35, 17, 8 grids.
    assert model.feature_sizes(299) == (147, 71, 35, 17, 8)
    with torch.no_grad():
        shapes = _shapes(model(torch.randn(1, 3, 107, 100)))
    assert [s[1] for s in shapes] == list(model.feature_sizes(107)) == [51, 23, 11, 5, 2]
    assert [s[2] for s in shapes] == list(model.feature_sizes(100)) == [47, 21, 10, 4, 1]
    assert [s[0] for s in shapes] == [f.num_chs for f in model.feature_info]
    with pytest.raises(ValueError, match="inceptionv3 cannot dilate.*output_stride=32"):
        zoo.get_model("inceptionv3", features_only=True, output_stride=16)


@pytest.mark.parametrize("arch", SMALLEST)
def test_features_equal_the_classifiers_stage_outputs(arch):
    """Index i is the stage at stride 2**(i+1); the maps are the full network's own."""
    full = randomize(zoo.get_model(arch)).eval()
    features = zoo.get_model(arch, features_only=True, out_indices=(0, 2, 4)).eval()
    features.load_state_dict(
        {k: v for k, v in full.state_dict().items() if k in features.state_dict()}
    )
    x = torch.randn(1, 3, 99, 99)
    with torch.no_grad():
        reference = stage_outputs(full, x)
        got = features(x)
    assert [f.module for f in features.feature_info] == [
        full.feature_info[i].module for i in (0, 2, 4)
    ]
    for info, tensor in zip(features.feature_info, got, strict=True):
        torch.testing.assert_close(tensor, reference[info.module])


def test_features_only_drops_the_head_and_unused_stages():
    model = zoo.get_model("resnet18_v1d", features_only=True, out_indices=(1, 2))
    keys = model.state_dict().keys()
    assert not any(k.startswith(("fc.", "layer3.", "layer4.")) for k in keys)
    v2 = zoo.get_model("mobilenetv2_0_25", features_only=True, out_indices=(0, 1))
    assert len(v2.blocks) == 3 and not hasattr(v2, "conv_head")  # blocks.0-2: up to stride 4


@pytest.mark.parametrize("arch", ["resnet18_v1d", "mobilenetv3_small", "mobilenet0_25_tf"])
def test_features_only_with_a_pretrained_file_loads_every_backbone_tensor(arch, tmp_path, caplog):
    source = randomize(zoo.get_model(arch, num_classes=7))
    path = zoo.save_model(source, tmp_path / "w.safetensors")
    with caplog.at_level(logging.INFO, logger="zoo"):
        features = zoo.get_model(arch, pretrained=path, features_only=True)
    expected = source.state_dict()
    state = features.state_dict()
    assert len(state) > 0.9 * (len(expected) - 2)
    for key, tensor in state.items():
        torch.testing.assert_close(tensor, expected[key], rtol=0, atol=0, msg=key)
    (record,) = [r for r in caplog.records if "features_only" in r.getMessage()]
    assert f"{len(state)} of the {len(expected)} tensors loaded" in record.getMessage()


def test_bad_feature_arguments_are_refused():
    with pytest.raises(ValueError, match=r"out_indices must be stage indices in 0..4"):
        zoo.get_model("resnet18_v1d", features_only=True, out_indices=(1, 5))
    with pytest.raises(ValueError, match="increasing"):
        zoo.get_model("resnet18_v1d", features_only=True, out_indices=(2, 1))
    with pytest.raises(ValueError, match="needs features_only=True"):
        zoo.get_model("resnet18_v1d", out_indices=(1,))
    with pytest.raises(ValueError, match="output_stride must be 8, 16 or 32"):
        zoo.get_model("mobilenet0_25", output_stride=4)


@pytest.mark.parametrize("arch", SMALLEST)
def test_every_family_traces_and_create_feature_extractor_works(arch):
    model = randomize(zoo.get_model(arch)).eval()
    traced = torch.fx.symbolic_trace(model)
    x = torch.randn(1, 3, 97, 101)
    with torch.no_grad():
        torch.testing.assert_close(traced(x), model(x))
        nodes = {f.module: str(i) for i, f in enumerate(model.feature_info)}
        extracted = create_feature_extractor(model, nodes)(x)
        reference = stage_outputs(model, x)
    for module, key in nodes.items():
        torch.testing.assert_close(extracted[key], reference[module])


def test_traced_tf_twin_keeps_size_dependent_same_padding():
    model = randomize(zoo.get_model("mobilenet0_25_tf", output_stride=16)).eval()
    traced = torch.fx.symbolic_trace(model)
    assert any(getattr(n.target, "__name__", "") == "pad_same" for n in traced.graph.nodes)
    features = zoo.get_model("mobilenet0_25_tf", features_only=True).eval()
    traced_features = torch.fx.symbolic_trace(features)
    with torch.no_grad():
        for h, w in [(97, 101), (64, 64), (33, 50)]:  # one trace, odd and even sizes
            x = torch.randn(1, 3, h, w)
            torch.testing.assert_close(traced(x), model(x))
            for a, b in zip(traced_features(x), features(x), strict=True):
                torch.testing.assert_close(a, b)
