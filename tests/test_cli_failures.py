"""Every failure kind a user can meet ends in one message and a non-zero exit, never a
traceback (issue 10). Real files and a real 127.0.0.1 server, built in each test."""

from __future__ import annotations

import io
import json
import os
import struct
import tarfile
import zipfile
from pathlib import Path

import pytest
import torch
from http_server import NO_LENGTH, Slow

from zoo.cli import main as cli
from zoo.convert.mxnet_params import LIST_MAGIC, write_params


@pytest.fixture(autouse=True)
def _home(zoo_home: Path) -> Path:
    return zoo_home


def _manifest(tmp_path: Path, monkeypatch, name: str, fmt: str, *urls: str, **file) -> None:
    entry = {
        "arch": "resnet18_v1b", "tag": "bad_in1k", "default": True, "num_classes": 1000,
        "labels": "imagenet-1k", "license": "apache-2.0", "provenance": "test",
        "artifacts": [{"format": fmt, "files": [{"name": name, "sources": list(urls), **file}]}],
    }  # fmt: skip
    path = tmp_path / "manifest" / "m.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps({"format_version": 2, "weights": [entry]}))
    monkeypatch.setenv("ZOO_MANIFESTS", str(path))


def _corrupt_tar_xz(member: str) -> bytes:
    buffer = io.BytesIO()
    data = os.urandom(64 * 1024)  # incompressible: the damage lands in the member's data
    with tarfile.open(fileobj=buffer, mode="w:xz") as tf:
        info = tarfile.TarInfo(member)
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    blob = bytearray(buffer.getvalue())
    at = len(blob) * 3 // 4
    blob[at : at + 64] = b"\0" * 64  # lzma.LZMAError while reading the member
    return bytes(blob)


