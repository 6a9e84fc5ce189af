"""Weight hub end to end: manifest schema, ZOO_MANIFESTS, artifacts over a real local HTTP
server, GluonCV zips, fallbacks, offline use, transforms and the CLI."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import GLUON_FIXTURES, gluon_fixture, randomize
from safetensors.torch import save_file

import zoo
from zoo.cli import main as cli
from zoo.weights import WeightsUnavailableError, list_weights
from zoo.weights.manifest import ManifestError, load_entries, packaged_manifest, parse_manifest

GLUON_MODELS = json.loads((GLUON_FIXTURES / "gluoncv_models.json").read_text())["models"]


@pytest.fixture(autouse=True)
def zoo_env(zoo_home: Path) -> Path:
    return zoo_home


def _entry(arch: str, tag: str, artifacts: list[dict], **extra) -> dict:
    return {
        "arch": arch, "tag": tag, "default": True, "num_classes": 1000,
        "labels": "imagenet-1k", "license": "apache-2.0", "provenance": "test",
        "preprocess": {"crop": 192, "resize": 219, "interpolation": "bicubic"},
        "artifacts": artifacts, **extra,
    }  # fmt: skip


def _artifact(fmt: str, name: str, source: str, **hashes) -> dict:
    return {"format": fmt, "files": [{"name": name, "sources": [source], **hashes}]}


def _write_manifest(path: Path, entries: list[dict], monkeypatch) -> Path:
    path.write_text(json.dumps({"format_version": 1, "weights": entries}))
    monkeypatch.setenv("ZOO_MANIFESTS", str(path))
    return path


def _tv_resnet18(tmp_path: Path) -> tuple[torch.nn.Module, bytes]:
    import torchvision

    model = randomize(torchvision.models.resnet18(weights=None)).eval()
    path = tmp_path / "r18.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return model, path.read_bytes()


# ------------------------------------------------------------------------------- the manifest


def test_packaged_manifest_passes_the_schema():
    entries = parse_manifest(packaged_manifest())
    names = [e.name for e in entries]
    assert len(names) == len(set(names))
    load_entries([packaged_manifest()])  # exactly one default per arch, no duplicates
    for entry in entries:
        assert entry.arch in zoo.list_models()
        for artifact in entry.artifacts:
            for file in artifact.files:
                assert file.sha256 or file.sha1 or file.unverified


def test_gluon_sha1s_equal_gluoncv_model_store():
    for entry in parse_manifest(packaged_manifest()):
        for artifact in entry.artifacts:
            if artifact.format != "gluoncv":
                continue
            gluon_name = next(n for n in GLUON_MODELS if n.replace(".", "_") == entry.arch)
            (file,) = artifact.files
            assert file.sha1 == GLUON_MODELS[gluon_name]["model_store_sha1"], entry.name
            assert file.name == f"{gluon_name}-{file.sha1[:8]}.zip"
            assert file.member == f"{gluon_name}-{file.sha1[:8]}.params"


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda e: e["artifacts"][0]["files"][0].update(name="../../x"), "path traversal"),
        (lambda e: e["artifacts"][0]["files"][0].update(member="/etc/passwd"), "path traversal"),
        (lambda e: e["artifacts"][0]["files"][0].pop("sha256"), "unverified"),
        (lambda e: e["artifacts"][0]["files"][0].update(sha256="abc"), "sha256"),
        (lambda e: e["artifacts"][0]["files"][0].update(sources=["ftp://x/y"]), "source"),
        (lambda e: e.update(arch="ResNet-50"), "canonical model name"),  # registry: test_startup
        (lambda e: e.update(colour="red"), "unknown keys"),
        (lambda e: e.update(tag="Bad Tag"), "bad tag"),
        (lambda e: e["artifacts"][0].update(format="onnx"), "format must be"),
    ],
)
def test_schema_rejects(tmp_path, mutate, message):
    artifact = _artifact("zoo", "a.safetensors", "/a", sha256="0" * 64)
    entry = _entry("resnet18_v1b", "x_in1k", [artifact])
    mutate(entry)
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"format_version": 1, "weights": [entry]}))
    with pytest.raises((ManifestError, KeyError), match=message):
        parse_manifest(path)


def test_duplicates_and_defaults_raise(tmp_path, monkeypatch):
    file = {"name": "a.safetensors", "sources": ["/a"], "sha256": "0" * 64}
    one = _entry("resnet18_v1b", "a_in1k", [{"format": "zoo", "files": [file]}])
    a = tmp_path / "a.json"
    a.write_text(json.dumps({"format_version": 1, "weights": [one]}))
    b = tmp_path / "b.json"
    b.write_text(json.dumps({"format_version": 1, "weights": [one]}))
    with pytest.raises(ManifestError, match=r"defined twice: in .*a.json and in .*b.json"):
        load_entries([a, b])
    two = dict(one, tag="b_in1k")
    b.write_text(json.dumps({"format_version": 1, "weights": [two]}))
    merged = {e.tag: e.default for e in load_entries([a, b])}
    assert merged == {"a_in1k": False, "b_in1k": True}  # the later manifest's default wins
    b.write_text(json.dumps({"format_version": 1, "weights": [two, dict(two, tag="c_in1k")]}))
    with pytest.raises(ManifestError, match="several default tags: b_in1k, c_in1k"):
        load_entries([a, b])
    b.write_text(json.dumps({"format_version": 1, "weights": [dict(two, default=False)]}))
    a.write_text(json.dumps({"format_version": 1, "weights": []}))
    with pytest.raises(ManifestError, match="no default tag for resnet18_v1b"):
        load_entries([a, b])
    monkeypatch.setenv("ZOO_MANIFESTS", str(tmp_path / "missing.json"))
    with pytest.raises(ManifestError, match="manifest not found"):
        list_weights()


# ------------------------------------------------------------------- artifacts, end to end


def test_zoo_manifests_end_to_end(tmp_path, http_server, monkeypatch):
    reference, data = _tv_resnet18(tmp_path)
    url = http_server.add("/weights/r18.pth.safetensors", data)
    files = [{"name": "r18_tv.safetensors", "sources": [url],
              "sha256": hashlib.sha256(data).hexdigest()[:12], "size": len(data)}]  # fmt: skip
    entry = _entry("resnet18_v1b", "org_in1k", [{"format": "torchvision", "files": files}])
    _write_manifest(tmp_path / "org.json", [entry], monkeypatch)

    model = zoo.get_model("resnet18_v1b", pretrained="org_in1k").eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), atol=1e-5, rtol=1e-5)
    assert model.pretrained_cfg.weights == "org_in1k"
    assert model.pretrained_cfg.labels == "imagenet-1k"
    assert zoo.get_transforms(model)(torch.zeros(3, 300, 300, dtype=torch.uint8)).shape == (
        3, 192, 192,
    )  # fmt: skip
    assert len(http_server.requests(method="GET")) == 1
    # warm cache: no network at all, and pretrained=True takes the default tag
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    again = zoo.get_model("resnet18_v1b", pretrained=True)
    assert again.pretrained_cfg.weights == "org_in1k"
    assert len(http_server.requests(method="GET")) == 1
    assert "resnet18_v1b" in zoo.list_models("resnet18*", pretrained=True)
    assert "resnet18_v1c" not in zoo.list_models("resnet18*", pretrained=True)


def test_artifacts_are_alternatives(tmp_path, http_server, monkeypatch):
    _, data = _tv_resnet18(tmp_path)
    sha = hashlib.sha256(data).hexdigest()
    broken = http_server.add("/gone/r18.safetensors", b"", default=404)
    good = http_server.add("/ok/r18.safetensors", data)
    artifacts = [
        _artifact("torchvision", "gone.safetensors", broken, sha256=sha),
        _artifact("timm", "ok.safetensors", good, sha256=sha),
    ]
    entry = _entry("resnet18_v1b", "alt_in1k", artifacts)
    _write_manifest(tmp_path / "alt.json", [entry], monkeypatch)
    assert zoo.get_model("resnet18_v1b", pretrained="alt_in1k").fc.out_features == 1000


def test_all_artifacts_failing_lists_each_reason(tmp_path, http_server, monkeypatch):
    corrupt = http_server.add("/c/r18.safetensors", b"x" * 1000, default="corrupt")
    sha = hashlib.sha256(b"x" * 1000).hexdigest()
    entry = _entry(
        "resnet18_v1b", "bad_in1k", [_artifact("timm", "c.safetensors", corrupt, sha256=sha)]
    )
    _write_manifest(tmp_path / "bad.json", [entry], monkeypatch)
    with pytest.raises(WeightsUnavailableError, match=r"artifact 1 \(timm\):.*sha256"):
        zoo.get_model("resnet18_v1b", pretrained="bad_in1k")
    home = Path(zoo.hub.zoo_home())
    assert not list(home.rglob("*.safetensors"))  # nothing unverified under a final name


def test_offline_empty_cache_is_immediate_and_actionable(tmp_path, http_server, monkeypatch):
    url = http_server.add("/r18.safetensors", b"abc")
    artifact = _artifact("timm", "r18off.safetensors", url, sha256="a" * 64)
    entry = _entry("resnet18_v1b", "off_in1k", [artifact])
    _write_manifest(tmp_path / "off.json", [entry], monkeypatch)
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    with pytest.raises(WeightsUnavailableError, match="r18off.safetensors"):
        zoo.get_model("resnet18_v1b", pretrained=True)
    assert http_server.log == []


def _gluon_zip(name: str) -> tuple[bytes, str, str]:
    params, _ = gluon_fixture(name)
    data = params.read_bytes()
    sha1 = hashlib.sha1(data).hexdigest()
    member = f"{name}-{sha1[:8]}.params"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr(member, data)
    return buffer.getvalue(), sha1, member


def test_gluoncv_zip_end_to_end(tmp_path, http_server, monkeypatch):
    """GluonCV's layout: {name}-{sha1[:8]}.zip holding the .params whose sha1 is published."""
    blob, sha1, member = _gluon_zip("resnet18_v1b")
    url = http_server.add(f"/gluon/models/{member[:-7]}.zip", blob)
    files = [{"name": f"{member[:-7]}.zip", "sources": [url], "sha1": sha1, "member": member}]
    entry = _entry("resnet18_v1b", "testgluon_in1k", [{"format": "gluoncv", "files": files}])
    _write_manifest(tmp_path / "gluon.json", [entry], monkeypatch)
    model = zoo.get_model("resnet18_v1b", pretrained="testgluon_in1k").eval()
    _, ref = gluon_fixture("resnet18_v1b")
    with torch.no_grad():
        y = model(torch.from_numpy(ref["x"]))
    torch.testing.assert_close(y, torch.from_numpy(ref["y"]), atol=1e-4, rtol=0)


