"""Reuse of files other libraries already downloaded: the Hugging Face cache, torch.hub's
checkpoints and GluonCV's $MXNET_HOME/models. Fake caches are laid out exactly as those libraries
lay them out; a real 127.0.0.1 server counts the requests the zoo makes (none, when a cache has
the file); a tampered cached file is refused by name; nothing in a foreign cache is modified."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from conftest import gluon_fixture, randomize
from huggingface_hub import scan_cache_dir
from huggingface_hub.file_download import repo_folder_name
from safetensors.torch import save_file

import zoo
from zoo.cli import main as cli
from zoo.hub import FetchError, OfflineError, recorded_hash
from zoo.hub.local_caches import (
    GLUONCV,
    HUGGING_FACE,
    TORCH_HUB,
    LocalFile,
    find_local,
    hf_hub_cache,
    mxnet_models,
    torch_hub_checkpoints,
)
from zoo.weights import find_entry
from zoo.weights.artifacts import DOWNLOAD, ZOO_CACHE, fetch_file, plan_artifacts, plan_file
from zoo.weights.manifest import ArtifactFile

PAYLOAD = bytes(range(256)) * 64
PAYLOAD_SHA256 = hashlib.sha256(PAYLOAD).hexdigest()
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass(frozen=True)
class Caches:
    hf: Path  # HF_HUB_CACHE
    torch_home: Path  # TORCH_HOME
    mxnet_home: Path  # MXNET_HOME


@pytest.fixture
def caches(zoo_home: Path) -> Caches:
    """The empty HF / torch.hub / MXNet caches the ``zoo_home`` fixture points at."""
    return Caches(*(Path(os.environ[k]) for k in ("HF_HUB_CACHE", "TORCH_HOME", "MXNET_HOME")))


def put_hf(
    cache: Path, repo_id: str, path_in_repo: str, data: bytes, revision: str = "main"
) -> Path:
    """What ``hf_hub_download`` leaves behind: blobs/<sha256>, a relative symlink from
    snapshots/<commit>/<path>, and refs/<revision> holding the commit. Returns the blob."""
    repo = cache / repo_folder_name(repo_id=repo_id, repo_type="model")
    blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(data)
    snapshot = repo / "snapshots" / COMMIT / path_in_repo
    snapshot.parent.mkdir(parents=True, exist_ok=True)
    snapshot.symlink_to(os.path.relpath(blob, snapshot.parent))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / revision).write_text(COMMIT)
    return blob


def put_torch_hub(torch_home: Path, filename: str, data: bytes) -> Path:
    """What ``torch.hub.load_state_dict_from_url`` leaves: hub/checkpoints/<URL basename>."""
    path = torch_home / "hub" / "checkpoints" / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def tree(folder: Path) -> dict[str, tuple[int, int]]:
    """Every entry under ``folder`` with its size and mtime: to show nothing was written."""
    return {str(p): (p.lstat().st_size, p.lstat().st_mtime_ns) for p in folder.rglob("*")}


def tamper(path: Path) -> None:
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF  # same size: only a hash notices
    path.write_bytes(bytes(blob))


# ----------------------------------------------------------------------- where caches are


def test_cache_folders_follow_each_library(caches, tmp_path, monkeypatch):
    import torch.hub

    assert torch_hub_checkpoints() == Path(torch.hub.get_dir()) / "checkpoints"
    monkeypatch.delenv("TORCH_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert torch_hub_checkpoints() == Path(torch.hub.get_dir()) / "checkpoints"
    assert mxnet_models() == caches.mxnet_home / "models"
    monkeypatch.delenv("MXNET_HOME")
    assert mxnet_models() == Path.home() / ".mxnet" / "models"  # GluonCV's model_store default

    # huggingface_hub reads its variables once, at import: ask fresh interpreters.
    settings = [
        {"HF_HUB_CACHE": str(tmp_path / "a"), "HF_HOME": str(tmp_path / "b")},
        {"HF_HOME": str(tmp_path / "b")},
        {"HUGGINGFACE_HUB_CACHE": str(tmp_path / "c"), "HF_HOME": str(tmp_path / "b")},
        {"XDG_CACHE_HOME": str(tmp_path / "xdg")},
    ]
    script = (
        "import json, os, sys, importlib\n"
        "out = []\n"
        "for env in json.loads(sys.argv[1]):\n"
        "    for k in ('HF_HUB_CACHE', 'HF_HOME', 'HUGGINGFACE_HUB_CACHE', 'XDG_CACHE_HOME'):\n"
        "        os.environ.pop(k, None)\n"
        "    os.environ.update(env)\n"
        "    import huggingface_hub.constants as c\n"
        "    out.append(importlib.reload(c).HF_HUB_CACHE)\n"
        "print(json.dumps(out))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps(settings)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    for env, theirs in zip(settings, json.loads(done.stdout), strict=True):
        for name in ("HF_HUB_CACHE", "HF_HOME", "HUGGINGFACE_HUB_CACHE", "XDG_CACHE_HOME"):
            monkeypatch.delenv(name, raising=False)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        assert hf_hub_cache() == Path(theirs), env


def test_hf_lookup_reads_the_layout_huggingface_hub_writes(caches):
    blob = put_hf(caches.hf, "org/net", "model.safetensors", PAYLOAD)
    put_hf(caches.hf, "org/net", "sub/dir/other.bin", b"x" * 10)
    # The fake cache is a valid one by huggingface_hub's own scanner.
    (repo,) = scan_cache_dir(caches.hf).repos
    assert repo.repo_id == "org/net" and not scan_cache_dir(caches.hf).warnings
    (revision,) = repo.revisions
    assert revision.commit_hash == COMMIT and repo.refs["main"] == revision
    assert {f.file_name: f.blob_path for f in revision.files}["model.safetensors"] == blob

    found = find_local(["https://elsewhere/x", "hf://org/net@main/model.safetensors"])
    assert found == [LocalFile(blob, HUGGING_FACE, PAYLOAD_SHA256)]
    assert find_local([f"hf://org/net@{COMMIT}/model.safetensors"]) == found
    (nested,) = find_local(["hf://org/net/sub/dir/other.bin"])
    assert nested.sha256 == hashlib.sha256(b"x" * 10).hexdigest()
    assert find_local(["hf://org/net@v2/model.safetensors"]) == []  # another revision
    assert find_local(["hf://org/other/model.safetensors"]) == []


def test_hf_link_leaving_the_cache_is_ignored(caches, tmp_path):
    put_hf(caches.hf, "org/net", "model.safetensors", PAYLOAD)
    outside = tmp_path / "secret"
    outside.write_bytes(PAYLOAD)
    repo = caches.hf / repo_folder_name(repo_id="org/net", repo_type="model")
    link = repo / "snapshots" / COMMIT / "model.safetensors"
    link.unlink()
    link.symlink_to(outside)
    assert find_local(["hf://org/net/model.safetensors"]) == []


def test_torch_hub_and_gluoncv_lookups(caches, monkeypatch):
    tv = put_torch_hub(caches.torch_home, "resnet18-f37072fd.pth", PAYLOAD)
    plain = put_torch_hub(caches.torch_home, "plain.pth", PAYLOAD)
    url = "https://download.pytorch.org/models/resnet18-f37072fd.pth"
    assert find_local([url]) == [LocalFile(tv, TORCH_HUB, "f37072fd")]  # torch.hub's hash rule
    assert find_local(["https://x/plain.pth"]) == [LocalFile(plain, TORCH_HUB, None)]
    assert find_local(["https://x/..%2Fplain.pth", "/abs/plain.pth"]) == []

    params = caches.mxnet_home / "models" / "resnet18_v1b-2d9d980c.params"
    params.parent.mkdir(parents=True)
    params.write_bytes(PAYLOAD)
    assert find_local(["https://x/resnet18_v1b-2d9d980c.zip"], member=params.name) == [
        LocalFile(params, GLUONCV, None)
    ]
    monkeypatch.setenv("ZOO_LOCAL_CACHES", "0")
    assert find_local([url]) == []


# ------------------------------------------------- one file: used, or refused and downloaded


@pytest.fixture
def hf_server(http_server, monkeypatch):
    """The counting server as the Hugging Face endpoint (zoo reads HF_ENDPOINT at call time)."""
    monkeypatch.setenv("HF_ENDPOINT", http_server.base_url)
    return http_server


def _hf_file(hf_server, sha256: str | None = None) -> ArtifactFile:
    """A manifest file whose source is hf://org/net@main/model.safetensors (also served)."""
    hf_server.add("/org/net/resolve/main/model.safetensors", PAYLOAD)
    source = "hf://org/net@main/model.safetensors"
    return ArtifactFile("net.safetensors", (source,), sha256=sha256, unverified="test")


