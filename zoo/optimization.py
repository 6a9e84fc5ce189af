"""``zoo.optimize``: the same network and weights, run faster for inference.

What it does, on a copy (the argument is never changed):

* **BatchNorm folded** into the conv that feeds it (``W * g / sqrt(v + eps)``, bias likewise),
  for ``nn.BatchNorm2d``, ``SyncBatchNorm`` and torchvision's ``FrozenBatchNorm2d``; the BN
  becomes ``nn.Identity``. Which conv feeds which BN is read from the data flow of one probe
  forward (module hooks), not from module names, so every family folds the same way, the
  ``_tf`` twins' ``Conv2dSame`` included. A pair is folded only when the BN's input is exactly
  the conv's output tensor and nothing else touches that tensor (a ``TorchFunctionMode`` watches
  every op): a conv output that also feeds a shortcut, or that an in-place activation changed
  before the BN, keeps its BN.
* **channels_last** weights, and the input converted at each call: oneDNN's convolutions run
  NHWC without reordering every layer.
* **inference mode**, no autograd bookkeeping; the module is eval-only (``.train()`` raises).
* optional **bf16/fp16 autocast** where the hardware has native support, for the features; the
  head (pool, classifier) runs in float32, and outputs are float32. bf16 keeps 8 bits of
  mantissa: its rounding error enters evenly at every layer, not at one fixable place, and a
  top-1 flips where two classes nearly tie; fp16 (11 bits) stays about 9x closer to float32
  (``benchmarks/bf16_accuracy.py``).
* optional **torch.compile** with inductor's freezing (the first call compiles).
"""

from __future__ import annotations

import contextlib
import copy
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves
from torchvision.ops import FrozenBatchNorm2d

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}
_NORMS = (nn.modules.batchnorm._BatchNorm, FrozenBatchNorm2d)


def parse_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    """``None``/"float32" -> float32; "bfloat16"/"float16" or the torch dtypes; else an error."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype in DTYPES:
        return DTYPES[dtype]
    raise ValueError(f"unsupported dtype {dtype!r}; choose one of {', '.join(DTYPES)}")


def check_dtype_supported(dtype: torch.dtype, device: torch.device) -> None:
    """Refuse reduced precision where the hardware would only emulate it (slow, misleading)."""
    if dtype == torch.float32:
        return
    name = str(dtype).removeprefix("torch.")
    if device.type == "cuda":
        ok = dtype == torch.float16 or torch.cuda.is_bf16_supported()
    elif device.type == "cpu":
        check = {
            torch.bfloat16: torch.ops.mkldnn._is_mkldnn_bf16_supported,
            torch.float16: torch.ops.mkldnn._is_mkldnn_fp16_supported,
        }[dtype]
        ok = bool(check())
    else:
        ok = False
    if not ok:
        raise ValueError(f"{name} autocast is not supported natively on this {device.type}")


@dataclass(frozen=True)
class FoldReport:
    """What folding did: ``(conv, norm)`` module names folded, and the norms left in place."""

    folded: tuple[tuple[str, str], ...]
    kept: tuple[str, ...]


class _Watch(TorchFunctionMode):
    """Records, during the probe, which conv produced each BN's input and who else used it."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.names = {m: n for n, m in model.named_modules()}
        self.outputs: dict[int, tuple[str, torch.Tensor]] = {}  # id -> (conv, tensor kept alive)
        self.fed_by: dict[str, str | None] = {}  # norm -> conv whose output it received
        self.escaped: set[str] = set()  # convs whose output was used outside their norm
        self.calls: Counter[str] = Counter()
        self.inside: str | None = None  # the norm whose forward is running

    def __torch_function__(self, func: Callable, types: Any, args: Any = (), kwargs: Any = None):
        for leaf in tree_leaves((args, kwargs or {})):
            if isinstance(leaf, torch.Tensor) and id(leaf) in self.outputs:
                conv, tensor = self.outputs[id(leaf)]
                if tensor is leaf and (self.inside is None or self.fed_by[self.inside] != conv):
                    self.escaped.add(conv)
        return func(*args, **(kwargs or {}))

    def conv_done(self, module: nn.Module, args: Any, output: torch.Tensor) -> None:
        name = self.names[module]
        self.calls[name] += 1
        self.outputs[id(output)] = (name, output)

    def norm_start(self, module: nn.Module, args: Any) -> None:
        name = self.names[module]
        self.calls[name] += 1
        x = args[0] if args else None
        conv, tensor = self.outputs.get(id(x), (None, None))
        self.fed_by[name] = conv if tensor is x else None
        self.inside = name

    def norm_done(self, module: nn.Module, args: Any, output: Any) -> None:
        self.inside = None

    def pairs(self) -> list[tuple[str, str]]:
        return [
            (conv, norm)
            for norm, conv in self.fed_by.items()
            if conv is not None
            and conv not in self.escaped
            and self.calls[conv] == 1  # a module run twice (shared) cannot take one fold
            and self.calls[norm] == 1
        ]


