"""zoo.hub: downloader robustness against a real local HTTP server (requests is never mocked)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import pytest

try:
    from http_server import CORRUPT, IGNORE_RANGE, TRUNCATE, HTTPFileServer, Redirect, Slow
except ImportError:  # tests/ became a package
    from tests.http_server import (
        CORRUPT,
        IGNORE_RANGE,
        TRUNCATE,
        HTTPFileServer,
        Redirect,
        Slow,
    )

from zoo.hub import (
    AllSourcesFailedError,
    ArchiveError,
    DeadlineExceededError,
    HashMismatchError,
    OfflineError,
    UnsafeArchiveError,
    cache_dir,
    cache_entries,
    cache_key,
    extract_all,
    extract_member,
    fetch,
    is_offline,
    recorded_hash,
    remove_cached,
    verify_cache,
    verify_file,
)

ROOT = Path(__file__).resolve().parents[1]
PAYLOAD = bytes(range(256)) * 1024  # 256 KiB: several 64 KiB chunks
PAYLOAD_SHA256 = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture(autouse=True)
def zoo_env(zoo_home: Path) -> Path:
    return zoo_home


def final_path(filename: str, *, sha256: str | None = None, source: str = "") -> Path:
    return cache_dir() / cache_key(filename, source=source, sha256=sha256)


def cache_files() -> list[Path]:
    root = cache_dir()
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# Child processes load zoo.hub without running zoo/__init__.py (which imports torch and the
# model registry): the downloader must not depend on either, and 8 torch imports on 2 cores
# would dominate the test time.
CHILD_PRELUDE = f"""
import sys, types
_pkg = types.ModuleType("zoo")
_pkg.__path__ = [{str(ROOT / "zoo")!r}]
sys.modules["zoo"] = _pkg
from zoo.hub import fetch
"""


def child(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD_PRELUDE + code, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )


# --------------------------------------------------------------------------- 1-3: resume/retry


def test_truncated_then_503_then_ok_resumes(http_server: HTTPFileServer) -> None:
    url = http_server.add("/w/model.bin", PAYLOAD, [TRUNCATE, 503])
    path = fetch(url, sha256=PAYLOAD_SHA256)
    assert path.read_bytes() == PAYLOAD
    assert path == final_path("model.bin", sha256=PAYLOAD_SHA256)
    log = http_server.requests("/w/model.bin")
    assert [r.status for r in log] == [200, 503, 206]
    assert log[0].range is None and log[0].bytes_sent == len(PAYLOAD) // 2
    offset = int(log[1].range.removeprefix("bytes=").rstrip("-"))
    assert 0 < offset <= len(PAYLOAD) // 2
    assert log[2].range == f"bytes={offset}-"
    assert not path.with_name("model.bin.incomplete").exists()


def test_cached_file_needs_no_network(http_server: HTTPFileServer) -> None:
    url = http_server.add("/w/model.bin", PAYLOAD)
    first = fetch(url, sha256=PAYLOAD_SHA256[:8], size=len(PAYLOAD))
    http_server.remove("/w/model.bin")
    assert fetch(url, sha256=PAYLOAD_SHA256[:8], size=len(PAYLOAD)) == first
    assert len(http_server.log) == 1


def test_always_corrupt_raises_and_leaves_nothing(http_server: HTTPFileServer) -> None:
    url = http_server.add("/w/bad.bin", PAYLOAD, default=CORRUPT)
    with pytest.raises(HashMismatchError) as info:
        fetch(url, sha256=PAYLOAD_SHA256)
    message = str(info.value)
    assert url in message and PAYLOAD_SHA256 in message
    actual = hashlib.sha256(bytes(b ^ 0xFF for b in PAYLOAD)).hexdigest()
    assert actual in message and info.value.actual == actual
    assert info.value.url == url and info.value.algorithm == "sha256"
    assert [p for p in cache_files() if not p.name.endswith(".lock")] == []


def test_wrong_content_length_fails_before_downloading(http_server: HTTPFileServer) -> None:
    url = http_server.add("/w/big.bin", PAYLOAD)
    with pytest.raises(HashMismatchError, match="size mismatch"):
        fetch(url, sha256=PAYLOAD_SHA256, size=len(PAYLOAD) + 1)
    assert [p for p in cache_files() if not p.name.endswith(".lock")] == []


def test_stale_partial_from_other_bytes_restarts_from_zero(http_server: HTTPFileServer) -> None:
    url = http_server.add("/w/model.bin", PAYLOAD)
    final = final_path("model.bin", sha256=PAYLOAD_SHA256)
    final.parent.mkdir(parents=True)
    final.with_name("model.bin.incomplete").write_bytes(b"\0" * 1000)  # not our file's bytes
    assert fetch(url, sha256=PAYLOAD_SHA256).read_bytes() == PAYLOAD
    log = http_server.requests("/w/model.bin")
    assert [(r.range, r.status) for r in log] == [("bytes=1000-", 206), (None, 200)]


def test_server_ignoring_range_restarts_cleanly(http_server: HTTPFileServer) -> None:
    url = http_server.add("/w/model.bin", PAYLOAD, default=IGNORE_RANGE)
    final = final_path("model.bin", sha256=PAYLOAD_SHA256)
    final.parent.mkdir(parents=True)
    final.with_name("model.bin.incomplete").write_bytes(PAYLOAD[:5000])
    assert fetch(url, sha256=PAYLOAD_SHA256).read_bytes() == PAYLOAD
    assert [(r.range, r.status) for r in http_server.requests("/w/model.bin")] == [
        ("bytes=5000-", 200)
    ]


def test_partial_longer_than_file_gets_416_and_restarts(http_server: HTTPFileServer) -> None:
    url = http_server.add("/w/model.bin", PAYLOAD)
    final = final_path("model.bin", sha256=PAYLOAD_SHA256)
    final.parent.mkdir(parents=True)
    final.with_name("model.bin.incomplete").write_bytes(PAYLOAD + b"junk")
    assert fetch(url, sha256=PAYLOAD_SHA256).read_bytes() == PAYLOAD
    assert [(r.range, r.status) for r in http_server.requests("/w/model.bin")] == [
        (f"bytes={len(PAYLOAD) + 4}-", 416),
        (None, 200),
    ]


def test_killed_client_resumes_with_range(http_server: HTTPFileServer) -> None:
    data = os.urandom(1 << 20)
    sha = hashlib.sha256(data).hexdigest()
    url = http_server.add("/slow/k.bin", data, [Slow(chunk_size=16 * 1024, delay=0.02)])
    part = final_path("k.bin", sha256=sha).with_name("k.bin.incomplete")
    proc = child(f"fetch({url!r}, sha256={sha!r}, quiet=True)")
    try:
        deadline = time.monotonic() + 20
        while not (part.exists() and part.stat().st_size >= 128 * 1024):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "child never wrote bytes"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    have = part.stat().st_size
    assert 0 < have < len(data)
    path = fetch(url, sha256=sha)
    verify_file(path, sha256=sha, size=len(data))
    last = http_server.requests("/slow/k.bin")[-1]
    assert (last.range, last.status) == (f"bytes={have}-", 206)
    assert last.bytes_sent == len(data) - have


def test_hub_does_not_import_torch() -> None:
    code = "import zoo.hub; print('torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", CHILD_PRELUDE + code],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert out.strip() == "False"


# --------------------------------------------------------------------------- 4-5: locking


def test_eight_processes_download_once(http_server: HTTPFileServer, tmp_path: Path) -> None:
    data = os.urandom(512 * 1024)
    sha = hashlib.sha256(data).hexdigest()
    url = http_server.add("/w/shared.bin", data, [Slow(chunk_size=32 * 1024, delay=0.02)])
    sync = tmp_path / "sync"
    sync.mkdir()
    code = """
