"""Issue 10: every reader and the fetcher stay within bounds a hostile file or server cannot
move: memory (TFLite buffers, .params counts), disk (bodies, archive members) and time
(ZOO_DEADLINE over slow bodies and lock waits). Files and servers are built in each test."""

from __future__ import annotations

import hashlib
import io
import struct
import time
import tracemalloc
import zipfile
from pathlib import Path

import filelock
import pytest
import torch
from conftest import SHARED
from http_server import NO_LENGTH, Slow

from zoo.convert import convert
from zoo.convert.mxnet_params import LIST_MAGIC, V2, MXNetFormatError, read_params, write_params
from zoo.convert.tflite import TFLiteFormatError, read_tflite
from zoo.convert.tflite.flatbuffer import Buffer, Table
from zoo.convert.tflite.schema import BufferField, ModelField
from zoo.hub import (
    AllSourcesFailedError,
    DeadlineExceededError,
    UnsafeArchiveError,
    cache_dir,
    fetch,
)
from zoo.weights import fetch_file
from zoo.weights.manifest import ArtifactFile

TFLITE_025 = SHARED / "weights" / "tflite_mobilenet" / "mobilenet_v1_0.25_128_quant.tflite"


@pytest.fixture(autouse=True)
def _home(zoo_home: Path) -> Path:
    return zoo_home


# ------------------------------------------------------------------------------------ TFLite


def _alias_every_buffer(data: bytes) -> bytes:
    """The real file with every entry of Model.buffers pointing at its largest buffer table."""
    buf = Buffer(data, "x")
    model = Table(buf, buf.unpack("I", 0, "root"), "Model")
    start, length = model._vector(ModelField.BUFFERS, 4)
    targets = [start + 4 * i + buf.unpack("I", start + 4 * i, "b") for i in range(length)]
    biggest = max(targets, key=lambda pos: len(Table(buf, pos, "Buffer").view(BufferField.DATA)))
    out = bytearray(data)
    for i in range(length):
        struct.pack_into("<I", out, start + 4 * i, biggest - (start + 4 * i))
    return bytes(out)


def test_tflite_buffer_referenced_many_times_is_not_copied_per_reference(tmp_path):
    hostile = tmp_path / "aliased.tflite"
    hostile.write_bytes(_alias_every_buffer(TFLITE_025.read_bytes()))
    tracemalloc.start()
    try:
        model = read_tflite(hostile)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    biggest = max(len(b) for b in model.buffers)
    assert len(model.buffers) > 50 and all(len(b) == biggest for b in model.buffers)
    # one copy per reference would be len(buffers) * biggest (> 10 MB); views cost nothing
    assert peak < 3 * hostile.stat().st_size
    with pytest.raises(TFLiteFormatError, match="reference .* bytes of constants"):
        convert(hostile, model="mobilenet0_25_tf")


# ------------------------------------------------------------------------------------ .params


def test_params_declaring_millions_of_arrays_fails_before_reading_them(tmp_path):
    path = tmp_path / "many.params"
    path.write_bytes(struct.pack("<QQQ", LIST_MAGIC, 0, 5_000_000) + b"\0" * 64)
    with pytest.raises(MXNetFormatError, match="declares 5000000 arrays"):
        read_params(path)
    empties = 150_000  # every one a real 4-byte empty array: still more than any network has
    path.write_bytes(struct.pack("<QQQ", LIST_MAGIC, 0, empties) + b"\0" * (4 * empties + 8))
    start = time.perf_counter()
    with pytest.raises(MXNetFormatError, match="at most 100000"):
        read_params(path)
    assert time.perf_counter() - start < 2


@pytest.mark.parametrize("shape", [(-3, 4), (0, 4), (2, -1)])
def test_params_non_positive_dimensions_are_a_format_error(tmp_path, shape):
    path = tmp_path / "dims.params"
    write_params(path, {"w": torch.ones(2, 4)})
    blob = bytearray(path.read_bytes())
    struct.pack_into("<2q", blob, 24 + 12, *shape)  # after list header, magic, stype, ndim
    assert struct.unpack_from("<I", blob, 24)[0] == V2
    path.write_bytes(bytes(blob))
    with pytest.raises(MXNetFormatError, match="dimensions must be positive"):
        read_params(path)


# ------------------------------------------------------------------------------- HTTP bodies