def test_hf_copy_is_used_without_any_request(caches, hf_server):
    blob = put_hf(caches.hf, "org/net", "model.safetensors", PAYLOAD)
    file = _hf_file(hf_server)  # no hash in the manifest: the blob's name vouches
    plan = plan_file(file)
    assert (plan.origin, plan.locations) == (HUGGING_FACE, (str(blob),))
    path = fetch_file(file)
    assert path.read_bytes() == PAYLOAD and hf_server.log == []
    assert path.stat().st_ino != blob.stat().st_ino  # a copy: the HF cache is never written
    assert blob.read_bytes() == PAYLOAD
    # Trust on first use: the verified hash is recorded, later downloads must match it.
    record = recorded_hash(f"{path.parent.name}/{path.name}")
    assert record is not None and record.sha256 == PAYLOAD_SHA256 and str(blob) in record.url
    assert plan_file(file).origin == ZOO_CACHE


def test_tampered_hf_copy_is_refused_by_name(caches, hf_server, caplog):
    blob = put_hf(caches.hf, "org/net", "model.safetensors", PAYLOAD)
    tamper(blob)
    file = _hf_file(hf_server)
    path = fetch_file(file)  # refused, then the normal download
    assert path.read_bytes() == PAYLOAD
    assert len(hf_server.requests(method="GET")) == 1
    (refusal,) = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert refusal.startswith(f"refused Hugging Face cache {blob}: sha256 ")
    assert f"expected {PAYLOAD_SHA256} (tampered or corrupt" in refusal
    assert blob.read_bytes() != PAYLOAD  # left as found: not ours to repair


