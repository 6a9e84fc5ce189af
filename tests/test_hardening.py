"""Issue 10: nothing silently wrong, one bad item never sinks a batch, messages that say what
is wrong. Real files and a real 127.0.0.1 server, built in each test."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from conftest import SHARED
from PIL import Image
from safetensors.torch import save_file

import zoo
from zoo.checkpoint import CheckpointMeta, read_meta, save_checkpoint
from zoo.cli import main as cli
from zoo.convert import ConversionError, convert_file

TFLITE_025 = SHARED / "weights" / "tflite_mobilenet" / "mobilenet_v1_0.25_128_quant.tflite"


@pytest.fixture(autouse=True)
def _home(zoo_home: Path) -> Path:
    return zoo_home


def _write_manifest(tmp_path: Path, monkeypatch, entries: list[dict]) -> None:
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({"format_version": 2, "weights": entries}))
    monkeypatch.setenv("ZOO_MANIFESTS", str(path))


def _entry(tag: str, files: list[dict], fmt: str = "timm", **extra) -> dict:
    return {
        "arch": "resnet18_v1b", "tag": tag, "default": False, "num_classes": 1000,
        "labels": "imagenet-1k", "license": "apache-2.0", "provenance": "test",
        "artifacts": [{"format": fmt, "files": files}], **extra,
    }  # fmt: skip


def _r18_safetensors(tmp_path: Path) -> bytes:
    model = zoo.get_model("resnet18_v1b")
    path = tmp_path / "r18.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path.read_bytes()


# ------------------------------------------------------------------- silent wrong answers


def test_tflite_background_row_is_detected_not_one_class_off(tmp_path, capsys):
    out = tmp_path / "m.safetensors"
    argv = ["convert", str(TFLITE_025), "--model", "mobilenet0_25_tf", "--labels", "imagenet-1k"]
    assert cli([*argv, "-o", str(out)]) == 0
    assert "label_offset 1" in capsys.readouterr().out
    assert read_meta(out).label_offset == 1  # the loader drops the background row
    assert zoo.get_model("mobilenet0_25_tf", pretrained=out).num_classes == 1000
    with pytest.raises(ValueError, match="1001 outputs, imagenet-1k has 1000 classes"):
        convert_file(TFLITE_025, tmp_path / "x.safetensors", model="mobilenet0_25_tf",
                     labels="imagenet-1k", label_offset=0)  # fmt: skip
    with pytest.raises(ValueError, match="label_offset must be in"):
        convert_file(TFLITE_025, tmp_path / "x.safetensors", model="mobilenet0_25_tf",
                     label_offset=1001)  # fmt: skip
    assert not (tmp_path / "x.safetensors").exists()


def test_convert_names_the_format_it_recognised(tmp_path):
    with pytest.raises(ConversionError, match=r"is a tflite file.*does not cover resnet18_v1b"):
        zoo.convert.convert(TFLITE_025, model="resnet18_v1b")
    odd = tmp_path / "weights.xyz"
    odd.write_bytes(b"\0" * 16)
    with pytest.raises(ConversionError, match=r"from its extension.*pass --format"):
        zoo.convert.convert(odd, model="resnet18_v1b")


# ----------------------------------------------------------------- batches go on, and count


def test_download_reports_the_good_one_when_another_fails(tmp_path, http_server, monkeypatch,
                                                          capsys):  # fmt: skip
    data = _r18_safetensors(tmp_path)
    good = http_server.add("/good.safetensors", data)
    gone = http_server.add("/gone.safetensors", b"", default=404)
    files_good = [{"name": "good.safetensors", "sources": [good],
                   "sha256": hashlib.sha256(data).hexdigest()}]  # fmt: skip
    files_gone = [{"name": "gone.safetensors", "sources": [gone], "sha256": "ab" * 32}]
    _write_manifest(tmp_path, monkeypatch, [_entry("good_in1k", files_good),
                                            _entry("gone_in1k", files_gone)])  # fmt: skip
    rc = cli(["download", "resnet18_v1b.gone_in1k", "resnet18_v1b.good_in1k", "--json"])
    captured = capsys.readouterr()
    assert rc == 2 and "Traceback" not in captured.err
    gone_report, good_report = json.loads(captured.out)
    assert "HTTP 404" in gone_report["error"]
    assert Path(good_report["path"]).is_file()
    assert "1 of 2 weights failed" in captured.err


def _three_class_checkpoint(tmp_path: Path) -> Path:
    model = zoo.get_model("resnet18_v1b", num_classes=3)
    meta = CheckpointMeta(
        arch="resnet18_v1b", config={"num_classes": 3}, labels=("cat", "dog", "fish")
    )
    return save_checkpoint(tmp_path / "three.safetensors", model.state_dict(), meta)


def test_cli_eval_skips_counts_and_stays_quiet_off_a_terminal(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("ZOO_QUIET")  # the bar must stay off because stderr is not a terminal
    weights = _three_class_checkpoint(tmp_path)
    for name in ("cat", "dog"):
        (tmp_path / "data" / name).mkdir(parents=True)
        Image.new("RGB", (32, 32)).save(tmp_path / "data" / name / "a.png")
    (tmp_path / "data" / "dog" / "b.jpg").write_bytes(b"\xff\xd8 truncated jpeg")
    argv = ["eval", str(tmp_path / "data"), "--model", "resnet18_v1b", "--pretrained",
            str(weights), "--workers", "0", "--no-optimize"]  # fmt: skip
    assert cli(argv) == 1
    captured = capsys.readouterr()
    assert "2 images, 2 classes" in captured.out
    assert "skipped" in captured.err and "b.jpg" in captured.err
    assert "1 of 3 input(s)" in captured.err
    assert "batch" not in captured.err and "%|" not in captured.err  # no progress bar
    with pytest.raises(SystemExit) as exit_info:
        cli([*argv, "--limit-per-class", "0"])
    assert exit_info.value.code == 2
    assert "must be at least 1" in capsys.readouterr().err


def test_unknown_model_points_at_the_cli_listing(capsys):
    assert cli(["info", "resnet18_v1z"]) == 2
    err = capsys.readouterr().err
    assert "`zoo list`" in err and "Did you mean" in err


# ------------------------------------------------------------------- manifests, strictly


def _base_entry() -> dict:
    files = [{"name": "a.safetensors", "sources": ["/a"], "sha256": "0" * 64, "size": 10}]
    return _entry("x_in1k", files)


def _preprocess(**changes) -> dict:
    base = {"crop": 224, "resize": 256, "interpolation": "bilinear", "mean": [0.5] * 3,
            "std": [0.5] * 3}  # fmt: skip
    return {**base, **changes}


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda e: e.update(default="false"), "default"),
        (lambda e: e.update(tag="x_in1k\n"), "bad tag"),
        (lambda e: e.update(num_classes="1000"), "num_classes"),
        (lambda e: e.update(num_classes=True), "num_classes"),
        (lambda e: e.update(label_offset=1000), "label_offset"),
        (lambda e: e.update(license=["mit"]), "license"),
        (lambda e: e["artifacts"][0]["files"][0].update(size=-1), "size"),
        (lambda e: e["artifacts"][0]["files"][0].update(size="10"), "size"),
        (lambda e: e["artifacts"][0]["files"][0].update(sha256=1234567890), "sha256"),
        (lambda e: e.update(preprocess=_preprocess(crop="224")), "crop"),
        (lambda e: e.update(preprocess=_preprocess(resize=10**9)), "resize"),
        (lambda e: e.update(preprocess=_preprocess(mean=[float("nan")] * 3)), "mean"),
    ],
)
def test_manifest_fields_are_type_checked(tmp_path, mutate, field):
    from zoo.weights.manifest import ManifestError, parse_manifest

    entry = _base_entry()
    mutate(entry)
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"format_version": 2, "weights": [entry]}))
    with pytest.raises(ManifestError) as info:
        parse_manifest(path)
    message = str(info.value)
    assert str(path) in message and "weights[0]" in message and field in message


def test_pathological_manifest_nesting_is_a_clear_error(tmp_path):
    from zoo.weights.manifest import ManifestError, parse_manifest

    path = tmp_path / "deep.json"
    path.write_text('{"format_version": 2, "weights": ' + "[" * 200_000 + "]" * 200_000 + "}")
    with pytest.raises(ManifestError, match="nested too deeply"):
        parse_manifest(path)


# ------------------------------------------------------------------ checkpoints, validated


def _small_checkpoint(tmp_path: Path, name: str, **meta_changes) -> tuple[Path, dict]:
    model = zoo.get_model("resnet18_v1b", num_classes=3)
    meta = CheckpointMeta(arch="resnet18_v1b", config={"num_classes": 3}).to_strings()
    meta.update(meta_changes)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    path = tmp_path / name
    return path, {"state": state, "meta": meta}


def test_checkpoint_dtypes_are_cast_or_refused(tmp_path):
    import torch
    from safetensors.torch import save_file as save

    from zoo.checkpoint import CheckpointError

    path, parts = _small_checkpoint(tmp_path, "half.safetensors")
    state = parts["state"]
    save({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, str(path),
         metadata=parts["meta"])  # fmt: skip
    model = zoo.get_model("resnet18_v1b", pretrained=path)
    assert model.fc.weight.dtype == torch.float32
    torch.testing.assert_close(model.fc.weight, state["fc.weight"].half().float())
    bad = {**state, "fc.weight": state["fc.weight"].to(torch.int32)}
    save(bad, str(tmp_path / "int.safetensors"), metadata=parts["meta"])
    with pytest.raises(CheckpointError, match="'fc.weight' is int32"):
        zoo.get_model("resnet18_v1b", pretrained=tmp_path / "int.safetensors")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"label_offset": "-1"}, "label_offset must be >= 0"),
        ({"label_offset": "3"}, "leaves no class"),
        ({"preprocess": '{"crop": "224", "resize": 256}'}, "crop must be a whole number"),
        ({"preprocess": '{"crop": 224, "resize": 100000}'}, "resize must be"),
    ],
)
def test_checkpoint_metadata_is_validated(tmp_path, changes, message):
    from safetensors.torch import save_file as save

    from zoo.checkpoint import CheckpointError

    path, parts = _small_checkpoint(tmp_path, "m.safetensors", **changes)
    save(parts["state"], str(path), metadata=parts["meta"])
    with pytest.raises(CheckpointError, match=message):
        zoo.get_model("resnet18_v1b", pretrained=path)