import pathlib, time
sync = pathlib.Path(sys.argv[1])
(sync / ("ready-" + sys.argv[2])).touch()
while not (sync / "go").exists():
    time.sleep(0.005)
print(fetch(sys.argv[3], sha256=sys.argv[4], quiet=True))
"""
    procs = [child(code, str(sync), str(i), url, sha) for i in range(8)]
    try:
        deadline = time.monotonic() + 30
        while len(list(sync.glob("ready-*"))) < 8:
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
            time.sleep(0.01)
        (sync / "go").touch()
        results = [p.communicate(timeout=30) for p in procs]
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert [p.returncode for p in procs] == [0] * 8, [err for _, err in results]
    paths = {out.strip() for out, _ in results}
    assert paths == {str(final_path("shared.bin", sha256=sha))}
    assert len(http_server.requests("/w/shared.bin", method="GET")) == 1
    verify_file(paths.pop(), sha256=sha)


def test_hand_made_stale_lock_does_not_hang(http_server: HTTPFileServer) -> None:
    url = http_server.add("/w/model.bin", PAYLOAD)
    final = final_path("model.bin", sha256=PAYLOAD_SHA256)
    final.parent.mkdir(parents=True)
    final.with_name("model.bin.lock").write_text("12345 stale\n")
    start = time.monotonic()
    assert fetch(url, sha256=PAYLOAD_SHA256, deadline=15).read_bytes() == PAYLOAD
    assert time.monotonic() - start < 5


def test_lock_of_killed_holder_is_released(http_server: HTTPFileServer) -> None:
    url = http_server.add("/w/model.bin", PAYLOAD)
    final = final_path("model.bin", sha256=PAYLOAD_SHA256)
    final.parent.mkdir(parents=True)
    lock = final.with_name("model.bin.lock")
    holder = child(f"""