def test_offline_uses_caches_and_names_a_refused_copy(caches, http_server, monkeypatch):
    good = put_torch_hub(caches.torch_home, f"net-{PAYLOAD_SHA256[:8]}.pth", PAYLOAD)
    url = http_server.add(f"/models/{good.name}", PAYLOAD)
    file = ArtifactFile(good.name, (url,), sha256=PAYLOAD_SHA256[:8])
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    assert plan_file(file).origin == TORCH_HUB
    assert fetch_file(file).read_bytes() == PAYLOAD

    bad = put_torch_hub(caches.torch_home, f"bad-{PAYLOAD_SHA256[:8]}.pth", PAYLOAD)
    tamper(bad)
    url = http_server.add(f"/models/{bad.name}", PAYLOAD)
    with pytest.raises(OfflineError) as info:
        fetch_file(ArtifactFile(bad.name, (url,), sha256=PAYLOAD_SHA256[:8]))
    assert f"torch.hub cache {bad}: refused: sha256 mismatch" in str(info.value)
    assert http_server.log == []


def _zip(member: str, data: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr(member, data)
    return buffer.getvalue()


def test_gluoncv_member_is_matched_by_name_and_sha1(caches, http_server, monkeypatch):
    sha1 = hashlib.sha1(PAYLOAD).hexdigest()
    member = f"net-{sha1[:8]}.params"
    url = http_server.add(f"/gluon/models/net-{sha1[:8]}.zip", _zip(member, PAYLOAD))
    file = ArtifactFile(f"net-{sha1[:8]}.zip", (url,), sha1=sha1, member=member)
    params = caches.mxnet_home / "models" / member
    params.parent.mkdir(parents=True)
    params.write_bytes(PAYLOAD)
    tamper(params)
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    with pytest.raises(FetchError, match=f"; refused GluonCV cache {params}: sha1 "):
        fetch_file(file)
    home = Path(os.environ["ZOO_HOME"])
    assert not [*home.rglob("*.params"), *home.rglob("*.incomplete")]  # nothing unverified kept

    monkeypatch.delenv("ZOO_OFFLINE")
    assert fetch_file(file).read_bytes() == PAYLOAD  # refused again, then downloaded
    assert len(http_server.requests(method="GET")) == 1

    params.write_bytes(PAYLOAD)  # a good copy, for a file not fetched yet
    other = ArtifactFile("other.zip", (http_server.url("/gone.zip"),), sha1=sha1, member=member)
    assert plan_file(other).origin == GLUONCV
    assert fetch_file(other).read_bytes() == PAYLOAD
    assert len(http_server.requests(method="GET")) == 1


def test_env_names_the_caches_searched(caches, monkeypatch, capsys):
    caches.hf.mkdir(parents=True)
    assert cli(["env", "--json"]) == 0
    found = json.loads(capsys.readouterr().out)["local_caches"]
    assert found == {
        HUGGING_FACE: str(caches.hf),
        TORCH_HUB: f"{caches.torch_home / 'hub' / 'checkpoints'} (absent)",
        GLUONCV: f"{caches.mxnet_home / 'models'} (absent)",
    }
    monkeypatch.setenv("ZOO_LOCAL_CACHES", "0")
    assert cli(["env", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["local_caches"].startswith("off")


def test_unverifiable_copies_are_not_used(caches, hf_server, monkeypatch):
    plain = put_torch_hub(caches.torch_home, "plain.pth", PAYLOAD)  # no hash in its name
    file = ArtifactFile(plain.name, (hf_server.add("/plain.pth", PAYLOAD),), unverified="t")
    assert plan_file(file).origin == DOWNLOAD
    # huggingface_hub copies instead of linking where symlinks are unavailable
    snapshot = caches.hf / "models--org--net" / "snapshots" / COMMIT / "model.safetensors"
    snapshot.parent.mkdir(parents=True)
    snapshot.write_bytes(PAYLOAD)
    (caches.hf / "models--org--net" / "refs").mkdir()
    (caches.hf / "models--org--net" / "refs" / "main").write_text(COMMIT)
    assert plan_file(_hf_file(hf_server)).origin == DOWNLOAD
    assert plan_file(_hf_file(hf_server, sha256=PAYLOAD_SHA256)).origin == HUGGING_FACE
    monkeypatch.setenv("ZOO_LOCAL_CACHES", "0")
    assert plan_file(_hf_file(hf_server, sha256=PAYLOAD_SHA256)).origin == DOWNLOAD


# ----------------------------------------- end to end: users of timm, torchvision, GluonCV


@pytest.fixture(scope="module")
def resnet18(tmp_path_factory) -> tuple[torch.nn.Module, bytes, bytes]:
    """A random torchvision ResNet-18 and its weights as timm (safetensors) and torchvision
    (torch.save) publish them."""
    import torchvision

    model = randomize(torchvision.models.resnet18(weights=None)).eval()
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    folder = tmp_path_factory.mktemp("resnet18")
    save_file(state, str(folder / "model.safetensors"))
    torch.save(state, folder / "model.pth")
    return model, (folder / "model.safetensors").read_bytes(), (folder / "model.pth").read_bytes()


def _use_manifest(tmp_path: Path, monkeypatch, arch: str, tag: str, artifacts: list) -> None:
    entry = {
        "arch": arch, "tag": tag, "num_classes": 1000, "labels": "imagenet-1k",
        "license": "apache-2.0", "provenance": "test", "artifacts": artifacts,
        "preprocess": {"crop": 224, "resize": 256, "interpolation": "bilinear"},
    }  # fmt: skip
    path = tmp_path / f"{tag}.json"
    path.write_text(json.dumps({"format_version": 1, "weights": [entry]}))
    monkeypatch.setenv("ZOO_MANIFESTS", str(path))


def _same_outputs(model: torch.nn.Module, reference: torch.nn.Module, size: int = 64) -> None:
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), reference(x), atol=1e-5, rtol=1e-5)


def test_timm_user_downloads_nothing(caches, hf_server, tmp_path, monkeypatch, resnet18, capsys):
    reference, safetensors_bytes, _ = resnet18
    blob = put_hf(caches.hf, "timm/resnet18.x_in1k", "model.safetensors", safetensors_bytes)
    gluon = {"name": "r18-00000000.zip", "sources": [hf_server.url("/r18.zip")],
             "sha1": "0" * 40, "member": "r18-00000000.params"}  # fmt: skip
    timm = {"name": "r18.x_in1k.safetensors", "unverified": "test",
            "sources": ["hf://timm/resnet18.x_in1k@main/model.safetensors"]}  # fmt: skip
    artifacts = [{"format": "gluoncv", "files": [gluon]}, {"format": "timm", "files": [timm]}]
    _use_manifest(tmp_path, monkeypatch, "resnet18_v1b", "x_in1k", artifacts)
    before = tree(caches.hf)

    # Listed second in the manifest, but local: tried first, and the dry run says so.
    plans = plan_artifacts(find_entry("resnet18_v1b", "x_in1k"))
    assert [(p.index, p.files[0].origin) for p in plans] == [(2, HUGGING_FACE), (1, DOWNLOAD)]
    assert cli(["download", "--dry-run", "resnet18_v1b.x_in1k"]) == 0
    out = capsys.readouterr().out
    assert f"Hugging Face cache: {blob} (copied once verified)" in out
    assert f"sha256 {blob.name}, as named in the Hugging Face cache" in out
    assert out.index("artifact 2 (timm)") < out.index("artifact 1 (gluoncv, only if")
    model = zoo.get_model("resnet18_v1b", pretrained="x_in1k")
    _same_outputs(model, reference)
    assert hf_server.log == []
    assert tree(caches.hf) == before  # read-only: no lock, no link, no touched file


def test_torchvision_user_downloads_nothing_even_offline(
    caches, http_server, tmp_path, monkeypatch, resnet18
):
    reference, _, pth_bytes = resnet18
    sha = hashlib.sha256(pth_bytes).hexdigest()
    name = f"resnet18-{sha[:8]}.pth"  # torchvision's naming: the sha256 prefix
    put_torch_hub(caches.torch_home, name, pth_bytes)
    file = {"name": name, "sources": [http_server.url(f"/models/{name}")], "sha256": sha[:8]}
    _use_manifest(tmp_path, monkeypatch, "resnet18_v1b", "y_in1k", [
        {"format": "torchvision", "files": [file]}
    ])  # fmt: skip
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    _same_outputs(zoo.get_model("resnet18_v1b", pretrained="y_in1k"), reference)
    assert http_server.log == []


def test_gluoncv_user_downloads_nothing(caches, http_server, tmp_path, monkeypatch):
    params, ref = gluon_fixture("mobilenet0.25")
    sha1 = hashlib.sha1(params.read_bytes()).hexdigest()
    member = f"mobilenet0.25-{sha1[:8]}.params"  # GluonCV's model_store naming
    (caches.mxnet_home / "models").mkdir(parents=True)
    (caches.mxnet_home / "models" / member).write_bytes(params.read_bytes())
    url = http_server.url(f"/gluon/models/mobilenet0.25-{sha1[:8]}.zip")
    file = {"name": f"mobilenet0.25-{sha1[:8]}.zip", "sha1": sha1, "member": member,
            "sources": [url]}  # fmt: skip
    _use_manifest(tmp_path, monkeypatch, "mobilenet0_25", "z_in1k", [
        {"format": "gluoncv", "files": [file]}
    ])  # fmt: skip
    model = zoo.get_model("mobilenet0_25", pretrained="z_in1k").eval()
    with torch.no_grad():
        y = model(torch.from_numpy(ref["x"]))
    torch.testing.assert_close(y, torch.from_numpy(ref["y"]), atol=1e-4, rtol=0)
    assert http_server.log == []