def test_gluoncv_zip_wrong_member_hash(tmp_path, http_server, monkeypatch):
    blob, sha1, member = _gluon_zip("resnet18_v1b")
    url = http_server.add("/gluon/x.zip", blob)
    files = [{"name": "x.zip", "sources": [url], "sha1": "0" * 40, "member": member}]
    entry = _entry("resnet18_v1b", "testgluon_in1k", [{"format": "gluoncv", "files": files}])
    _write_manifest(tmp_path / "gluon.json", [entry], monkeypatch)
    with pytest.raises(WeightsUnavailableError, match=f"sha1.*{sha1}"):
        zoo.get_model("resnet18_v1b", pretrained=True)
    assert not list(Path(zoo.hub.zoo_home()).rglob("*.params"))


def test_cli_download_and_list_pretrained(tmp_path, http_server, monkeypatch, capsys):
    _, data = _tv_resnet18(tmp_path)
    url = http_server.add("/r18.safetensors", data)
    files = [
        {"name": "r18cli.safetensors", "sources": [url], "sha256": hashlib.sha256(data).hexdigest()}
    ]
    entry = _entry(
        "resnet18_v1b", "cli_in1k", [{"format": "timm", "files": files}],
        metrics=[{"top1": 70.5, "top5": 89.0, "dataset": "imagenet-1k-val", "source": "test"}],
    )  # fmt: skip
    _write_manifest(tmp_path / "cli.json", [entry], monkeypatch)
    assert cli(["download", "resnet18_v1b.cli_in1k", "--json"]) == 0
    (done,) = json.loads(capsys.readouterr().out)
    assert done["weights"] == "resnet18_v1b.cli_in1k" and Path(done["path"]).is_file()
    assert cli(["list", "resnet18*", "--pretrained"]) == 0
    table = capsys.readouterr().out
    assert "cli_in1k*" in table and "70.50" in table and "apache-2.0" in table
    assert cli(["info", "resnet18_v1b"]) == 0
    assert "cli_in1k (default): top-1 70.50" in capsys.readouterr().out
    assert cli(["download", "resnet18_v1b", "--tag", "nope"]) == 2
    err = capsys.readouterr().err
    assert "tags: gluon_in1k, tv_in1k, a1_in1k," in err and ", cli_in1k (default)" in err


