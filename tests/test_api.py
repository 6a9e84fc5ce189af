"""Public API: names, overrides, zoo checkpoints, torch.hub, CLI, and their error messages."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, gluon_fixture

import zoo
import zoo.registry
from zoo.checkpoint import CheckpointMeta, read_meta, save_checkpoint
from zoo.cli import main as cli
from zoo.preprocess import Preprocess


def test_list_models_patterns_and_canonical_names():
    names = zoo.list_models()
    assert all(n.isidentifier() and n == n.lower() for n in names)
    assert zoo.list_models("resnet50_v1?") == [
        "resnet50_v1b", "resnet50_v1c", "resnet50_v1d", "resnet50_v1e", "resnet50_v1s",
    ]  # fmt: skip
    assert zoo.list_models(["resnet18_v1", "resnext101_*"]) == [
        "resnet18_v1", "resnext101_32x4d", "resnext101_64x4d",
    ]  # fmt: skip
    assert zoo.list_models("no_such_*") == []


def test_unknown_model_suggests_close_names():
    with pytest.raises(KeyError, match=r"unknown model 'resnet50_v1x'.*resnet50_v1"):
        zoo.get_model("resnet50_v1x")
    with pytest.raises(KeyError, match="resnet50d"):  # timm spelling -> zoo names offered
        zoo.get_model("resnet50d")


def test_unknown_and_mistyped_overrides_list_valid_options():
    with pytest.raises(TypeError, match=r"'zero_init_lst' \(did you mean 'zero_init_last'\?\)"):
        zoo.get_model("resnet18_v1b", zero_init_lst=True)
    with pytest.raises(TypeError, match="valid: .*avg_down"):
        zoo.get_model("resnet18_v1b", nonsense=1)
    with pytest.raises(TypeError, match="expects int"):
        zoo.get_model("resnet18_v1b", num_classes="10")
    with pytest.raises(ValueError, match="output_stride"):
        zoo.get_model("resnet18_v1b", output_stride=12)
    with pytest.raises(ValueError, match="norm_layer"):
        zoo.get_model("resnet18_v1b", norm_layer="groupnorm")


def test_model_info_is_computed():
    info = zoo.model_info("resnet50_v1d")
    assert info.num_params == sum(p.numel() for p in zoo.get_model("resnet50_v1d").parameters())
    assert info.config.avg_down and info.config.stem_width == 32
    assert "ResNet-50" in info.description and "ResNet-D" in info.description


def _save_zoo_file(tmp_path, name="resnet18_v1b", **model_kw):
    model = zoo.get_model(name, **model_kw).eval()
    meta = CheckpointMeta(
        arch=name,
        config={k: v for k, v in model_kw.items()},
        labels=("cat", "dog", "fish") if model_kw.get("num_classes") == 3 else None,
        preprocess=Preprocess(crop=160, resize=182),
    )
    path = save_checkpoint(tmp_path / f"{name}.safetensors", model.state_dict(), meta)
    return model, path


def test_pretrained_path_roundtrip_and_metadata(tmp_path):
    reference, path = _save_zoo_file(tmp_path, num_classes=3)
    model = zoo.get_model("resnet18_v1b", pretrained=str(path)).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x))
    cfg = model.pretrained_cfg
    assert cfg.arch == "resnet18_v1b" and cfg.weights == str(path)
    assert cfg.labels == ("cat", "dog", "fish") and model.config.num_classes == 3
    assert cfg.preprocess.crop == 160
    assert all(not t.is_meta for t in model.state_dict().values())
    assert read_meta(path).config == {"num_classes": 3}


def test_pretrained_new_num_classes_reinitialises_only_the_head(tmp_path, caplog):
    reference, path = _save_zoo_file(tmp_path)
    model = zoo.get_model("resnet18_v1b", pretrained=path, num_classes=5)
    assert model.fc.out_features == 5 and "re-initialised for 5 classes" in caplog.text
    torch.testing.assert_close(model.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)
    assert model.pretrained_cfg.labels is None


def test_pretrained_in_chans_adapts_first_conv(tmp_path):
    reference, path = _save_zoo_file(tmp_path, name="resnet18_v1d")
    model = zoo.get_model("resnet18_v1d", pretrained=path, in_chans=1).eval()
    torch.testing.assert_close(
        model.conv1[0].weight, reference.conv1[0].weight.sum(1, keepdim=True)
    )
    assert model(torch.randn(1, 1, 32, 32)).shape == (1, 1000)


def test_label_offset_drops_background_row(tmp_path):
    model = zoo.get_model("resnet18_v1b", num_classes=1001)
    meta = CheckpointMeta(arch="resnet18_v1b", config={"num_classes": 1001}, label_offset=1)
    path = save_checkpoint(tmp_path / "tf.safetensors", model.state_dict(), meta)
    default = zoo.get_model("resnet18_v1b", pretrained=path)
    assert default.fc.out_features == 1000 and default.pretrained_cfg.label_offset == 0
    torch.testing.assert_close(default.fc.weight, model.fc.weight[1:])
    kept = zoo.get_model("resnet18_v1b", pretrained=path, num_classes=1001)
    assert kept.fc.out_features == 1001 and kept.pretrained_cfg.label_offset == 1


def test_pretrained_wrong_arch_says_which(tmp_path):
    _, path = _save_zoo_file(tmp_path)
    with pytest.raises(ValueError, match="holds weights for 'resnet18_v1b', not 'resnet18_v1d'"):
        zoo.get_model("resnet18_v1d", pretrained=path)


def test_pretrained_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        zoo.get_model("resnet18_v1b", pretrained=str(tmp_path / "missing.safetensors"))
    _, path = _save_zoo_file(tmp_path)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(path.read_bytes()[:100_000])
    with pytest.raises(ValueError, match="re-download or re-convert"):
        zoo.get_model("resnet18_v1b", pretrained=truncated)
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(1)}, str(foreign))
    with pytest.raises(ValueError, match="not a zoo-layout file.*zoo convert"):
        zoo.get_model("resnet18_v1b", pretrained=foreign)


def test_pretrained_tag_without_weights_is_clear():
    with pytest.raises(LookupError, match="no pretrained weights for resnet18_v1c"):
        zoo.get_model("resnet18_v1c", pretrained=True)


def test_aliases_resolve_to_canonical(tmp_path):
    _, path = _save_zoo_file(tmp_path)
    model = zoo.get_model("ResNet18_V1B", pretrained=path)
    assert model.pretrained_cfg.arch == "resnet18_v1b"


def test_torch_hub_load_local():
    model = torch.hub.load(str(ROOT), "resnet50_v1d", source="local", pretrained=False)
    assert model.conv1[0].out_channels == 32 and model.pretrained_cfg.arch == "resnet50_v1d"
    spec = importlib.util.spec_from_file_location("hubconf", ROOT / "hubconf.py")
    hubconf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hubconf)
    assert "ResNet-50 (deep stem 32-32-64; average-pool shortcut" in hubconf.resnet50_v1d.__doc__
    assert set(zoo.list_models()) <= set(dir(hubconf))


def test_cli_list_info_convert(tmp_path, capsys):
    assert cli(["list", "resnet50_v1*", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [m["name"] for m in listed][:2] == ["resnet50_v1", "resnet50_v1b"]
    assert cli(["info", "resnet50_v1d"]) == 0
    assert "25,576,264" in capsys.readouterr().out  # GluonCV's count, computed
    params, ref = gluon_fixture("resnet18_v1b")
    out = tmp_path / "r18.safetensors"
    assert cli(["convert", str(params), "--model", "resnet18_v1b", "-o", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["source_format"] == "gluoncv" and report["mapped"] == 102
    model = zoo.get_model("resnet18_v1b", pretrained=out).eval()
    with torch.no_grad():
        y = model(torch.from_numpy(ref["x"]))
    torch.testing.assert_close(y, torch.from_numpy(ref["y"]), atol=1e-4, rtol=0)


def test_cli_errors_are_one_clear_line(capsys):
    assert cli(["info", "resnet51_v1d"]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("zoo info: error: unknown model 'resnet51_v1d'") and "Traceback" not in err
    )


def test_python_dash_m_entry_point():
    result = subprocess.run(
        [sys.executable, "-m", "zoo", "list", "se_resnext*"], capture_output=True, text=True,
        cwd=ROOT, check=True,
    )  # fmt: skip
    assert "se_resnext50_32x4d" in result.stdout


def test_gluon_spellings_are_aliases():
    assert zoo.registry.canonical_name("mobilenetv2_0.25") == "mobilenetv2_0_25"
    assert zoo.registry.canonical_name("mobilenet1.0") == "mobilenet1_0"
    assert zoo.list_models("mobilenetv2_0.2*") == ["mobilenetv2_0_25"]
    with pytest.raises(KeyError):  # only a trailing multiplier is dotted
        zoo.registry.canonical_name("resnext50.32x4d")
