"""``zoo.benchmark``: zoo models through ``zoo.optimize`` side by side with timm / torchvision.

How it measures, so that the figures can be trusted:

* Every model gets random weights with **calibrated BatchNorm statistics** (running mean/var
  re-estimated on two random batches): an eval-mode network with BN statistics that do not match
  its activations shrinks them towards zero and CPU convolutions slow down badly on subnormal
  floats — a trained network's activations are O(1), and so are these.
* For each batch size the candidates (zoo optimized per dtype, torch.compile'd if asked, and the
  comparison models as their users run them: eager, fp32, ``torch.no_grad``) are warmed up, then
  timed **interleaved** (one timing of each in turn, ``repeats`` rounds), so machine noise hits
  them alike. Reported: the median and the min/max of the timings; a batch-1 timing averages
  enough calls to last about ``min_time`` seconds.
* **Peak memory** is measured in a fresh subprocess per row: the resident-set high-water mark
  while building the model and running one forward, minus the resident size before (after a
  first, freed pass that loads the libraries' code): the model's weights (zoo: the original
  and its optimized copy, as a user holds both) plus the forward's working memory. The first
  pass's peak counts towards the high-water mark too, so the figure may overstate by up to the
  first pass's peak over the baseline; it never understates.
* Parameters and GMACs (multiply-accumulates, the README's unit) are counted with
  ``torch.utils.flop_counter`` on one image.
* torch.compile's compile time (the first call) is reported apart, never in the timings.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import gc
import importlib
import importlib.util
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

# zoo arch -> {library: name of the same architecture there}.
EQUIVALENTS: dict[str, dict[str, str]] = {
    "resnet18_v1b": {"timm": "resnet18", "torchvision": "resnet18"},
    "resnet50_v1b": {"timm": "resnet50", "torchvision": "resnet50"},
    "resnet50_v1c": {"timm": "resnet50c"},
    "resnet50_v1d": {"timm": "resnet50d"},
    "resnext50_32x4d": {"timm": "resnext50_32x4d", "torchvision": "resnext50_32x4d"},
    "mobilenetv2_1_0": {"timm": "mobilenetv2_100", "torchvision": "mobilenet_v2"},
    "mobilenetv3_large": {"torchvision": "mobilenet_v3_large"},
    "mobilenetv3_small": {"torchvision": "mobilenet_v3_small"},
    "inceptionv3": {"timm": "inception_v3", "torchvision": "inception_v3"},
}
LIBRARIES = ("timm", "torchvision")


@dataclass(frozen=True)
class Candidate:
    """One way of running one network: what the subprocess needs to rebuild it."""

    library: str  # "zoo", "timm" or "torchvision"
    name: str
    dtype: str = "float32"
    optimized: bool = False
    compiled: bool = False

    @property
    def label(self) -> str:
        if self.library != "zoo":
            return f"{self.library} eager"
        return "zoo " + (
            "compiled" if self.compiled else "optimized" if self.optimized else "eager"
        )


@dataclass(frozen=True)
class Row:
    model: str
    implementation: str
    dtype: str
    batch_size: int
    img_size: int
    params: int
    gmacs: float
    median_ms: float
    min_ms: float
    max_ms: float
    timings: int
    images_per_s: float
    peak_memory_mib: float | None
    compile_s: float | None
    speedup: float | None  # images/s over the first comparison model's, same batch size


def missing_libraries(compare: Sequence[str]) -> list[str]:
    return [lib for lib in compare if importlib.util.find_spec(lib) is None]


def check_request(names: Sequence[str], compare: Sequence[str]) -> None:
    """Validate names and libraries up front: one clear message, before minutes of timing."""
    from zoo.registry import get_spec

    for name in names:
        get_spec(name)  # UnknownModelError names the closest architectures
    unknown = sorted(set(compare) - set(LIBRARIES))
    if unknown:
        raise ValueError(f"unknown comparison {', '.join(unknown)}; choose from {LIBRARIES}")
    missing = missing_libraries(compare)
    if missing:
        raise ModuleNotFoundError(
            f"--compare {','.join(missing)}: not installed here (pip install {' '.join(missing)})"
        )


def reference_name(arch: str, library: str) -> str | None:
    from zoo.registry import get_spec

    return EQUIVALENTS.get(get_spec(arch).name, {}).get(library)


def _build(c: Candidate, img_size: int) -> nn.Module:
    if c.library == "timm":
        import timm

        return timm.create_model(c.name, pretrained=False)
    if c.library == "torchvision":
        import torchvision

        extra = {"aux_logits": False, "init_weights": False} if c.name == "inception_v3" else {}
        return torchvision.models.get_model(c.name, weights=None, **extra)
    import zoo

    return zoo.get_model(c.name)


def calibrate_bn(model: nn.Module, shape: tuple[int, ...], batches: int = 2) -> None:
    """Re-estimate BN running statistics on random batches (see the module docstring)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over the calibration batches
    generator = torch.Generator().manual_seed(0)
    model.train()
    with torch.no_grad():
        for _ in range(batches):
            model(torch.randn(*shape, generator=generator))
    model.eval()