def test_restrictive_license_is_printed_once(tmp_path, http_server, monkeypatch, caplog):
    _, data = _tv_resnet18(tmp_path)
    url = http_server.add("/lic.safetensors", data)
    artifact = _artifact("timm", "lic.safetensors", url, sha256=hashlib.sha256(data).hexdigest())
    entry = _entry("resnet18_v1b", "nc_in1k", [artifact], license="cc-by-nc-4.0")
    _write_manifest(tmp_path / "lic.json", [entry], monkeypatch)
    zoo.get_model("resnet18_v1b", pretrained="nc_in1k")
    zoo.get_model("resnet18_v1b", pretrained="nc_in1k")
    notices = [r for r in caplog.records if "licensed under cc-by-nc-4.0" in r.getMessage()]
    assert len(notices) == 1


def test_cache_verify_rehashes_converted_checkpoints(tmp_path, http_server, monkeypatch, capsys):
    from zoo.weights import checkpoint_path, find_entry, verify_checkpoints

    _, data = _tv_resnet18(tmp_path)
    url = http_server.add("/v.safetensors", data)
    artifact = _artifact("timm", "v.safetensors", url, sha256=hashlib.sha256(data).hexdigest())
    _write_manifest(
        tmp_path / "v.json", [_entry("resnet18_v1b", "v_in1k", [artifact])], monkeypatch
    )
    zoo.get_model("resnet18_v1b", pretrained="v_in1k")
    assert [ok for _, ok, _ in verify_checkpoints()] == [True]
    path = checkpoint_path(find_entry("resnet18_v1b", "v_in1k"))
    blob = bytearray(path.read_bytes())
    blob[-10] ^= 0xFF  # silent corruption, same size
    path.write_bytes(bytes(blob))
    assert [ok for _, ok, _ in verify_checkpoints()] == [False]
    assert cli(["cache", "verify"]) == 1
    assert "resnet18_v1b.v_in1k" in capsys.readouterr().out
