"""Issue 10: the cache never keeps trusting a failure, falls back for real, refuses symlinks out
of mirrors and manifest folders, and notices a converted checkpoint changed after it was
written. A real 127.0.0.1 server and files built in each test."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import zipfile
from pathlib import Path

import pytest
import torch

import zoo
from zoo.hub import confirm_recorded, fetch, recorded_hash, verify_cache
from zoo.weights import checkpoint_path, find_entry


@pytest.fixture(autouse=True)
def _home(zoo_home: Path) -> Path:
    return zoo_home


@pytest.fixture(scope="module")
def r18() -> tuple[bytes, torch.Tensor]:
    """A zoo/timm-layout ResNet-18 file and the model's output on a fixed input."""
    torch.manual_seed(0)
    model = zoo.get_model("resnet18_v1b").eval()
    buffer = io.BytesIO()
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    from safetensors.torch import save

    buffer.write(save(tensors))
    with torch.no_grad():
        y = model(torch.ones(1, 3, 64, 64))
    return buffer.getvalue(), y


def _manifest(tmp_path: Path, monkeypatch, artifacts: list[dict], tag: str = "t_in1k") -> None:
    entry = {
        "arch": "resnet18_v1b", "tag": tag, "default": False, "num_classes": 1000,
        "labels": "imagenet-1k", "license": "apache-2.0", "provenance": "test",
        "artifacts": artifacts,
    }  # fmt: skip
    path = tmp_path / "manifest" / "m.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps({"format_version": 2, "weights": [entry]}))
    monkeypatch.setenv("ZOO_MANIFESTS", str(path))


def _unhashed(name: str, url: str, fmt: str = "timm") -> dict:
    return {"format": fmt, "files": [{"name": name, "sources": [url], "unverified": "test"}]}