@contextlib.contextmanager
def _hooks(model: nn.Module, watch: _Watch) -> Iterator[None]:
    handles = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(watch.conv_done))
        elif isinstance(module, _NORMS):
            handles.append(module.register_forward_pre_hook(watch.norm_start))
            handles.append(module.register_forward_hook(watch.norm_done))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def conv_bn_pairs(model: nn.Module, probe: torch.Tensor) -> list[tuple[str, str]]:
    """``(conv, norm)`` module names where the norm consumes exactly the conv's output."""
    watch = _Watch(model)
    with torch.no_grad(), _hooks(model, watch), watch:
        model(probe)
    return watch.pairs()


def _foldable(norm: nn.Module) -> bool:
    # A BN without running statistics normalises with batch statistics even in eval.
    return isinstance(norm, FrozenBatchNorm2d) or norm.running_mean is not None


def fold_batchnorm(model: nn.Module, probe: torch.Tensor) -> FoldReport:
    """Fold every BN of an eval-mode ``model`` into the conv feeding it, in place."""
    if model.training:
        raise ValueError("fold_batchnorm needs an eval-mode model (BN then uses its statistics)")
    folded = []
    for conv_name, norm_name in conv_bn_pairs(model, probe):
        conv, norm = model.get_submodule(conv_name), model.get_submodule(norm_name)
        if not _foldable(norm):
            continue
        weight, bias = fuse_conv_bn_weights(
            conv.weight, conv.bias, norm.running_mean, norm.running_var, norm.eps,
            norm.weight, norm.bias,
        )  # fmt: skip
        conv.weight, conv.bias = weight, bias
        model.set_submodule(norm_name, nn.Identity())
        folded.append((conv_name, norm_name))
    kept = tuple(n for n, m in model.named_modules() if isinstance(m, _NORMS))
    return FoldReport(tuple(folded), kept)


def _probe(model: nn.Module) -> torch.Tensor:
    """One input of the size the model was built for (its weights' crop, its input channels)."""
    cfg, config = getattr(model, "pretrained_cfg", None), getattr(model, "config", None)
    if cfg is None or config is None or not hasattr(model, "forward_head"):
        raise TypeError("zoo.optimize takes a zoo model (from zoo.get_model)")
    device = next(model.parameters()).device
    crop = cfg.preprocess.crop
    return torch.zeros(1, config.in_chans, crop, crop, device=device).normal_(
        generator=torch.Generator(device).manual_seed(0)
    )


class _Precision(nn.Module):
    """The features under autocast; the head (pool, classifier) in float32.

    bf16 keeps 8 bits of mantissa: a logit of 10 would be rounded to steps of 1/16, enough to
    swap two close classes. The head is a small share of the work, so it runs in float32.
    """

    def __init__(self, model: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.model, self.dtype = model, dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dtype == torch.float32:
            return self.model(x)
        with torch.autocast(x.device.type, dtype=self.dtype):
            features = self.model.forward_features(x)
        return self.model.forward_head(features.float())


class OptimizedModel(nn.Module):
    """An eval-only wrapper: channels_last input, inference mode, optional autocast, fp32 out."""

    def __init__(
        self, model: nn.Module, dtype: torch.dtype, report: FoldReport, compiled: bool
    ) -> None:
        super().__init__()
        self.model = model
        self.dtype = dtype
        self.fold_report = report
        self.pretrained_cfg = getattr(model, "pretrained_cfg", None)
        self.training = False
        # Kept outside the module tree: it wraps self.model and would duplicate its weights.
        run = _Precision(model, dtype)
        # Freezing: the weights are constants of an eval-only module, so inductor may fold them
        # and pre-pack them for oneDNN (measured on 2 CPU cores, resnet50_v1d batch 32 fp32:
        # 20.3 img/s compiled with freezing vs 16.8 optimized eager).
        self.__dict__["_run"] = torch.compile(run, options={"freezing": True}) if compiled else run

    def train(self, mode: bool = True) -> OptimizedModel:
        if mode:
            raise RuntimeError("an optimized model is eval-only: train the original model")
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self._run(x.contiguous(memory_format=torch.channels_last)).float()


def optimize(
    model: nn.Module, *, dtype: str | torch.dtype | None = None, compile: bool = False
) -> OptimizedModel:
    """A new eval-only module computing what ``model.eval()`` computes, faster.

    ``dtype``: None/float32 (outputs within 1e-4 of the eager model), "bfloat16" or "float16"
    (autocast; refused where the hardware lacks native support). ``compile``: torch.compile.
    """
    if isinstance(model, OptimizedModel):
        raise TypeError("the model is already optimized; optimize the original model")
    wanted = parse_dtype(dtype)
    probe = _probe(model)
    check_dtype_supported(wanted, probe.device)
    copied = copy.deepcopy(model).eval()
    report = fold_batchnorm(copied, probe)
    copied = copied.to(memory_format=torch.channels_last)
    copied.requires_grad_(False)
    return OptimizedModel(copied, wanted, report, compile)


__all__ = [
    "DTYPES",
    "FoldReport",
    "OptimizedModel",
    "check_dtype_supported",
    "conv_bn_pairs",
    "fold_batchnorm",
    "optimize",
    "parse_dtype",
]
