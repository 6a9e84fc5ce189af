"""zoo.save_model: the model owns its config; save -> get_model(path) gives identical outputs.

Every family's smallest arch, after num_classes / in_chans / reset_classifier / background-row
changes; labels (ids and display names) and preprocessing travel; the refusals are clear.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from conftest import randomize
from PIL import Image
from torch import nn

import zoo
from zoo.checkpoint import CheckpointError, read_meta
from zoo.factory import PretrainedNotFoundError
from zoo.registry import get_spec

# The smallest arch of each family, a TF-padding twin, and an input size each accepts quickly.
SMALLEST = {
    "resnet18_v1b": 32,
    "mobilenet0_25": 32,
    "mobilenetv2_0_25": 32,
    "mobilenetv3_small": 32,
    "mobilenet0_25_tf": 33,  # odd: SAME padding's asymmetric side shows
    "inceptionv3": 75,  # the smallest input its valid convs and pools take
}


def _outputs(model: nn.Module, size: int, seed: int = 0) -> torch.Tensor:
    x = torch.randn(
        2, model.config.in_chans, size, size, generator=torch.Generator().manual_seed(seed)
    )
    with torch.no_grad():
        return model.eval()(x)


def _reloaded(model: nn.Module, path: Path, **kw) -> nn.Module:
    saved = zoo.save_model(model, path)
    assert saved == path and path.is_file()
    assert [p.name for p in path.parent.iterdir() if "incomplete" in p.name] == []
    return zoo.get_model(model.pretrained_cfg.arch, pretrained=path, **kw)


def _assert_same(model: nn.Module, again: nn.Module, size: int) -> None:
    assert again.config == model.config
    cfg, cfg_again = model.pretrained_cfg, again.pretrained_cfg
    assert dataclasses.replace(cfg_again, weights=cfg.weights) == cfg
    assert torch.equal(_outputs(again, size), _outputs(model, size))


@pytest.mark.parametrize("arch", sorted(SMALLEST))
def test_changed_model_round_trips_exactly(arch, tmp_path):
    """num_classes=10 and in_chans=1 on trained-looking weights, then save -> reload."""
    size = SMALLEST[arch]
    base = randomize(zoo.get_model(arch))
    base_path = zoo.save_model(base, tmp_path / "base.safetensors", labels="imagenet-1k")
    model = zoo.get_model(arch, pretrained=base_path, num_classes=10, in_chans=1)
    assert model.config == dataclasses.replace(base.config, num_classes=10, in_chans=1)
    cfg = model.pretrained_cfg
    assert cfg.labels is None and cfg.label_offset == 0  # the new head's classes have no names
    pre = base.pretrained_cfg.preprocess
    assert cfg.preprocess.mean == (pytest.approx(sum(pre.mean) / 3),)
    assert cfg.preprocess.input_size == (1, pre.crop, pre.crop)
    again = _reloaded(model, tmp_path / "changed.safetensors")
    _assert_same(model, again, size)
    assert read_meta(tmp_path / "changed.safetensors").labels is None


@pytest.mark.parametrize("arch", ["mobilenet0_25", "mobilenetv3_small"])
def test_reset_classifier_and_adapt_input_conv_update_config(arch, tmp_path):
    base = randomize(zoo.get_model(arch))
    base_path = zoo.save_model(base, tmp_path / "base.safetensors", labels="imagenet-1k")
    model = zoo.get_model(arch, pretrained=base_path)
    assert model.pretrained_cfg.labels == "imagenet-1k"
    model.reset_classifier(4)
    model.adapt_input_conv(2)
    assert (model.config.num_classes, model.config.in_chans, model.num_classes) == (4, 2, 4)
    assert model.pretrained_cfg.labels is None
    assert model.get_classifier().bias is not None  # MobileNet v1's biased head, as built
    # channel i reads old channel i's filter (rescaled), so it gets old channel i's statistics
    assert model.pretrained_cfg.preprocess.mean == base.pretrained_cfg.preprocess.mean[:2]
    _assert_same(model, _reloaded(model, tmp_path / "reset.safetensors"), 32)


def test_v2_bias_free_classifier_survives_reset(tmp_path):
    model = zoo.get_model("mobilenetv2_0_25")
    model.reset_classifier(3)
    assert model.fc.bias is None and model.config.num_classes == 3
    model.reset_classifier(0)
    assert isinstance(model.fc, nn.Identity) and _outputs(model, 32).shape == (2, 1280)
    _assert_same(model, _reloaded(model, tmp_path / "features.safetensors"), 32)


def test_background_row_dropped_or_kept_round_trips(tmp_path):
    """A TensorFlow-style 1001-way file: labels survive dropping the background row."""
    tf = randomize(zoo.get_model("mobilenet0_25_tf", num_classes=1001))
    tf.pretrained_cfg = dataclasses.replace(tf.pretrained_cfg, labels="imagenet-1k", label_offset=1)
    path = zoo.save_model(tf, tmp_path / "tf.safetensors")
    assert read_meta(path).label_offset == 1

    dropped = zoo.get_model("mobilenet0_25_tf", pretrained=path)
    assert dropped.config.num_classes == 1000 and dropped.pretrained_cfg.label_offset == 0
    assert dropped.pretrained_cfg.labels == "imagenet-1k"
    assert torch.equal(_outputs(dropped, 33), _outputs(tf, 33)[:, 1:])
    _assert_same(dropped, _reloaded(dropped, tmp_path / "dropped.safetensors"), 33)

    kept = zoo.get_model("mobilenet0_25_tf", pretrained=path, num_classes=1001)
    assert kept.pretrained_cfg.label_offset == 1
    again = _reloaded(kept, tmp_path / "kept.safetensors", num_classes=1001)
    _assert_same(kept, again, 33)


def test_drop_leading_classes_beyond_the_offset_forgets_labels():
    model = zoo.get_model("resnet18_v1b", num_classes=5)
    model.pretrained_cfg = dataclasses.replace(
        model.pretrained_cfg, labels=("a", "b", "c", "d"), label_offset=1
    )
    weight = model.fc.weight.detach().clone()
    model.drop_leading_classes(2)
    assert model.config.num_classes == 3 and torch.equal(model.fc.weight, weight[2:])
    assert model.pretrained_cfg.labels is None and model.pretrained_cfg.label_offset == 0


def test_frozen_batchnorm_and_config_options_round_trip(tmp_path):
    model = randomize(
        zoo.get_model("resnet18_v1d", norm_layer="frozen_batchnorm", bn_eps=1e-3, drop_rate=0.1)
    )
    path = zoo.save_model(model, tmp_path / "frozen.safetensors", source="test run 7")
    meta = read_meta(path)
    assert meta.config == {"norm_layer": "frozen_batchnorm", "bn_eps": 1e-3, "drop_rate": 0.1}
    assert meta.source == "test run 7"
    again = zoo.get_model("resnet18_v1d", pretrained=path)
    assert type(again.bn1).__name__ == "FrozenBatchNorm2d"
    _assert_same(model, again, 32)


def test_callable_norm_layer_is_refused_not_dropped(tmp_path):
    model = zoo.get_model("resnet18_v1b", norm_layer=lambda c, eps: nn.BatchNorm2d(c, eps=eps))
    with pytest.raises(ValueError, match="cannot save norm_layer=.*norm_layer='frozen_batchnorm'"):
        zoo.save_model(model, tmp_path / "x.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_label_ids_and_display_names_travel(tmp_path):
    model = zoo.get_model("resnet18_v1b", num_classes=3)
    with torch.no_grad():  # class 2 wins on every input
        model.fc.weight.zero_()
        model.fc.bias.copy_(torch.tensor([0.0, 1.0, 5.0]))
    ids, names = ["n01440764", "n02102040", "n02979186"], ["tench", "springer", "cassette"]
    path = zoo.save_model(model, tmp_path / "m.safetensors", labels=ids, label_names=names)
    again = zoo.get_model("resnet18_v1b", pretrained=path)
    assert again.pretrained_cfg.labels == tuple(ids)
    assert again.pretrained_cfg.label_names == tuple(names)
    (ranked,) = zoo.predict(again, torch.zeros(3, 40, 40, dtype=torch.uint8), topk=1)
    assert ranked[0].label == "cassette"
    # evaluate matches folders by id: ImageFolder sorts them, the model's order differs here
    for wnid in ("n02979186", "n01440764"):
        (tmp_path / "val" / wnid).mkdir(parents=True)
        Image.new("RGB", (40, 40), "gray").save(tmp_path / "val" / wnid / "a.png")
    result = zoo.evaluate(again, tmp_path / "val", workers=0, progress=False)
    assert result.class_indices == (0, 2) and result.top1 == 50.0
    # default labels are the model's own: saving again keeps ids and names
    assert read_meta(zoo.save_model(again, tmp_path / "m2.safetensors")).label_names == tuple(names)


def test_one_channel_model_predicts_from_rgb_images(tmp_path):
    model = zoo.get_model("mobilenet0_25", num_classes=2, in_chans=1)
    path = zoo.save_model(model, tmp_path / "gray.safetensors", labels=["dark", "light"])
    again = zoo.get_model("mobilenet0_25", pretrained=path)
    image = tmp_path / "x.png"
    Image.new("RGB", (300, 260), "red").save(image)
    transformed = zoo.get_transforms(again)(Image.open(image).convert("RGB"))
    assert transformed.shape == (1, 224, 224)
    (ranked,) = zoo.predict(again, image, topk=2)
    assert {p.label for p in ranked} == {"dark", "light"}


def test_bad_labels_and_preprocess_are_refused(tmp_path):
    model = zoo.get_model("resnet18_v1b", num_classes=3)
    out = tmp_path / "x.safetensors"
    cases = [
        ({"labels": ["a", "b"]}, "give 3 class ids"),
        ({"labels": ["a", "a", "b"]}, "unique"),
        ({"labels": ["a", "b", "c"], "label_names": ["x"]}, "label_names: give 3 names"),
        ({"labels": None, "label_names": ["x", "y", "z"]}, "label_names need labels"),
        ({"labels": "imagenet-1k"}, "has 1000 classes, the model 3"),
        ({"labels": "imagenet-21k"}, "unknown label set"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            zoo.save_model(model, out, **kwargs)
    gray = dataclasses.replace(model.pretrained_cfg.preprocess, mean=(0.5,), std=(0.5,))
    with pytest.raises(ValueError, match="1 mean/std values, the model reads 3 channels"):
        zoo.save_model(model, out, preprocess=gray)
    with pytest.raises(ValueError, match="end in .safetensors"):
        zoo.save_model(model, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="no pretrained_cfg"):
        zoo.save_model(get_spec("resnet18_v1b").build(model.config), out)
    assert not out.exists()


def test_a_head_replaced_by_hand_is_refused(tmp_path):
    model = zoo.get_model("resnet18_v1b")
    model.fc = nn.Linear(512, 7)  # bypasses reset_classifier: model.config still says 1000
    with pytest.raises(ValueError, match=r"no longer matches model.config \(wrong shape: fc.bias"):
        zoo.save_model(model, tmp_path / "x.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_wrapped_models_are_unwrapped(tmp_path):
    model = zoo.get_model("mobilenet0_25", num_classes=3)
    path = zoo.save_model(nn.DataParallel(model), tmp_path / "dp.safetensors")
    _assert_same(model, zoo.get_model("mobilenet0_25", pretrained=path), 32)
    with pytest.raises(TypeError, match="not a zoo model"):
        zoo.save_model(nn.Linear(2, 2), tmp_path / "x.safetensors")


# --- pretrained= paths ---------------------------------------------------------------------------


def test_an_existing_file_is_a_path_whatever_its_name(tmp_path, monkeypatch):
    model = zoo.get_model("resnet18_v1b", num_classes=3)
    zoo.save_model(model, tmp_path / "r18.safetensors")
    (tmp_path / "r18.safetensors").rename(tmp_path / "r18.pt")
    monkeypatch.chdir(tmp_path)
    again = zoo.get_model("resnet18_v1b", pretrained="r18.pt")
    assert again.pretrained_cfg.weights == "r18.pt"
    _assert_same(model, again, 32)


def test_foreign_checkpoint_says_how_to_convert(tmp_path):
    pth = tmp_path / "r18.pth"
    torch.save(zoo.get_model("resnet18_v1b").state_dict(), pth)
    with pytest.raises(CheckpointError, match=r"not a safetensors file") as err:
        zoo.get_model("resnet18_v1b", pretrained=str(pth))
    assert f"zoo convert {pth} --model resnet18_v1b -o {tmp_path / 'r18.safetensors'}" in str(
        err.value
    )


def test_neither_file_nor_tag_says_both(tmp_path):
    missing = tmp_path / "r18.pth"
    with pytest.raises(PretrainedNotFoundError) as err:
        zoo.get_model("resnet18_v1b", pretrained=str(missing))
    text = str(err.value)
    assert "neither an existing file" in text and str(missing) in text
    assert f"no weights tagged '{missing}'" in text and "tags: " in text
    assert "zoo convert" in text  # a .pth must be converted first
    assert isinstance(err.value, FileNotFoundError) and isinstance(err.value, LookupError)
    with pytest.raises(LookupError, match="neither an existing file.*no weights tagged 'nope'"):
        zoo.get_model("resnet18_v1b", pretrained="nope")
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        zoo.get_model("resnet18_v1b", pretrained=missing)  # a Path is always a path
    with pytest.raises(TypeError, match="pretrained must be"):
        zoo.get_model("resnet18_v1b", pretrained=3)
