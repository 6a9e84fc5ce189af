"""Shared test helpers: where the GluonCV reference fixtures and ../shared data live."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from http_server import HTTPFileServer

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
GLUON_FIXTURES = SHARED / "fixtures" / "gluoncv"
# Bigger fixtures made locally with ../shared/tools/gluoncv_reference (never committed).
EXTRA_GLUON_FIXTURES = Path(os.environ.get("ZOO_GLUON_FIXTURES", ROOT.parent / "gluon_fixtures"))


@pytest.fixture
def http_server() -> Iterator[HTTPFileServer]:
    """A real HTTP server on 127.0.0.1 (see tests/http_server.py); never a mocked requests."""
    with HTTPFileServer() as server:
        yield server


@pytest.fixture
def zoo_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private ZOO_HOME, fast retries, quiet output, and no mirror/offline/proxy settings."""
    home = tmp_path / "zoo_home"
    monkeypatch.setenv("ZOO_HOME", str(home))
    monkeypatch.setenv("ZOO_RETRY_BACKOFF", "0.01")
    monkeypatch.setenv("ZOO_QUIET", "1")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")  # a CI proxy must not see our server
    for name in (
        "ZOO_OFFLINE", "HF_HUB_OFFLINE", "ZOO_MIRROR", "ZOO_MANIFESTS", "HF_ENDPOINT",
        "ZOO_RETRIES", "ZOO_DEADLINE", "ZOO_TIMEOUT", "ZOO_LOCAL_CACHES", "HF_HOME",
        "HUGGINGFACE_HUB_CACHE",
    ):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    # Other libraries' caches are reused (zoo.hub.local_caches): never the real ones in tests.
    for name, folder in (("HF_HUB_CACHE", "hf"), ("TORCH_HOME", "torch"), ("MXNET_HOME", "mxnet")):
        monkeypatch.setenv(name, str(tmp_path / "other_caches" / folder))
    return home


def gluon_fixture(name: str) -> tuple[Path, dict[str, np.ndarray]]:
    """(.params path, reference arrays) of a GluonCV fixture; skip if it was not generated."""
    for folder in (GLUON_FIXTURES, EXTRA_GLUON_FIXTURES):
        params = folder / f"{name}.params"
        if params.is_file():
            return params, dict(np.load(folder / f"{name}.npz"))
    pytest.skip(f"GluonCV fixture {name} not generated (see ../shared/tools/gluoncv_reference)")


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random weights *and* BN statistics, so that BN and zero-gamma mistakes show."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if not tensor.is_floating_point():
                continue
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=gen) * 1.5 + 0.5)
            elif name.endswith("running_mean"):
                tensor.copy_(torch.randn(tensor.shape, generator=gen) * 0.1)
            elif tensor.dim() == 1:  # BN affine and biases
                tensor.copy_(torch.rand(tensor.shape, generator=gen) * 0.5 + 0.75)
            else:
                fan_in = tensor[0].numel()
                tensor.copy_(torch.randn(tensor.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
    return model


def stage_outputs(model: torch.nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Run ``model.forward_features(x)`` and capture the output of every feature_info stage."""
    outputs: dict[str, torch.Tensor] = {}
    hooks = [
        model.get_submodule(f.module).register_forward_hook(
            lambda _m, _i, out, key=f.module: outputs.setdefault(key, out)
        )
        for f in model.feature_info
    ]
    try:
        with torch.no_grad():
            model.forward_features(x)
    finally:
        for hook in hooks:
            hook.remove()
    return outputs