def test_body_without_declared_size_is_capped(http_server, monkeypatch):
    data = b"z" * 5000
    monkeypatch.setenv("ZOO_MAX_DOWNLOAD", "1000")
    for behaviour in ("ok", NO_LENGTH):  # announced by Content-Length, or only while reading
        url = http_server.add(f"/{behaviour}/big.bin", data, default=behaviour)
        with pytest.raises(AllSourcesFailedError, match="ZOO_MAX_DOWNLOAD"):
            fetch(url, filename=f"{behaviour}big.bin")
    kept = [p.name for p in cache_dir().rglob("*") if p.is_file() and p.suffix != ".lock"]
    assert kept == []  # nothing kept, not even a partial file
    # the manifest's size raises the cap for that file
    url = http_server.add("/sized/big.bin", data, default=NO_LENGTH)
    path = fetch(url, size=5000, sha256=hashlib.sha256(data).hexdigest())
    assert path.read_bytes() == data


def test_deadline_bounds_a_slow_drip(http_server, monkeypatch):
    data = b"d" * (256 * 1024)
    url = http_server.add("/drip.bin", data, default=Slow(chunk_size=64, delay=0.02))
    start = time.perf_counter()
    with pytest.raises(DeadlineExceededError, match="deadline"):
        fetch(url, sha256=hashlib.sha256(data).hexdigest(), deadline=1.0)
    assert time.perf_counter() - start < 4  # a 64 KiB read would have taken ~20 s


def test_deadline_bounds_waiting_for_another_conversion(tmp_path, http_server, monkeypatch):
    import json

    import zoo
    import zoo.weights.conversion
    from zoo.weights import checkpoint_path, find_entry

    entry = {
        "arch": "resnet18_v1b", "tag": "wait_in1k", "default": False, "num_classes": 1000,
        "labels": "imagenet-1k", "license": "apache-2.0", "provenance": "test",
        "artifacts": [{"format": "timm", "files": [
            {"name": "w.safetensors", "sources": [http_server.add("/w", b"x")], "unverified": "t"}
        ]}],
    }  # fmt: skip
    (tmp_path / "m.json").write_text(json.dumps({"format_version": 2, "weights": [entry]}))
    monkeypatch.setenv("ZOO_MANIFESTS", str(tmp_path / "m.json"))
    monkeypatch.setenv("ZOO_DEADLINE", "0.5")
    out = checkpoint_path(find_entry("resnet18_v1b", "wait_in1k"))
    out.parent.mkdir(parents=True)
    zoo.weights.conversion.require_registered(find_entry("resnet18_v1b", "wait_in1k"))
    # (the model families are imported now: what is timed below is the wait alone)
    with filelock.FileLock(str(out) + ".lock"):  # another process converting
        start = time.perf_counter()
        with pytest.raises(DeadlineExceededError, match="another process is converting"):
            zoo.get_model("resnet18_v1b", pretrained="wait_in1k")
        assert time.perf_counter() - start < 3
    assert http_server.log == []


def test_deadline_bounds_the_whole_weights_request(tmp_path, http_server, monkeypatch):
    """ZOO_DEADLINE is one budget for every source and artifact, not a fresh one for each."""
    import json

    import zoo

    drip = Slow(chunk_size=64, delay=0.02)
    urls = [http_server.add(f"/{i}", b"s" * 65536, default=drip) for i in (1, 2)]
    artifacts = [
        {"format": "timm", "files": [{"name": f"{i}.safetensors", "sources": [url],
                                      "unverified": "t"}]}
        for i, url in enumerate(urls, start=1)
    ]  # fmt: skip
    entry = {
        "arch": "resnet18_v1b", "tag": "slow_in1k", "default": False, "num_classes": 1000,
        "labels": "imagenet-1k", "license": "apache-2.0", "provenance": "test",
        "artifacts": artifacts,
    }  # fmt: skip
    (tmp_path / "m.json").write_text(json.dumps({"format_version": 2, "weights": [entry]}))
    monkeypatch.setenv("ZOO_MANIFESTS", str(tmp_path / "m.json"))
    monkeypatch.setenv("ZOO_DEADLINE", "1")
    zoo.get_model("resnet18_v1b")  # the model families imported before the clock starts
    start = time.perf_counter()
    with pytest.raises(DeadlineExceededError):
        zoo.get_model("resnet18_v1b", pretrained="slow_in1k")
    assert time.perf_counter() - start < 6  # each body alone would drip for ~20 s
    assert http_server.requests("/2") == []  # no fresh budget for the next artifact


# ---------------------------------------------------------------------------------- archives


def test_archive_member_is_bounded_by_the_manifest_size(http_server, zoo_home):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("m.params", b"\0" * (8 << 20))  # 8 MiB of zeros: a few KiB zipped
    blob = buffer.getvalue()
    assert len(blob) < 64 * 1024
    url = http_server.add("/bomb.zip", blob)
    file = ArtifactFile(name="bomb.zip", sources=(url,), sha1="0" * 40, size=1000,
                        member="m.params")  # fmt: skip
    with pytest.raises(UnsafeArchiveError, match="limit is 1000"):
        fetch_file(file)
    assert not list((zoo_home / "extracted").rglob("m.params*"))