def _output(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(torch.ones(1, 3, 64, 64))


# ------------------------------------------------------------------ trust on first use


def test_a_bad_first_download_is_dropped_and_fetched_again(tmp_path, http_server, monkeypatch,
                                                           r18):  # fmt: skip
    data, y = r18
    url = http_server.add("/w.safetensors", data, [200])  # first: a 200 with an error text
    _manifest(tmp_path, monkeypatch, [_unhashed("w.safetensors", url)])
    with pytest.raises(zoo.weights.WeightsUnavailableError, match="dropped w.safetensors"):
        zoo.get_model("resnet18_v1b", pretrained="t_in1k")
    key = next(iter(json.loads((zoo.hub.zoo_home() / "tofu.json").read_text())), None)
    assert key is None  # the record went with the file
    assert not list(zoo.hub.cache_dir().rglob("w.safetensors"))
    model = zoo.get_model("resnet18_v1b", pretrained="t_in1k")  # downloads again
    torch.testing.assert_close(_output(model), y)
    (record,) = json.loads((zoo.hub.zoo_home() / "tofu.json").read_text()).values()
    assert "provisional" not in record  # converted and checked: confirmed
    assert [r.ok for r in verify_cache()] == [True]


def test_status_200_body_served_first_is_what_the_server_sends(http_server):
    url = http_server.add("/x", b"abc", [200])
    assert fetch(url).read_bytes() == b"status 200"  # the test server's error body


def test_plain_fetch_gets_a_provisional_record(http_server):
    path = fetch(http_server.add("/plain.bin", b"payload"))
    key = f"{path.parent.name}/{path.name}"
    assert recorded_hash(key).provisional
    (result,) = verify_cache()
    assert result.ok is None and "provisional" in result.reason and "plain.bin" in result.reason
    assert fetch(http_server.add("/plain.bin", b"payload")) == path  # reused, no request
    assert confirm_recorded(key) and not recorded_hash(key).provisional
    assert [r.ok for r in verify_cache()] == [True]


# ------------------------------------------------------------------------- fallback


def _zip(member: str, data: bytes, *, corrupt: bool = False) -> bytes:
    """A stored zip of ``data``; ``corrupt``: a deflated one whose stream is broken (zlib.error
    while inflating) -- of a small payload, deflating megabytes would only cost test time."""
    buffer = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if corrupt else zipfile.ZIP_STORED
    with zipfile.ZipFile(buffer, "w", method) as zf:
        zf.writestr(member, os.urandom(2048) * 8 if corrupt else data)
    blob = bytearray(buffer.getvalue())
    if corrupt:  # an invalid block type right after the local header
        start = 30 + len(member)
        blob[start : start + 64] = b"\xff" * 64
    return bytes(blob)


@pytest.mark.parametrize("bad", ["html", "zip", "hash"])
def test_any_artifact_failure_falls_back_to_the_next(bad, tmp_path, http_server, monkeypatch,
                                                     r18):  # fmt: skip
    data, y = r18
    if bad == "html":
        first = _unhashed("page.safetensors", http_server.add("/p", b"<html>login</html>"))
    elif bad == "zip":
        url = http_server.add("/z.zip", _zip("m.params", b"", corrupt=True))
        files = [{"name": "z.zip", "sources": [url], "member": "m.params", "sha1": "1" * 40}]
        first = {"format": "gluoncv", "files": files}
    else:
        url = http_server.add("/h.safetensors", data)
        first = {"format": "timm", "files": [
            {"name": "h.safetensors", "sources": [url], "sha256": "0" * 64}]}  # fmt: skip
    good = {"format": "timm", "files": [
        {"name": "good.safetensors", "sources": [http_server.add("/good", data)],
         "sha256": hashlib.sha256(data).hexdigest()}]}  # fmt: skip
    _manifest(tmp_path, monkeypatch, [first, good])
    torch.testing.assert_close(_output(zoo.get_model("resnet18_v1b", pretrained="t_in1k")), y)


@pytest.mark.parametrize("bad", ["mirror-html", "truncated", "zip"])
def test_a_bad_first_download_falls_back_to_the_files_next_source(bad, tmp_path, http_server,
                                                                  monkeypatch, r18):  # fmt: skip
    """In the same run: the unhashed file's bad copy is dropped, its next source is tried."""
    data, y = r18
    name, extra = "w.safetensors", {}
    if bad == "mirror-html":  # ZOO_MIRROR comes first and serves an error page with status 200
        http_server.add(f"/mirror/{name}", b"<html>mirror quota exceeded</html>")
        monkeypatch.setenv("ZOO_MIRROR", http_server.url("/mirror"))
        sources = [http_server.add("/good/w", data)]
    elif bad == "truncated":  # a short body that says it is short: nothing to resume
        sources = [http_server.add("/cut/w", data[: len(data) // 2]), http_server.add("/w", data)]
    else:
        name, extra = "w.zip", {"member": "w.safetensors"}
        sources = [http_server.add("/bad/w.zip", _zip("w.safetensors", data, corrupt=True)),
                   http_server.add("/w.zip", _zip("w.safetensors", data))]  # fmt: skip
    files = [{"name": name, "sources": sources, "unverified": "test", **extra}]
    _manifest(tmp_path, monkeypatch, [{"format": "timm", "files": files}])
    torch.testing.assert_close(_output(zoo.get_model("resnet18_v1b", pretrained="t_in1k")), y)
    (record,) = json.loads((zoo.hub.zoo_home() / "tofu.json").read_text()).values()
    assert record["url"] == sources[-1] and "provisional" not in record  # the good one, trusted
    served = len(http_server.log)
    zoo.get_model("resnet18_v1b", pretrained="t_in1k")
    assert len(http_server.log) == served  # and reused, bad copy gone for good


def test_when_every_source_is_bad_the_error_lists_each(tmp_path, http_server, monkeypatch, r18):
    data, _ = r18
    html = http_server.add("/a/w", b"<html>sign in</html>")
    cut = http_server.add("/b/w", data[:4096])
    files = [{"name": "w.safetensors", "sources": [html, cut], "unverified": "test"}]
    _manifest(tmp_path, monkeypatch, [{"format": "timm", "files": files}])
    with pytest.raises(zoo.weights.WeightsUnavailableError) as caught:
        zoo.get_model("resnet18_v1b", pretrained="t_in1k")
    lines = str(caught.value).splitlines()[1:]
    assert len(lines) == 2 and "next source" in lines[1], lines
    assert f"dropped w.safetensors from {html}" in lines[0]
    assert f"dropped w.safetensors from {cut}" in lines[1]
    assert json.loads((zoo.hub.zoo_home() / "tofu.json").read_text()) == {}
    assert [len(http_server.requests(p)) for p in ("/a/w", "/b/w")] == [1, 1]


# --------------------------------------------------------------- converted checkpoints


def test_converted_checkpoint_changed_after_writing_is_converted_again(
    tmp_path, http_server, monkeypatch, r18, caplog
):
    data, y = r18
    files = [{"name": "c.safetensors", "sources": [http_server.add("/c", data)],
              "sha256": hashlib.sha256(data).hexdigest()}]  # fmt: skip
    _manifest(tmp_path, monkeypatch, [{"format": "timm", "files": files}])
    zoo.get_model("resnet18_v1b", pretrained="t_in1k")
    out = checkpoint_path(find_entry("resnet18_v1b", "t_in1k"))
    blob = bytearray(out.read_bytes())
    for i in range(len(blob) - 4096, len(blob), 97):
        blob[i] ^= 0x7F  # same size, flipped bits in the last tensors (the classifier)
    out.write_bytes(bytes(blob))
    (out.parent / f".{out.name}.k1ll3d.tmp").write_bytes(b"half")  # an interrupted conversion
    with caplog.at_level(logging.WARNING, logger="zoo"):
        model = zoo.get_model("resnet18_v1b", pretrained="t_in1k")
    assert "changed after it was converted" in caplog.text
    torch.testing.assert_close(_output(model), y)
    assert not list(out.parent.glob(".*.tmp"))
    assert len(http_server.requests("/c")) == 1  # rebuilt from the cached download


def test_unchanged_checkpoint_is_not_rehashed(tmp_path, http_server, monkeypatch, r18):
    import zoo.weights.checkpoints as checkpoints

    data, _ = r18
    files = [{"name": "u.safetensors", "sources": [http_server.add("/u", data)],
              "sha256": hashlib.sha256(data).hexdigest()}]  # fmt: skip
    _manifest(tmp_path, monkeypatch, [{"format": "timm", "files": files}])
    zoo.get_model("resnet18_v1b", pretrained="t_in1k")
    calls = []
    monkeypatch.setattr(checkpoints, "hash_file", lambda *a, **k: calls.append(a))
    zoo.get_model("resnet18_v1b", pretrained="t_in1k")
    assert calls == []  # a stat, not a re-hash, on the warm path


def test_cache_files_get_the_umask_mode(tmp_path, http_server, monkeypatch, r18):
    data, _ = r18
    files = [{"name": "m.safetensors", "sources": [http_server.add("/m", data)],
              "sha256": hashlib.sha256(data).hexdigest()}]  # fmt: skip
    _manifest(tmp_path, monkeypatch, [{"format": "timm", "files": files}])
    zoo.get_model("resnet18_v1b", pretrained="t_in1k")
    mask = os.umask(0o022)
    os.umask(mask)
    out = checkpoint_path(find_entry("resnet18_v1b", "t_in1k"))
    for path in (out, out.with_suffix(".json"), zoo.hub.zoo_home() / "tofu.json"):
        if path.exists():
            assert path.stat().st_mode & 0o777 == 0o666 & ~mask, path


# ------------------------------------------------------------------------- symlinks


def test_mirror_symlink_out_of_the_mirror_is_refused(tmp_path, monkeypatch):
    secret = tmp_path / "private" / "id_rsa"
    secret.parent.mkdir()
    secret.write_bytes(b"-----BEGIN PRIVATE KEY-----")
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "weights.bin").symlink_to(secret)
    (mirror / "inside.bin").write_bytes(b"fine")
    (mirror / "alias.bin").symlink_to(mirror / "inside.bin")  # a link within the mirror: fine
    monkeypatch.setenv("ZOO_MIRROR", str(mirror))
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    with pytest.raises(zoo.hub.OfflineError, match="symlink .* outside"):
        fetch("https://example.invalid/weights.bin")
    assert not [p for p in zoo.hub.cache_dir().rglob("*") if p.is_file() and p.suffix != ".lock"]
    assert fetch("https://example.invalid/alias.bin").read_bytes() == b"fine"


def test_manifest_local_source_symlink_out_of_its_folder_is_refused(tmp_path, monkeypatch, r18):
    data, _ = r18
    outside = tmp_path / "elsewhere" / "w.safetensors"
    outside.parent.mkdir()
    outside.write_bytes(data)
    (tmp_path / "manifest").mkdir()
    link = tmp_path / "manifest" / "w.safetensors"
    link.symlink_to(outside)
    _manifest(tmp_path, monkeypatch, [_unhashed("w.safetensors", str(link))])
    with pytest.raises(zoo.weights.WeightsUnavailableError, match="symlink"):
        zoo.get_model("resnet18_v1b", pretrained="t_in1k")
    # named directly (not through a link), the file outside is the manifest author's choice
    _manifest(tmp_path, monkeypatch, [_unhashed("w.safetensors", str(outside))], tag="d_in1k")
    zoo.get_model("resnet18_v1b", pretrained="d_in1k")


# ------------------------------------------------------------------- the cache you can see


def test_cache_ls_and_rm_cover_checkpoints_and_members(tmp_path, http_server, monkeypatch, r18,
                                                       capsys):  # fmt: skip
    from zoo.cli import main as cli
    from zoo.weights import fetch_file
    from zoo.weights.manifest import ArtifactFile

    data, _ = r18
    url = http_server.add("/ls.safetensors", data)
    _manifest(tmp_path, monkeypatch, [_unhashed("ls.safetensors", url)])
    zoo.get_model("resnet18_v1b", pretrained="t_in1k")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("inner.params", b"member bytes")
    archive = http_server.add("/a.zip", buffer.getvalue())
    member = fetch_file(ArtifactFile(name="a.zip", sources=(archive,), member="inner.params",
                                     sha1=hashlib.sha1(b"member bytes").hexdigest()))  # fmt: skip
    assert cli(["cache", "ls", "--json"]) == 0
    listed = {(i["kind"], i["filename"]) for i in json.loads(capsys.readouterr().out)}
    key_dir = member.parent.name
    assert listed == {("download", "ls.safetensors"), ("download", "a.zip"),
                      ("checkpoint", "resnet18_v1b.t_in1k"),
                      ("member", f"{key_dir}/inner.params")}  # fmt: skip
    assert cli(["cache", "ls"]) == 0
    assert "2 download(s), 1 converted checkpoint(s), 1 extracted member(s)" in (
        capsys.readouterr().out
    )
    out = checkpoint_path(find_entry("resnet18_v1b", "t_in1k"))
    assert cli(["cache", "rm", "resnet18_v1b.t_in1k"]) == 0
    assert not out.exists() and not out.with_suffix(".json").exists()
    # forgetting a download removes what was made from it: the archive's member
    assert cli(["cache", "rm", "--forget", "a.zip"]) == 0
    assert not member.exists()
    # and the checkpoint made from a forgotten download
    zoo.get_model("resnet18_v1b", pretrained="t_in1k")
    assert out.exists()
    assert cli(["cache", "rm", "--forget", "ls.safetensors"]) == 0
    assert not out.exists()
    capsys.readouterr()
    assert cli(["cache", "ls", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_cache_verify_converts_and_loads_and_names_the_fix(tmp_path, http_server, monkeypatch,
                                                           r18, capsys):  # fmt: skip
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from zoo.cli import main as cli

    data, _ = r18
    good, bad = http_server.add("/g", data), http_server.add("/b", b"<html>sign in</html>")
    entries = [
        {"arch": "resnet18_v1b", "tag": tag, "default": False, "num_classes": 1000,
         "labels": "imagenet-1k", "license": "apache-2.0", "provenance": "test",
         "artifacts": [_unhashed(name, url)]}
        for tag, name, url in (("t_in1k", "g.safetensors", good), ("b_in1k", "b.safetensors", bad))
    ]  # fmt: skip
    (tmp_path / "m.json").write_text(json.dumps({"format_version": 2, "weights": entries}))
    monkeypatch.setenv("ZOO_MANIFESTS", str(tmp_path / "m.json"))
    g = fetch(good, filename="g.safetensors")  # plain fetches: provisional first-use records
    fetch(bad, filename="b.safetensors")

    def verify(*flags: str) -> tuple[int, dict]:
        rc = cli(["cache", "verify", "--json", *flags])
        report = json.loads(capsys.readouterr().out)
        return rc, {Path(d["path"]).name: d for d in report["downloads"] + report["checkpoints"]}

    rc, found = verify("--hashes-only")  # a hash cannot tell an error page from weights
    assert (
        rc == 0 and found["b.safetensors"]["provisional"] and found["g.safetensors"]["provisional"]
    )
    rc, found = verify()
    assert rc == 1
    assert found["g.safetensors"]["ok"] and "converts and loads" in found["g.safetensors"]["reason"]
    assert not recorded_hash(f"{g.parent.name}/g.safetensors").provisional  # confirmed
    reason = found["b.safetensors"]["reason"]
    assert (
        not found["b.safetensors"]["ok"] and "does not convert into resnet18_v1b.b_in1k" in reason
    )
    assert "`zoo cache rm --forget b.safetensors` and download again" in reason
    assert cli(["cache", "rm", "--forget", "b.safetensors"]) == 0  # the fix it names
    capsys.readouterr()
    zoo.get_model("resnet18_v1b", pretrained="t_in1k")
    out = checkpoint_path(find_entry("resnet18_v1b", "t_in1k"))
    rc, found = verify()  # the checkpoint loads: its download is not converted once more
    assert rc == 0 and found[out.name]["reason"] == "sha256 ok, loads"
    assert "converts" not in found["g.safetensors"]["reason"]

    # A converted checkpoint that hashes as recorded but does not load (a NaN written before
    # the hash was recorded) is named with the command that removes it.
    with safe_open(str(out), "pt") as f:
        metadata = f.metadata()
    state = load_file(out)
    state["fc.bias"][3] = float("nan")
    save_file(state, out, metadata=metadata)
    record = json.loads(out.with_suffix(".json").read_text())
    record.update(sha256=hashlib.sha256(out.read_bytes()).hexdigest(), size=out.stat().st_size)
    out.with_suffix(".json").write_text(json.dumps(record))
    rc, found = verify()
    assert rc == 1 and "NaN" in found[out.name]["reason"]
    assert "`zoo cache rm resnet18_v1b.t_in1k`" in found[out.name]["reason"]
    assert cli(["cache", "rm", "resnet18_v1b.t_in1k"]) == 0 and not out.exists()
