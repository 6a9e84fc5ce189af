"""Converters: the MXNet reader, exact-once mapping, format inference and safe loading."""

from __future__ import annotations

import pickle
import struct

import pytest
import torch
from conftest import gluon_fixture, randomize
from safetensors.torch import save_file

import zoo
from zoo.convert import ConversionError, convert
from zoo.convert.mxnet_params import V1, V3, MXNetFormatError, read_params, write_params


def _tv_resnet18_state() -> dict[str, torch.Tensor]:
    import torchvision

    return randomize(torchvision.models.resnet18(weights=None)).state_dict()


def test_reader_roundtrip_and_truncation(tmp_path):
    params, _ = gluon_fixture("resnet18_v1b")
    arrays = read_params(params)
    assert list(arrays)[:3] == ["conv1.weight", "bn1.gamma", "bn1.beta"]
    path = tmp_path / "copy.params"
    write_params(path, arrays)
    again = read_params(path)
    assert all(torch.equal(again[k], arrays[k]) for k in arrays)
    cut = tmp_path / "cut.params"
    cut.write_bytes(params.read_bytes()[:1_000_000])
    with pytest.raises(MXNetFormatError, match="truncated at byte .* re-download"):
        read_params(cut)
    bad = tmp_path / "bad.params"
    bad.write_bytes(b"PK\x03\x04" + bytes(40))  # e.g. the zip instead of the .params inside
    with pytest.raises(MXNetFormatError, match="not an MXNet .params file"):
        read_params(bad)


def _record(header: bytes, data: torch.Tensor) -> bytes:
    return header + struct.pack("<iii", 1, 0, 0) + data.numpy().tobytes()


@pytest.mark.parametrize("version", ["v1", "v3", "oldest"])
def test_reader_other_ndarray_versions(tmp_path, version):
    data = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    if version == "v1":
        header = struct.pack("<Ii2q", V1, 2, 2, 3)
    elif version == "v3":
        header = struct.pack("<Iii2q", V3, 0, 2, 2, 3)
    else:  # no magic: the first u32 is ndim, dims are u32
        header = struct.pack("<I2I", 2, 2, 3)
    name = b"w"
    blob = struct.pack("<QQQ", 0x112, 0, 1) + _record(header, data)
    blob += struct.pack("<QQ", 1, len(name)) + name
    path = tmp_path / f"{version}.params"
    path.write_bytes(blob)
    assert torch.equal(read_params(path)["w"], data)


def test_every_source_key_used_once_and_every_target_filled(tmp_path):
    state = _tv_resnet18_state()
    extra = dict(state, **{"head.extra.weight": torch.zeros(3)})
    save_file({k: v.contiguous() for k, v in extra.items()}, str(tmp_path / "extra.safetensors"))
    with pytest.raises(ConversionError, match=r"mapped to names the model lacks \(1\): head.extra"):
        convert(tmp_path / "extra.safetensors", model="resnet18_v1b", format="timm")

    missing = {k: v for k, v in state.items() if k != "layer3.1.bn2.running_var"}
    save_file(
        {k: v.contiguous() for k, v in missing.items()}, str(tmp_path / "missing.safetensors")
    )
    with pytest.raises(ConversionError, match="does not fill .*layer3.1.bn2.running_var"):
        convert(tmp_path / "missing.safetensors", model="resnet18_v1b", format="torchvision")

    wrong = dict(state, **{"layer1.0.conv1.weight": torch.zeros(64, 64, 1, 1)})
    save_file({k: v.contiguous() for k, v in wrong.items()}, str(tmp_path / "wrong.safetensors"))
    with pytest.raises(ConversionError, match=r"shape mismatches \(1\): layer1.0.conv1.weight"):
        convert(tmp_path / "wrong.safetensors", model="resnet18_v1b", format="timm")


def test_report_lists_ignored_and_defaulted_keys(tmp_path):
    torch.save(_tv_resnet18_state(), tmp_path / "r18.pth")
    report = convert(tmp_path / "r18.pth", model="resnet18_v1b", format="torchvision").report
    assert report.mapped == 102 and len(report.ignored) == 20
    assert all(k.endswith("num_batches_tracked") for k in report.ignored + report.defaulted)
    assert "20 ignored" in report.summary()


def test_num_classes_follows_the_source(tmp_path):
    import torchvision

    src = randomize(torchvision.models.resnet18(weights=None, num_classes=10))
    torch.save({"state_dict": src.state_dict()}, tmp_path / "ckpt.pth")  # training-style wrapper
    converted = convert(tmp_path / "ckpt.pth", model="resnet18_v1b")
    assert converted.config.num_classes == 10 and converted.report.num_classes == 10


def test_format_inference(tmp_path):
    params, _ = gluon_fixture("resnet18_v1b")
    assert convert(params, model="resnet18_v1b").report.source_format == "gluoncv"
    # timm and torchvision ResNets share key names: the same result either way, so accepted
    torch.save(_tv_resnet18_state(), tmp_path / "r18.pth")
    assert convert(tmp_path / "r18.pth", model="resnet18_v1b").report.mapped == 102
    (tmp_path / "r18.onnx").write_bytes(b"x")
    with pytest.raises(ConversionError, match="pass --format"):
        convert(tmp_path / "r18.onnx", model="resnet18_v1b")
    with pytest.raises(ValueError, match="unknown format 'keras'"):
        convert(params, model="resnet18_v1b", format="keras")
    with pytest.raises(FileNotFoundError, match="source weights not found"):
        convert(tmp_path / "nope.params", model="resnet18_v1b")


class _Payload:
    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(_Payload.marker),))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    _Payload.marker = str(marker)
    evil = tmp_path / "evil.pth"
    with open(evil, "wb") as f:
        pickle.dump({"conv1.weight": _Payload()}, f)
    with pytest.raises(ConversionError, match="refused to load"):
        convert(evil, model="resnet18_v1b", format="torchvision")
    assert not marker.exists()


def test_convert_file_writes_atomically_and_loads(tmp_path):
    from zoo.convert import convert_file

    params, _ = gluon_fixture("resnet18_v1b")
    out = tmp_path / "sub" / "r18.safetensors"
    convert_file(params, out, model="resnet18_v1b", labels="imagenet-1k")
    assert [p.name for p in out.parent.iterdir()] == ["r18.safetensors"]  # no temp files left
    model = zoo.get_model("resnet18_v1b", pretrained=out)
    assert model.pretrained_cfg.labels == "imagenet-1k"
    with pytest.raises(ValueError, match="end in .safetensors"):
        convert_file(params, tmp_path / "r18.pt", model="resnet18_v1b")


def test_format_names_are_defined_once():
    """The manifest accepts exactly the converters zoo.convert registers, plus zoo's own."""
    from zoo.convert import FORMATS
    from zoo.formats import CONVERTER_FORMATS, SOURCE_FORMATS, ZOO
    from zoo.weights import manifest

    assert tuple(FORMATS) == CONVERTER_FORMATS
    assert all(FORMATS[name].name == name for name in FORMATS)
    assert manifest.SOURCE_FORMATS is SOURCE_FORMATS and set(SOURCE_FORMATS) - set(FORMATS) == {ZOO}
