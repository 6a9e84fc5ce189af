"""Fast start: the commands that need no model run without importing torch, checked in fresh
interpreters (``'torch' in sys.modules`` after the command), plus the lazy ``zoo`` package and
the CLI's command table. Timings are in benchmarks/startup.py, not here."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from conftest import ROOT, randomize
from safetensors.torch import save_file

import zoo
from zoo.cli import COMMANDS, main
from zoo.weights.manifest import ManifestError

# Runs the CLI in a fresh interpreter, then reports whether torch got imported.
_RUNNER = """
import sys
from zoo.cli import main
try:
    rc = main(sys.argv[1:])
except SystemExit as stop:  # --version and --help exit through argparse
    rc = stop.code
print("TORCH_IMPORTED", "torch" in sys.modules)
sys.exit(rc)
"""


def _cli(*args: str) -> tuple[int, str, bool]:
    """(exit code, stdout without the marker, torch imported?) of `zoo ARGS` in a new process."""
    done = subprocess.run(
        [sys.executable, "-c", _RUNNER, *args], capture_output=True, text=True, cwd=ROOT,
        timeout=120,
    )  # fmt: skip
    *lines, marker = done.stdout.rstrip("\n").split("\n")
    assert marker.startswith("TORCH_IMPORTED"), done.stdout + done.stderr
    return done.returncode, "\n".join(lines) + done.stderr, marker.endswith("True")


def _torch_free(*args: str) -> str:
    rc, out, torch_imported = _cli(*args)
    assert rc == 0, out
    assert not torch_imported, f"`zoo {' '.join(args)}` imported torch"
    return out


@pytest.fixture(autouse=True)
def zoo_env(zoo_home: Path) -> Path:
    return zoo_home


def _org_manifest(tmp_path: Path, http_server, monkeypatch, arch: str = "resnet18_v1b") -> str:
    """A torchvision-format entry served by the local HTTP server; returns its name."""
    model = randomize(torchvision.models.resnet18(weights=None))
    weights = tmp_path / "r18.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    data = weights.read_bytes()
    url = http_server.add("/w/r18.safetensors", data)
    files = [{"name": "r18_tv.safetensors", "sources": [url],
              "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}]  # fmt: skip
    entry = {
        "arch": arch, "tag": "org_in1k", "default": True, "num_classes": 1000,
        "labels": "imagenet-1k", "license": "apache-2.0", "provenance": "test",
        "preprocess": {"crop": 224, "resize": 256}, "artifacts": [
            {"format": "torchvision", "files": files}],
    }  # fmt: skip
    manifest = tmp_path / "org.json"
    manifest.write_text(json.dumps({"format_version": 1, "weights": [entry]}))
    monkeypatch.setenv("ZOO_MANIFESTS", str(manifest))
    return f"{arch}.org_in1k"


def test_import_zoo_and_hub_do_not_import_torch():
    code = "import sys, zoo.hub, zoo, zoo.weights, zoo.cli; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.stdout.strip() == "False", done.stderr


def test_version_help_and_cache_are_torch_free():
    assert _torch_free("--version").strip() == f"zoo {zoo.__version__}"
    help_text = _torch_free("--help")
    assert all(name in help_text for name in COMMANDS)
    assert "cache is empty" in _torch_free("cache", "ls")
    rc, out, torch_imported = _cli("cache", "rm", "nothing*")
    assert (rc, torch_imported) == (1, False)
    assert "nothing matches" in out


def test_dry_run_plans_without_fetching_or_torch(tmp_path, http_server, monkeypatch):
    out = _torch_free("download", "--dry-run", "resnet18_v1b")
    assert "resnet18_v1b.gluon_in1k: would fetch, verify and convert" in out
    assert "artifact 1 (gluoncv)" in out
    assert "resnet18_v1b-2d9d980c.zip" in out and "then extract" in out

    name = _org_manifest(tmp_path, http_server, monkeypatch)
    plan = json.loads(_torch_free("download", "--dry-run", "--json", name))
    (entry,) = plan
    assert entry["weights"] == name and entry["converted"] is False
    (file,) = entry["artifacts"][0]["files"]
    assert file["origin"] == "download"
    assert file["locations"] == [http_server.url("/w/r18.safetensors")]
    assert http_server.log == []  # a plan fetches nothing
    assert not (zoo.hub.zoo_home() / "weights").exists()  # and converts nothing

    # Once downloaded (but not converted), the plan points at the cached copy.
    zoo.weights.fetch_file(zoo.weights.find_entry("resnet18_v1b", "org_in1k").artifacts[0].files[0])
    (entry,) = json.loads(_torch_free("download", "--dry-run", "--json", name))
    (file,) = entry["artifacts"][0]["files"]
    assert file["origin"] == "zoo cache"
    assert Path(file["locations"][0]).is_file()


def test_download_of_converted_weights_is_torch_free(tmp_path, http_server, monkeypatch):
    name = _org_manifest(tmp_path, http_server, monkeypatch)
    assert main(["download", "--quiet", name]) == 0  # converts (torch, in this process)
    requests = len(http_server.log)
    out = _torch_free("download", name)
    assert f"{name}: " in out and "org_in1k.safetensors" in out
    out = _torch_free("download", "resnet18_v1b")  # the default tag, by arch name
    assert "org_in1k.safetensors" in out
    assert "already converted" in _torch_free("download", "--dry-run", name)
    assert "resnet18_v1b.org_in1k" in _torch_free("cache", "verify", "--hashes-only")
    assert len(http_server.log) == requests  # nothing fetched again

    # A truncated checkpoint is not "converted": it is built again (from the cached download).
    path = zoo.hub.zoo_home() / "weights" / "resnet18_v1b" / "org_in1k.safetensors"
    path.write_bytes(path.read_bytes()[:-1])
    assert "would fetch" in _torch_free("download", "--dry-run", name)
    assert main(["download", "--quiet", name]) == 0
    assert "already converted" in _torch_free("download", "--dry-run", name)
    assert len(http_server.log) == requests


def test_unregistered_manifest_arch_fails_before_any_request(tmp_path, http_server, monkeypatch):
    # Parsing no longer consults the registry (it would import torch); building and listing do.
    name = _org_manifest(tmp_path, http_server, monkeypatch, arch="resnet50d")
    with pytest.raises(ManifestError, match=r"org.json: resnet50d.org_in1k: unknown model"):
        zoo.list_models(pretrained=True)
    assert main(["download", name]) == 2
    assert http_server.log == []


def test_lazy_package_exports():
    assert set(zoo.__all__) <= set(dir(zoo))
    for name in zoo.__all__:
        assert getattr(zoo, name) is not None
    assert zoo.registry.canonical_name("mobilenet1.0") == "mobilenet1_0"  # submodule on demand
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = zoo.nope
    assert zoo.list_models is zoo.api.list_models


def test_every_command_module_follows_the_pattern(capsys):
    for name, command in COMMANDS.items():
        module = __import__(f"zoo.cli.{command.module}", fromlist=["_"])
        stem = name.replace("-", "_")
        assert callable(getattr(module, f"add_{stem}_arguments")), name
        assert callable(getattr(module, f"run_{stem}")), name
        with pytest.raises(SystemExit) as stop:
            main([name, "--help"])
        assert stop.value.code == 0
        assert f"usage: zoo {name}" in capsys.readouterr().out


def test_env_may_import_torch_and_reports_it(capsys):
    assert main(["env", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["torch"] == torch.__version__