import filelock, time
held = filelock.FileLock({str(lock)!r})  # keep a reference: GC would release it
held.acquire()
print("locked", flush=True)
time.sleep(60)
""")
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        start = time.monotonic()
        with pytest.raises(DeadlineExceededError, match="another process"):
            fetch(url, sha256=PAYLOAD_SHA256, deadline=0.5)  # the lock is real while held
        assert 0.4 < time.monotonic() - start < 3
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
    finally:
        holder.kill()
        holder.wait()
    assert lock.exists()  # left behind by the dead holder
    start = time.monotonic()
    assert fetch(url, sha256=PAYLOAD_SHA256, deadline=15).read_bytes() == PAYLOAD
    assert time.monotonic() - start < 5


# --------------------------------------------------------------------------- 6-7: offline, mirrors


def test_offline_empty_cache_fails_fast_without_requests(
    http_server: HTTPFileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    url = http_server.add("/w/model.bin", PAYLOAD)
    start = time.monotonic()
    with pytest.raises(OfflineError) as info:
        fetch(url, sha256=PAYLOAD_SHA256)
    assert time.monotonic() - start < 1
    message = str(info.value)
    assert "model.bin" in message and PAYLOAD_SHA256 in message and "ZOO_MIRROR" in message
    assert str(final_path("model.bin", sha256=PAYLOAD_SHA256)) in message
    assert http_server.log == []


@pytest.mark.parametrize("value", ["1", "true", "YES", "on"])
def test_is_offline_truthy_values(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    assert not is_offline()
    monkeypatch.setenv("ZOO_OFFLINE", value)
    assert is_offline()
    monkeypatch.delenv("ZOO_OFFLINE")
    monkeypatch.setenv("HF_HUB_OFFLINE", value)
    assert is_offline()


def test_offline_local_sources_still_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    src = tmp_path / "src" / "local.bin"
    src.parent.mkdir()
    src.write_bytes(PAYLOAD)
    path = fetch(src.as_uri(), sha256=PAYLOAD_SHA256)
    assert path.read_bytes() == PAYLOAD and path.parent.parent == cache_dir()
    assert fetch(str(src), sha256=PAYLOAD_SHA256) == path


def test_mirror_directory_is_used_read_only(
    http_server: HTTPFileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "model.bin").write_bytes(PAYLOAD)
    monkeypatch.setenv("ZOO_MIRROR", str(mirror))
    monkeypatch.setenv("ZOO_OFFLINE", "1")  # mirror directories work offline too
    url = http_server.add("/w/model.bin", PAYLOAD)
    path = fetch(url, sha256=PAYLOAD_SHA256)
    assert path.read_bytes() == PAYLOAD and cache_dir() in path.parents
    assert http_server.log == []
    assert sorted(p.name for p in mirror.iterdir()) == ["model.bin"]


def test_corrupt_mirror_falls_back_to_origin(
    http_server: HTTPFileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "model.bin").write_bytes(PAYLOAD[::-1])
    monkeypatch.setenv("ZOO_MIRROR", str(mirror))
    url = http_server.add("/w/model.bin", PAYLOAD)
    assert fetch(url, sha256=PAYLOAD_SHA256).read_bytes() == PAYLOAD
    assert len(http_server.requests("/w/model.bin")) == 1


def test_http_mirror_prefix_tried_first(
    http_server: HTTPFileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    http_server.add("/mirror/model.bin", PAYLOAD)
    origin = http_server.add("/origin/model.bin", PAYLOAD, default=503)
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    # Several mirrors, os.pathsep-separated, URL with a port included.
    monkeypatch.setenv("ZOO_MIRROR", f"{empty_dir}{os.pathsep}{http_server.url('/mirror/')}")
    assert fetch(origin, sha256=PAYLOAD_SHA256).read_bytes() == PAYLOAD
    assert [r.path for r in http_server.log] == ["/mirror/model.bin"]


# --------------------------------------------------------------------------- 8-10: arguments


@pytest.mark.parametrize(
    "bad",
    [
        "../../x",
        "/etc/passwd",
        "a/b",
        "",
        "..",
        "a\\b",
        ".hidden",
        "x\0y",
        "x.bin.incomplete",
        "x.lock",
        "a..b",
    ],
)
def test_path_traversal_filenames_refused(http_server: HTTPFileServer, bad: str) -> None:
    with pytest.raises(ValueError, match="path traversal"):
        fetch(http_server.url("/w/model.bin"), sha256=PAYLOAD_SHA256, filename=bad)
    assert http_server.log == []


def test_path_traversal_from_url_refused(http_server: HTTPFileServer) -> None:
    with pytest.raises(ValueError, match="path traversal"):
        fetch(http_server.url("/w/a%2F..%2F..%2Fx"), sha256=PAYLOAD_SHA256)
    assert http_server.log == []


def test_hash_forms(http_server: HTTPFileServer) -> None:
    url = http_server.add("/w/model.bin", PAYLOAD)
    assert fetch(url, sha256=PAYLOAD_SHA256[:8].upper()).read_bytes() == PAYLOAD
    with pytest.raises(ValueError, match="too short"):
        fetch(url, sha256=PAYLOAD_SHA256[:7])
    with pytest.raises(ValueError, match="hexadecimal"):
        fetch(url, sha256="z" * 64)
    sha1 = hashlib.sha1(PAYLOAD).hexdigest()
    with pytest.raises(ValueError, match="40-digit"):
        fetch(url, sha1=sha1[:8])
    assert fetch(url, sha1=sha1, filename="other.bin").read_bytes() == PAYLOAD
    with pytest.raises(HashMismatchError, match="sha1 mismatch"):
        fetch(url, sha1="0" * 40)
    both = fetch(url, sha256=PAYLOAD_SHA256, sha1=sha1)
    assert both.parent.name == f"sha256-{PAYLOAD_SHA256}"


def test_same_basename_different_files_do_not_collide(http_server: HTTPFileServer) -> None:
    other = PAYLOAD[::-1]
    a = fetch(http_server.add("/a/model.safetensors", PAYLOAD), sha256=PAYLOAD_SHA256)
    b = fetch(
        http_server.add("/b/model.safetensors", other), sha256=hashlib.sha256(other).hexdigest()
    )
    c = fetch(http_server.url("/a/model.safetensors"))  # no hash: keyed by URL
    assert len({a, b, c}) == 3
    assert a.read_bytes() == PAYLOAD and b.read_bytes() == other


def test_refused_source_moves_on_at_once(
    http_server: HTTPFileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ZOO_RETRY_BACKOFF", "5")  # any retry of the refused source would show
    refused = f"http://127.0.0.1:{free_port()}/model.bin"
    good = http_server.add("/w/model.bin", PAYLOAD)
    start = time.monotonic()
    assert fetch([refused, good], sha256=PAYLOAD_SHA256).read_bytes() == PAYLOAD
    assert time.monotonic() - start < 2


def test_all_sources_failed_lists_every_reason(
    http_server: HTTPFileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ZOO_RETRIES", "2")
    refused = f"http://127.0.0.1:{free_port()}/model.bin"
    missing = http_server.url("/missing/model.bin")
    flaky = http_server.add("/flaky/model.bin", PAYLOAD, default=503)
    with pytest.raises(AllSourcesFailedError) as info:
        fetch([refused, missing, flaky], sha256=PAYLOAD_SHA256)
    message = str(info.value)
    assert f"{refused}: connection refused" in message
    assert f"{missing}: HTTP 404" in message
    assert f"{flaky}: HTTP 503 (gave up after 3 attempts)" in message
    assert [src for src, _ in info.value.attempts] == [refused, missing, flaky]
    assert len(http_server.requests("/missing/model.bin")) == 1  # 4xx: no retries
    assert len(http_server.requests("/flaky/model.bin")) == 3


def test_deadline_bounds_retries(
    http_server: HTTPFileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ZOO_RETRY_BACKOFF", "0.2")
    monkeypatch.setenv("ZOO_RETRIES", "50")
    url = http_server.add("/w/model.bin", PAYLOAD, default=503)
    start = time.monotonic()
    with pytest.raises(DeadlineExceededError):
        fetch(url, sha256=PAYLOAD_SHA256, deadline=1.0)
    assert time.monotonic() - start < 2


def test_redirects_are_followed(http_server: HTTPFileServer) -> None:
    http_server.add("/cdn/blob", PAYLOAD)
    url = http_server.add("/w/model.bin", b"", default=Redirect("/cdn/blob"))
    assert fetch(url, sha256=PAYLOAD_SHA256).read_bytes() == PAYLOAD


# --------------------------------------------------------------------------- 11-12: TOFU, hf://


def test_trust_on_first_use(http_server: HTTPFileServer) -> None:
    url = http_server.add("/w/tofu.bin", PAYLOAD)
    path = fetch(url)
    key = cache_key("tofu.bin", source=url)
    record = recorded_hash(key)
    assert record is not None
    assert (record.sha256, record.size, record.url) == (PAYLOAD_SHA256, len(PAYLOAD), url)
    assert [e.sha256 for e in cache_entries()] == [PAYLOAD_SHA256]

    assert remove_cached("tofu.bin") == [path]
    http_server.add("/w/tofu.bin", b"different bytes")
    with pytest.raises(HashMismatchError) as info:
        fetch(url)
    assert "first use" in str(info.value) and record.recorded_at in str(info.value)
    assert not path.exists()

    assert run_cli("cache", "rm", "--forget", "tofu.bin") == 0  # accept the new upstream file
    assert recorded_hash(key) is None
    assert fetch(url).read_bytes() == b"different bytes"
    assert recorded_hash(key).sha256 == hashlib.sha256(b"different bytes").hexdigest()


def test_hf_source_uses_hf_endpoint(
    http_server: HTTPFileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", http_server.base_url)
    http_server.add("/org/repo/resolve/v1.0/sub/file.bin", PAYLOAD)
    http_server.add("/org/repo/resolve/main/file.bin", PAYLOAD[::-1])
    path = fetch("hf://org/repo@v1.0/sub/file.bin", sha256=PAYLOAD_SHA256)
    assert path.name == "file.bin" and path.read_bytes() == PAYLOAD
    main = fetch("hf://org/repo/file.bin", sha256=hashlib.sha256(PAYLOAD[::-1]).hexdigest())
    assert main.read_bytes() == PAYLOAD[::-1]
    assert [r.path for r in http_server.log] == [
        "/org/repo/resolve/v1.0/sub/file.bin",
        "/org/repo/resolve/main/file.bin",
    ]
    with pytest.raises(ValueError, match="hf://"):
        fetch("hf://org/repo@v1.0/../x.bin", sha256=PAYLOAD_SHA256, filename="x.bin")


# --------------------------------------------------------------------------- 13: archives


def make_zip(members: dict[str, bytes], symlink: str | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = 0o120777 << 16  # S_IFLNK
            zf.writestr(info, "/etc/passwd")
    return buf.getvalue()


def make_tar(path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for m in members:
            if isinstance(m, tarfile.TarInfo):
                tf.addfile(m)
            else:
                info = tarfile.TarInfo(m[0])
                info.size = len(m[1])
                tf.addfile(info, io.BytesIO(m[1]))
    return path


def test_zip_member_extraction_then_verify(http_server: HTTPFileServer, tmp_path: Path) -> None:
    params = os.urandom(10_000)
    zipped = make_zip({"resnet.params": params, "README": b"hi"})
    url = http_server.add("/gluon/resnet.zip", zipped)
    archive = fetch(url, sha256=hashlib.sha256(zipped).hexdigest())
    dest = extract_member(archive, "resnet.params", tmp_path / "out" / "resnet.params")
    verify_file(dest, sha1=hashlib.sha1(params).hexdigest())  # GluonCV: sha1 of the member
    assert dest.read_bytes() == params
    with pytest.raises(ArchiveError, match="no member"):
        extract_member(archive, "nope.params", tmp_path / "nope")
    with pytest.raises(UnsafeArchiveError, match="limit"):
        extract_member(archive, "resnet.params", tmp_path / "small", max_bytes=1000)
    assert not (tmp_path / "small").exists()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["resnet.params"]


@pytest.mark.parametrize(
    "name", ["../evil.txt", "a/../../evil.txt", "/abs/evil.txt", "C:/evil.txt", "a\\..\\evil.txt"]
)
def test_zip_slip_refused(tmp_path: Path, name: str) -> None:
    archive = tmp_path / "a.zip"
    archive.write_bytes(make_zip({"ok.txt": b"fine", name: b"evil"}))
    dest = tmp_path / "dest"
    with pytest.raises(UnsafeArchiveError):
        extract_all(archive, dest)
    assert list(dest.iterdir()) == [] and not (tmp_path / "evil.txt").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging


def test_zip_symlink_refused(tmp_path: Path) -> None:
    archive = tmp_path / "a.zip"
    archive.write_bytes(make_zip({"ok.txt": b"fine"}, symlink="link"))
    with pytest.raises(UnsafeArchiveError, match="link"):
        extract_all(archive, tmp_path / "dest")


def _link(name: str, kind: bytes, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


@pytest.mark.parametrize(
    "member",
    [
        ("../evil.txt", b"x"),
        ("/etc/evil.txt", b"x"),
        _link("link", tarfile.SYMTYPE, "/etc/passwd"),
        _link("hard", tarfile.LNKTYPE, "/etc/passwd"),
    ],
    ids=["dotdot", "absolute", "symlink", "hardlink"],
)
def test_tar_unsafe_members_refused(tmp_path: Path, member: object) -> None:
    archive = make_tar(tmp_path / "a.tar.gz", [("ok.txt", b"fine"), member])  # type: ignore[list-item]
    dest = tmp_path / "dest"
    with pytest.raises(UnsafeArchiveError):
        extract_all(archive, dest)
    assert list(dest.iterdir()) == []


def test_extract_all_limits_and_success(tmp_path: Path) -> None:
    archive = make_tar(tmp_path / "a.tar.gz", [("d/one.bin", b"1" * 600), ("two.bin", b"2" * 600)])
    with pytest.raises(UnsafeArchiveError, match="1000"):
        extract_all(archive, tmp_path / "small", max_total_bytes=1000)
    with pytest.raises(UnsafeArchiveError, match="members"):
        extract_all(archive, tmp_path / "few", max_members=1)
    assert list((tmp_path / "small").iterdir()) == []
    written = extract_all(archive, tmp_path / "ok")
    assert sorted(p.relative_to(tmp_path / "ok").as_posix() for p in written) == [
        "d/one.bin",
        "two.bin",
    ]
    assert (tmp_path / "ok" / "d" / "one.bin").read_bytes() == b"1" * 600
    zipped = tmp_path / "a.zip"
    zipped.write_bytes(make_zip({"x/y.txt": b"y"}))
    assert [p.read_bytes() for p in extract_all(zipped, tmp_path / "z")] == [b"y"]


def test_not_an_archive(tmp_path: Path) -> None:
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"not an archive at all" * 100)
    with pytest.raises(ArchiveError, match="neither"):
        extract_member(junk, "x", tmp_path / "x")


# --------------------------------------------------------------------------- 14: cache management


def run_cli(*argv: str) -> int:
    from zoo.cli import main

    return main(list(argv))


def test_cache_ls_rm_verify(
    http_server: HTTPFileServer, capsys: pytest.CaptureFixture[str]
) -> None:
    a = fetch(http_server.add("/w/alpha.bin", PAYLOAD), sha256=PAYLOAD_SHA256)
    b = fetch(http_server.add("/w/beta.bin", b"beta"))  # TOFU-recorded
    partial = final_path("gamma.bin", sha256="ab" * 32).with_name("gamma.bin.incomplete")
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"half")

    entries = cache_entries()
    assert [(e.filename, e.is_partial, e.size) for e in entries] == [
        ("alpha.bin", False, len(PAYLOAD)),
        ("beta.bin", False, 4),
        ("gamma.bin", True, 4),
    ]
    assert entries[0].path == a and entries[0].sha256 == PAYLOAD_SHA256

    assert [(r.entry.filename, r.ok) for r in verify_cache()] == [
        ("alpha.bin", True),
        ("beta.bin", None),  # first-use hash, not yet confirmed by the caller (issue 10)
        ("gamma.bin", None),
    ]
    a.write_bytes(PAYLOAD[:-1] + b"\0")  # silent corruption, same size
    b.write_bytes(b"BETA")
    results = {r.entry.filename: r for r in verify_cache()}
    assert results["alpha.bin"].ok is False and "sha256 mismatch" in results["alpha.bin"].reason
    assert results["beta.bin"].ok is False

    assert run_cli("cache", "verify") == 1
    out = capsys.readouterr().out
    assert "CORRUPT" in out and "alpha.bin" in out
    assert run_cli("cache", "ls", "--json") == 0
    listed = json.loads(capsys.readouterr().out)
    assert [item["filename"] for item in listed] == ["alpha.bin", "beta.bin", "gamma.bin"]
    assert run_cli("cache", "ls") == 0
    assert "256.0 KiB" in capsys.readouterr().out

    removed = remove_cached("*a.bin")  # alpha, beta, gamma (partial + its lock-less dir)
    assert set(removed) == {a, b, partial}
    assert cache_entries() == [] and list(cache_dir().iterdir()) == []
    assert run_cli("cache", "rm", "nothing*") == 1
    assert "nothing matches" in capsys.readouterr().out


def test_atomic_write_replaces_whole_or_not_at_all(tmp_path):
    """The one atomic-write helper: the final name holds the old bytes or the new, never part."""
    from zoo.hub.atomic import atomic_path, atomic_write

    final = tmp_path / "new folder" / "record.json"
    with atomic_write(final, "w") as f:
        f.write("old")
    assert final.read_text() == "old"
    for interrupt in (OSError("disk full"), KeyboardInterrupt()):
        with pytest.raises(type(interrupt)), atomic_write(final) as f:
            f.write(b"half of the new")
            raise interrupt
        assert final.read_text() == "old"
    with atomic_path(final) as tmp:  # for writers that take a path (safetensors)
        assert tmp.parent == final.parent and tmp.name.startswith(".record.json.")
        tmp.write_text("new")
        assert final.read_text() == "old"  # not replaced before the block ends
    assert final.read_text() == "new"
    with atomic_path(final, suffix=".tmp.pt2") as tmp:  # for loaders that go by the extension
        assert tmp.name.endswith(".tmp.pt2")
        tmp.write_text("newer")
    assert final.read_text() == "newer"
    assert [p.name for p in final.parent.iterdir()] == ["record.json"]  # no temp file left
