"""zoo.detection / zoo.segmentation adapters onto torchvision's heads (issue 11, part 4)."""

from __future__ import annotations

import pytest
import torch
from conftest import randomize

import zoo
from zoo import detection, segmentation


def _targets(n: int) -> list[dict[str, torch.Tensor]]:
    boxes = torch.tensor([[4.0, 6.0, 50.0, 60.0], [30.0, 10.0, 90.0, 70.0]])
    return [{"boxes": boxes, "labels": torch.tensor([1, 2])} for _ in range(n)]


def test_fasterrcnn_fpn_on_a_mobilenet_trains_and_predicts(tmp_path):
    source = randomize(zoo.get_model("mobilenet0_25_tf"))
    path = zoo.save_model(source, tmp_path / "backbone.safetensors")
    model = detection.fasterrcnn(
        "mobilenet0_25_tf", num_classes=3, pretrained_backbone=path, min_size=96, max_size=128
    )
    body = model.backbone.body
    assert [f.num_chs for f in body.feature_info] == [32, 64, 128, 256]
    assert model.transform.image_mean == [0.5] * 3  # the _tf weights' own normalisation
    # trainable_layers=3: the stem and the stride-4 stage are frozen, their BN too.
    assert (
        not body.stem.conv.weight.requires_grad and not body.blocks[2].pw.conv.weight.requires_grad
    )
    assert body.blocks[3].dw.conv.weight.requires_grad
    for key, value in body.state_dict().items():  # pretrained_backbone loaded
        torch.testing.assert_close(value, source.state_dict()[key], rtol=0, atol=0)
    images = [torch.rand(3, 96, 112), torch.rand(3, 101, 96)]
    model.train()
    losses = model(images, _targets(2))
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    sum(losses.values()).backward()
    model.eval()
    with torch.no_grad():
        (out, _) = model(images)
    assert set(out) == {"boxes", "labels", "scores"}


def test_fasterrcnn_without_fpn_and_bad_arguments():
    model = detection.fasterrcnn(
        "mobilenetv2_0_25", num_classes=2, fpn=False, trainable_layers=5, min_size=64, max_size=64
    ).train()
    assert all(p.requires_grad for p in model.backbone.parameters())
    target = {"boxes": torch.tensor([[2.0, 2.0, 40.0, 50.0]]), "labels": torch.tensor([1])}
    losses = model([torch.rand(3, 64, 64)], [target])
    assert torch.isfinite(sum(losses.values()))
    with pytest.raises(ValueError, match="includes the background"):
        detection.fasterrcnn("mobilenetv2_0_25", num_classes=1)
    with pytest.raises(ValueError, match="trainable_layers must be in 0..5"):
        detection.fasterrcnn("mobilenetv2_0_25", num_classes=3, trainable_layers=6)


@pytest.mark.parametrize("build", [segmentation.fcn, segmentation.deeplabv3])
def test_segmentation_heads_on_a_dilated_backbone_output_the_input_size(build):
    model = build("mobilenetv2_0_25", num_classes=21, aux_loss=True).eval()
    body = model.backbone.body
    assert [f.reduction for f in body.feature_info] == [8, 8]  # output_stride 8
    x = torch.randn(2, 3, 65, 77)
    with torch.no_grad():
        out = model(x)
    assert out["out"].shape == (2, 21, 65, 77) and out["aux"].shape == (2, 21, 65, 77)
    features = body(x)
    assert [tuple(f.shape[-2:]) for f in features] == [(9, 10), (9, 10)]  # ceil(65/8), ceil(77/8)


def test_segmentation_without_aux_and_inception_refused():
    model = segmentation.fcn("resnet18_v1d", num_classes=5, output_stride=16).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 50, 50))
    assert set(out) == {"out"} and out["out"].shape == (1, 5, 50, 50)
    with pytest.raises(ValueError, match="inceptionv3 cannot dilate"):
        segmentation.fcn("inceptionv3", num_classes=5)
