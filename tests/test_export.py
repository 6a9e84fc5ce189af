"""zoo export: ONNX (checked with ONNX Runtime), TorchScript, ExportedProgram; zoo benchmark CLI."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from test_optimize import realistic

import zoo
import zoo.benchmark
import zoo.export
from zoo.cli import main
from zoo.export import export_model, read_metadata

onnxruntime = pytest.importorskip("onnxruntime")

# The smallest arch of each family and a TF-padding twin at an odd size (small inputs: quick).
SMALLEST = {
    "resnet18_v1b": 32,
    "mobilenet0_25": 32,
    "mobilenetv2_0_25": 32,
    "mobilenetv3_small": 32,
    "inceptionv3": 75,
    "mobilenet0_25_tf": 33,
}


def _input(size: int, batch: int) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(7))


@pytest.mark.parametrize("arch", sorted(SMALLEST))
def test_onnx_round_trip_matches_pytorch(arch, tmp_path):
    size = SMALLEST[arch]
    model = realistic(zoo.get_model(arch), _input(size, 2))
    result = export_model(model, tmp_path / "m.onnx", format="onnx", img_size=size)
    assert result.max_abs_diff <= 1e-4

    # independently of export_model's own check: ONNX Runtime, a batch size not exported at
    session = onnxruntime.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    x = _input(size, 5)
    (out,) = session.run(None, {"image": x.numpy()})
    with torch.no_grad():
        expected = model.eval()(x).numpy()
    np.testing.assert_allclose(out, expected, atol=1e-4, rtol=0)
    meta = read_metadata(result.path)
    assert meta["arch"] == arch and meta["input_size"] == [3, size, size]
    assert meta["same_padding_fixed_at"] == ([size, size] if arch.endswith("_tf") else None)
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]  # no temporary left behind


@pytest.mark.parametrize(("arch", "fmt", "suffix"), [
    ("mobilenet0_25_tf", "torchscript", ".pt"),
    ("mobilenetv3_small", "exported-program", ".pt2"),
])  # fmt: skip
def test_torchscript_and_exported_program_have_a_dynamic_batch(arch, fmt, suffix, tmp_path):
    size = 33
    model = realistic(zoo.get_model(arch), _input(size, 2))
    result = export_model(model, tmp_path / f"m{suffix}", format=fmt, img_size=size)
    x = _input(size, 4)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's deprecation notice
        loaded = (
            torch.jit.load(str(result.path))
            if fmt == "torchscript"
            else torch.export.load(str(result.path)).module()
        )
        torch.testing.assert_close(loaded(x), model.eval()(x), atol=1e-4, rtol=0)
    assert read_metadata(result.path)["format"] == fmt


def test_a_failed_check_writes_nothing(tmp_path):
    model = zoo.get_model("mobilenet0_25")
    target = tmp_path / "m.pt"
    with pytest.raises(ValueError, match="nothing written"):
        export_model(model, target, format="torchscript", img_size=32, atol=-1.0)
    assert list(tmp_path.iterdir()) == []


def test_export_errors(tmp_path, monkeypatch):
    model = zoo.get_model("mobilenet0_25")
    with pytest.raises(ValueError, match="unknown export format 'keras'"):
        export_model(model, tmp_path / "m.keras", format="keras")
    with pytest.raises(ValueError, match="must end in .pt2"):
        export_model(model, tmp_path / "m.onnx", format="exported-program")
    with pytest.raises(TypeError, match="zoo model"):
        export_model(torch.nn.Conv2d(3, 3, 1), tmp_path / "m.onnx", format="onnx")
    monkeypatch.setitem(zoo.export.REQUIRES, "onnx", ("onnx", "no_such_onnx_runtime"))
    with pytest.raises(
        ModuleNotFoundError, match=r"no_such_onnx_runtime: pip install 'zoo\[export\]'"
    ):
        export_model(model, tmp_path / "m.onnx", format="onnx")


def test_export_cli(tmp_path, capsys, monkeypatch):
    out = tmp_path / "sub" / "m.onnx"
    argv = ["export", "mobilenet0_25_tf", "--random-init", "--format", "onnx", "--img-size", "33"]
    assert main([*argv, "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "SAME padding is fixed for 33x33" in printed
    assert read_metadata(out)["arch"] == "mobilenet0_25_tf"

    assert main(["export", "no_such_net", "--format", "onnx", "-o", str(out)]) == 2
    assert "unknown model 'no_such_net'" in capsys.readouterr().err
    monkeypatch.setitem(zoo.export.REQUIRES, "onnx", ("no_such_onnx",))
    assert main([*argv, "-o", str(out)]) == 2
    assert "needs no_such_onnx: pip install" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "mobilenet0_25", "--format", "keras", "-o", str(out)])
    assert exit_info.value.code == 2


def test_benchmark_cli_json(capsys):
    argv = ["benchmark", "mobilenetv3_small", "--batch-size", "2", "--img-size", "32"]
    assert main([*argv, "--repeats", "1", "--compare", "torchvision", "--json", "--no-memory"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["machine"]["torch"] == torch.__version__
    zoo_row, reference = report["rows"]
    assert zoo_row["implementation"] == "zoo optimized" and zoo_row["dtype"] == "float32"
    assert reference["implementation"] == "torchvision eager"
    assert reference["model"] == "mobilenet_v3_small"
    params = sum(p.numel() for p in zoo.get_model("mobilenetv3_small").parameters())
    assert zoo_row["params"] == params and zoo_row["gmacs"] > 0
    for row in report["rows"]:
        assert row["batch_size"] == 2 and row["timings"] == 1
        assert row["images_per_s"] > 0 and row["peak_memory_mib"] is None
    ratio = reference["median_ms"] / zoo_row["median_ms"]
    assert zoo_row["speedup"] == pytest.approx(ratio, rel=0.02)


def test_peak_memory_is_measured_in_a_fresh_process():
    # mobilenet0_25 holds 1.9 MB of float32 weights, twice with its optimized copy; at batch 8
    # and 64x64 its largest activation is 8 * 64 * 32 * 32 floats = 2 MiB.
    small = zoo.benchmark.Candidate("zoo", "mobilenet0_25", optimized=True)
    mib = zoo.benchmark.peak_memory_mib(small, 8, 64)
    assert 3 < mib < 200


def test_benchmark_cli_errors(capsys, monkeypatch):
    assert main(["benchmark", "no_such_net"]) == 2
    assert "unknown model 'no_such_net'" in capsys.readouterr().err
    assert main(["benchmark", "mobilenet0_25", "--compare", "keras"]) == 2
    assert "unknown comparison keras" in capsys.readouterr().err
    assert main(["benchmark", "mobilenet0_25", "--dtype", "int8"]) == 2
    assert "unsupported dtype 'int8'" in capsys.readouterr().err
    monkeypatch.setattr(zoo.benchmark, "LIBRARIES", (*zoo.benchmark.LIBRARIES, "no_such_lib"))
    assert main(["benchmark", "mobilenet0_25", "--compare", "no_such_lib"]) == 2
    assert "no_such_lib: not installed here (pip install no_such_lib)" in capsys.readouterr().err
