"""predict / evaluate plumbing: label names, class folders, label offsets, bad input."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import SHARED
from PIL import Image

import zoo
from zoo.checkpoint import CheckpointMeta, save_checkpoint
from zoo.inference import class_mapping
from zoo.labels import imagenet1k, resolve_labels


def test_packaged_imagenet_labels_match_the_shared_class_index():
    rows = (SHARED / "data/imagenet_class_index/imagenet1k_classes.tsv").read_text().splitlines()
    wnids = [r.split("\t")[1] for r in rows[1:]]
    labels = imagenet1k()
    assert list(labels.wnids) == wnids and len(labels.names) == 1000
    assert labels.names[285] == "Egyptian cat"


def _three_class_model(tmp_path, **meta_kw):
    model = zoo.get_model("resnet18_v1b", num_classes=3).eval()
    with torch.no_grad():  # make class 2 win for every input
        model.fc.weight.zero_()
        model.fc.bias.copy_(torch.tensor([0.0, 1.0, 5.0]))
    meta = CheckpointMeta(arch="resnet18_v1b", config={"num_classes": 3}, **meta_kw)
    path = save_checkpoint(tmp_path / "m.safetensors", model.state_dict(), meta)
    return zoo.get_model("resnet18_v1b", pretrained=path)


def test_predict_uses_the_weights_names(tmp_path):
    model = _three_class_model(tmp_path, labels=("cat", "dog", "fish"))
    image = tmp_path / "x.png"
    Image.new("RGB", (80, 60), "red").save(image)
    (ranked,) = zoo.predict(model, [image], topk=2)
    assert [(p.rank, p.index, p.label) for p in ranked] == [(1, 2, "fish"), (2, 1, "dog")]
    assert ranked[0].probability > 0.9 and ranked[0].image == str(image)
    tensor_input = zoo.predict(model, torch.zeros(3, 50, 70, dtype=torch.uint8), topk=1)
    assert tensor_input[0][0].label == "fish"


def test_predict_drops_background_rows(tmp_path):
    model = _three_class_model(tmp_path, labels=("a", "b"), label_offset=1)
    # num_classes=3 kept explicitly: the background row stays in the logits
    model = zoo.get_model("resnet18_v1b", pretrained=tmp_path / "m.safetensors", num_classes=3)
    (ranked,) = zoo.predict(model, torch.zeros(3, 40, 40, dtype=torch.uint8), topk=2)
    assert [p.label for p in ranked] == ["b", "a"]


def test_predict_skips_and_counts_bad_inputs(tmp_path):
    """One bad file does not sink the batch: the others are ranked, each failure is named."""
    model = _three_class_model(tmp_path, labels=("cat", "dog", "fish"))
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    good = tmp_path / "good.png"
    Image.new("RGB", (40, 40), (200, 10, 10)).save(good)
    cut = tmp_path / "cut.png"
    cut.write_bytes(good.read_bytes()[:60])  # a truncated PNG
    inputs = [tmp_path / "missing.jpg", good, tmp_path / "bad.jpg", tmp_path, cut, good]
    results = zoo.predict(model, inputs, topk=1, optimize=False)
    alone = zoo.predict(model, [good], topk=1, optimize=False)
    assert [r[0].image for r in results] == [str(good), str(good)]
    assert results[0] == alone[0]  # the bad ones change nothing about the good ones
    reasons = {f.item: f.reason for f in results.failures}
    assert list(reasons) == [str(inputs[0]), str(inputs[2]), str(tmp_path), str(cut)]
    assert "image not found" in reasons[str(inputs[0])]
    assert "not a readable image" in reasons[str(inputs[2])]
    assert "is a folder" in reasons[str(tmp_path)] and "zoo eval" in reasons[str(tmp_path)]
    nothing = zoo.predict(model, [tmp_path / "bad.jpg"])
    assert list(nothing) == [] and len(nothing.failures) == 1


def test_cli_predict_reports_each_failure_and_exits_non_zero(tmp_path, capsys):
    from zoo.cli import main as cli

    _three_class_model(tmp_path, labels=("cat", "dog", "fish"))
    weights = tmp_path / "m.safetensors"
    good = tmp_path / "good.png"
    Image.new("RGB", (40, 40)).save(good)
    (tmp_path / "bad.jpg").write_bytes(b"<html>")
    argv = ["predict", str(good), str(tmp_path / "bad.jpg"), "--model", "resnet18_v1b",
            "--no-optimize"]  # fmt: skip
    assert cli([*argv, "--pretrained", str(weights), "--json"]) == 1
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert [r[0]["image"] for r in out["predictions"]] == [str(good)]
    assert out["failures"][0]["item"] == str(tmp_path / "bad.jpg")
    assert "skipped" in captured.err and "1 of 2 input(s)" in captured.err
    assert "Traceback" not in captured.err


def test_class_folders_map_by_wnid_or_name():
    labels = imagenet1k()
    assert class_mapping(["n01440764", "n02102040"], labels) == [0, 217]
    assert class_mapping(["cat", "fish"], resolve_labels(("cat", "dog", "fish"))) == [0, 2]
    with pytest.raises(ValueError, match="not in the model's label set: n99999999"):
        class_mapping(["n99999999"], labels)
    with pytest.raises(ValueError, match="carry no class names"):
        class_mapping(["n01440764"], None)


def test_evaluate_on_named_folders(tmp_path):
    model = _three_class_model(tmp_path, labels=("cat", "dog", "fish"))
    for name in ("dog", "fish"):
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (40, 40)).save(tmp_path / "data" / name / f"{i}.png")
    result = zoo.evaluate(model, tmp_path / "data", workers=0, progress=False, limit_per_class=2)
    assert result.images == 4 and result.classes == 2
    assert result.top1 == 50.0 and result.top1_restricted == 50.0  # always says "fish"
    assert result.right == (False, False, True, True)  # dog, dog, fish, fish
    with pytest.raises(FileNotFoundError, match="data folder not found"):
        zoo.evaluate(model, tmp_path / "nope")
    with pytest.raises(ValueError, match="limit_per_class must be >= 1"):
        zoo.evaluate(model, tmp_path / "data", limit_per_class=0)


def test_evaluate_skips_unreadable_files(tmp_path):
    model = _three_class_model(tmp_path, labels=("cat", "dog", "fish"))
    for name in ("dog", "fish"):
        (tmp_path / "data" / name).mkdir(parents=True)
        Image.new("RGB", (40, 40)).save(tmp_path / "data" / name / "0.png")
    (tmp_path / "data" / "dog" / "1.jpg").write_bytes(b"<html>not found</html>")
    result = zoo.evaluate(
        model, tmp_path / "data", workers=0, progress=False, batch_size=2, optimize=False
    )
    assert result.images == 2 and result.top1 == 50.0
    assert [f.item for f in result.failures] == [str(tmp_path / "data" / "dog" / "1.jpg")]
    for path in (tmp_path / "data").rglob("0.png"):
        path.write_bytes(b"")
    with pytest.raises(ValueError, match=r"no image .* could be read \(3 skipped\)"):
        zoo.evaluate(model, tmp_path / "data", workers=0, progress=False, optimize=False)