def _corrupt_deflate_zip(member: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(member, os.urandom(4096) * 4)
    blob = bytearray(buffer.getvalue())
    start = 30 + len(member)  # local header, then the deflate stream
    blob[start : start + 64] = b"\xff" * 64  # an invalid block type: zlib.error
    return bytes(blob)


def _pickle_with_code(path: Path) -> Path:
    class Payload:
        def __reduce__(self):
            return (os.getcwd, ())

    torch.save({"fc.weight": Payload()}, path)
    return path


def _convert(src: Path, tmp_path: Path) -> list[str]:
    return ["convert", str(src), "--model", "resnet18_v1b", "-o", str(tmp_path / "o.safetensors")]


def _failures(tmp_path: Path, http_server, monkeypatch) -> list[tuple[list[str], str]]:
    """(argv, a phrase its message must contain) for each kind of failure."""
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(struct.pack("<Q", 40) + b'{"a": {"dtype": "F32", "shape": [9, 9]')
    truncated = tmp_path / "cut.params"
    write_params(truncated, {"conv0_weight": torch.ones(4, 3, 3, 3)})
    truncated.write_bytes(truncated.read_bytes()[:60])
    not_image = tmp_path / "notes.jpg"
    not_image.write_text("not a picture")
    pickle = _pickle_with_code(tmp_path / "evil.pth")
    flat = tmp_path / "flat.tflite"
    flat.write_bytes(b"\x00" * 64)
    many = tmp_path / "many.params"  # declares millions of arrays: refused before reading
    many.write_bytes(struct.pack("<QQQ", LIST_MAGIC, 0, 5_000_000) + b"\0" * 64)
    dims = tmp_path / "dims.params"
    write_params(dims, {"w": torch.ones(2, 4)})
    blob = bytearray(dims.read_bytes())
    struct.pack_into("<2q", blob, 24 + 12, -3, 4)  # a negative dimension
    dims.write_bytes(bytes(blob))
    return [
        (_convert(garbage, tmp_path), "garbage.safetensors"),
        (_convert(pickle, tmp_path), "never unpickles"),
        (_convert(truncated, tmp_path), "truncated"),
        (_convert(flat, tmp_path), "tflite"),
        (_convert(many, tmp_path), "5000000 arrays"),
        (_convert(dims, tmp_path), "dimensions must be positive"),
        (["predict", str(not_image), "--model", "resnet18_v1b", "--pretrained", str(garbage)],
         "garbage.safetensors"),
        (["predict", str(tmp_path), "--model", "nosuchnet"], "zoo list"),
        (["eval", str(tmp_path / "missing"), "--model", "resnet18_v1b", "--pretrained",
          str(garbage)], "garbage.safetensors"),
        (["download", "resnet18_v1b.none_such"], "tags"),
    ]  # fmt: skip


def _assert_one_message(rc: int, err: str, phrase: str) -> None:
    assert rc != 0
    assert "Traceback" not in err and "weights_only" not in err
    errors = [line for line in err.splitlines() if line.startswith("zoo ")]
    assert len(errors) == 1, err
    assert phrase in err, err


def test_every_failure_kind_is_one_message(tmp_path, http_server, monkeypatch, capsys):
    for argv, phrase in _failures(tmp_path, http_server, monkeypatch):
        rc = cli(argv)
        _assert_one_message(rc, capsys.readouterr().err, phrase)


@pytest.mark.parametrize(
    ("kind", "phrase"),
    [("zip", "cannot"), ("xz", "Corrupt input data"), ("html", "artifact 1"),
     ("sources", "next source"), ("deep", "nested"), ("404", "HTTP 404"),
     ("nolength", "ZOO_MAX_DOWNLOAD"), ("deadline", "deadline"), ("symlink", "symlink")],
)  # fmt: skip
def test_download_failures_are_one_message(
    kind, phrase, tmp_path, http_server, monkeypatch, capsys
):
    if kind == "zip":
        url = http_server.add("/w.zip", _corrupt_deflate_zip("w.params"))
        _manifest(tmp_path, monkeypatch, "w.zip", "gluoncv", url, member="w.params", sha1="0" * 40)
    elif kind == "xz":
        url = http_server.add("/w.tar.xz", _corrupt_tar_xz("w.params"))
        _manifest(tmp_path, monkeypatch, "w.tar.xz", "gluoncv", url, member="w.params",
                  sha1="0" * 40)  # fmt: skip
    elif kind == "html":
        url = http_server.add("/w.safetensors", b"<html>rate limited</html>")
        _manifest(tmp_path, monkeypatch, "w.safetensors", "timm", url, unverified="test")
    elif kind == "sources":  # every source bad: each dropped, each reason listed
        urls = [http_server.add(f"/{i}/w.safetensors", b"<html>%d</html>" % i) for i in (1, 2)]
        _manifest(tmp_path, monkeypatch, "w.safetensors", "timm", *urls, unverified="test")
    elif kind == "nolength":
        monkeypatch.setenv("ZOO_MAX_DOWNLOAD", "1000")
        url = http_server.add("/big.safetensors", b"z" * 5000, default=NO_LENGTH)
        _manifest(tmp_path, monkeypatch, "big.safetensors", "timm", url, unverified="test")
    elif kind == "deadline":  # ZOO_DEADLINE bounds the whole command, slow drip included
        monkeypatch.setenv("ZOO_DEADLINE", "1")
        url = http_server.add("/d.safetensors", b"d" * 65536, default=Slow(64, 0.02))
        _manifest(tmp_path, monkeypatch, "d.safetensors", "timm", url, unverified="test")
    elif kind == "symlink":  # a manifest's local source linking out of its folder
        secret = tmp_path / "secret.safetensors"
        secret.write_bytes(b"private")
        link = tmp_path / "manifest" / "w.safetensors"
        link.parent.mkdir()
        link.symlink_to(secret)
        _manifest(tmp_path, monkeypatch, "w.safetensors", "timm", str(link), unverified="t")
    elif kind == "deep":
        path = tmp_path / "m.json"
        path.write_text('{"format_version": 2, "weights": ' + "[" * 50_000 + "]" * 50_000 + "}")
        monkeypatch.setenv("ZOO_MANIFESTS", str(path))
    else:
        url = http_server.add("/gone.safetensors", b"", default=404)
        _manifest(tmp_path, monkeypatch, "gone.safetensors", "timm", url, unverified="test")
    rc = cli(["download", "resnet18_v1b.bad_in1k"])
    _assert_one_message(rc, capsys.readouterr().err, phrase)


def test_corrupt_tofu_record_is_one_message(zoo_home, capsys):
    zoo_home.mkdir(parents=True, exist_ok=True)
    (zoo_home / "tofu.json").write_text("{not json")
    _assert_one_message(cli(["cache", "verify"]), capsys.readouterr().err, "tofu.json")


def test_debug_shows_the_traceback(tmp_path, monkeypatch):
    argv = _convert(tmp_path / "missing.safetensors", tmp_path)
    assert cli(argv) == 2
    with pytest.raises(FileNotFoundError):  # main() re-raises: Python prints the traceback
        cli(["--debug", *argv])
    monkeypatch.setenv("ZOO_DEBUG", "1")
    with pytest.raises(FileNotFoundError):
        cli(argv)