def prepare(
    c: Candidate, img_size: int, calibrate: bool = True
) -> tuple[Callable[[torch.Tensor], object], nn.Module]:
    """The callable timed for a candidate, and the model it runs (for counting)."""
    model = _build(c, img_size).eval()
    if calibrate:
        calibrate_bn(model, (4, 3, img_size, img_size))
    if c.library == "zoo" and (c.optimized or c.compiled):
        from zoo.optimization import optimize

        return optimize(model, dtype=c.dtype, compile=c.compiled), model

    def eager(x: torch.Tensor) -> object:
        with torch.no_grad():
            return model(x)

    return eager, model


def count(model: nn.Module, img_size: int) -> tuple[int, float]:
    """(parameters, GMACs of one image)."""
    params = sum(p.numel() for p in model.parameters())
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.eval()(torch.zeros(1, 3, img_size, img_size))
    return params, counter.get_total_flops() / 2 / 1e9


def _timed(run: Callable[[torch.Tensor], object], x: torch.Tensor, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        run(x)
    return (time.perf_counter() - start) / calls


def time_interleaved(
    runs: Sequence[Callable[[torch.Tensor], object]],
    x: torch.Tensor,
    repeats: int,
    min_time: float,
) -> list[list[float]]:
    """Seconds per call of each run: warm-up, then one timing of each in turn, ``repeats`` times."""
    calls = []
    for run in runs:
        run(x)  # warm-up: oneDNN primitive creation, allocator
        calls.append(max(1, round(min_time / max(_timed(run, x, 1), 1e-6))))
    timings: list[list[float]] = [[] for _ in runs]
    for _ in range(repeats):
        for index, run in enumerate(runs):
            timings[index].append(_timed(run, x, calls[index]))
    return timings


def peak_memory_mib(c: Candidate, batch_size: int, img_size: int) -> float:
    """Resident memory the model and one forward need, from a fresh subprocess."""
    spec = json.dumps({"candidate": dataclasses.asdict(c), "batch": batch_size, "size": img_size})
    done = subprocess.run(
        [sys.executable, "-m", "zoo.benchmark", spec], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"memory probe of {c.label} {c.name} failed: {done.stderr[-500:]}")
    return float(done.stdout.strip().splitlines()[-1])


def _rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * (resource.getpagesize() // 1024)


def _memory_probe(spec: dict) -> float:
    c = Candidate(**spec["candidate"])
    x = torch.randn(spec["batch"], 3, spec["size"], spec["size"])
    # A first pass faults in the libraries' code and oneDNN's kernels (file-backed pages that
    # are not the model's memory); its memory is then freed and handed back to the system.
    run, model = prepare(c, spec["size"], calibrate=False)
    run(x)
    del run, model
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    baseline = _rss_kib()
    # Reset the kernel's high-water mark (VmHWM) so the peak is this pass's, not the process's
    # lifetime maximum (which the first pass or the imports may have set).
    reset = _reset_peak_rss()
    run, _ = prepare(c, spec["size"], calibrate=False)
    run(x)
    peak = _peak_rss_kib() if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return max(peak - baseline, 0) / 1024


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss_kib() -> int:
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith("VmHWM:"))
    return int(line.split()[1])


def benchmark_model(
    arch: str,
    *,
    batch_sizes: Sequence[int],
    img_size: int | None,
    dtypes: Sequence[str],
    compare: Sequence[str],
    compile: bool = False,
    repeats: int = 5,
    min_time: float = 0.2,
    memory: bool = True,
    log: Callable[[str], None] = lambda _: None,
) -> list[Row]:
    from zoo.optimization import check_dtype_supported, parse_dtype
    from zoo.registry import get_spec

    spec = get_spec(arch)
    size = img_size or spec.preprocess.crop
    for dtype in dtypes:
        check_dtype_supported(parse_dtype(dtype), torch.device("cpu"))
    candidates = [Candidate("zoo", spec.name, dtype, optimized=True) for dtype in dtypes]
    if compile:
        candidates += [
            Candidate("zoo", spec.name, d, optimized=True, compiled=True) for d in dtypes
        ]
    for library in compare:
        name = reference_name(spec.name, library)
        if name is None:
            log(f"{spec.name}: no {library} equivalent known; compared with nothing there")
        else:
            candidates.append(Candidate(library, name))
    log(f"{spec.name}: building {len(candidates)} candidates at {size}x{size}")
    prepared = [prepare(c, size) for c in candidates]
    runs = [run for run, _ in prepared]
    counts = {
        c.library: count(model, size) for c, (_, model) in zip(candidates, prepared, strict=True)
    }
    compile_s: dict[int, float] = {}
    rows: list[Row] = []
    for batch in batch_sizes:
        x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(batch))
        for index, c in enumerate(candidates):
            if c.compiled and index not in compile_s:
                start = time.perf_counter()
                runs[index](x)  # the first call compiles
                compile_s[index] = time.perf_counter() - start
        log(f"{spec.name}: batch {batch}, {repeats} interleaved timings of each")
        timings = time_interleaved(runs, x, repeats, min_time if batch == 1 else 0.0)
        reference = next(
            (
                statistics.median(t)
                for c, t in zip(candidates, timings, strict=True)
                if c.library != "zoo"
            ),
            None,
        )
        for index, (c, t) in enumerate(zip(candidates, timings, strict=True)):
            median = statistics.median(t)
            params, gmacs = counts[c.library]
            rows.append(
                Row(
                    model=c.name,
                    implementation=c.label,
                    dtype=c.dtype,
                    batch_size=batch,
                    img_size=size,
                    params=params,
                    gmacs=round(gmacs, 3),
                    median_ms=round(1e3 * median, 2),
                    min_ms=round(1e3 * min(t), 2),
                    max_ms=round(1e3 * max(t), 2),
                    timings=len(t),
                    images_per_s=round(batch / median, 1),
                    peak_memory_mib=round(peak_memory_mib(c, batch, size), 1) if memory else None,
                    compile_s=round(compile_s[index], 1) if index in compile_s else None,
                    speedup=None
                    if reference is None or c.library != "zoo"
                    else round(reference / median, 2),
                )
            )
    return rows


def machine() -> dict[str, object]:
    """What the figures were measured on."""
    import os
    import platform

    cpu = platform.processor()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


if __name__ == "__main__":  # the memory probe: python -m zoo.benchmark '<json>'
    print(_memory_probe(json.loads(sys.argv[1])))
