"""Processes under ``torchrun``: who am I, where do I compute, and who writes files.

A plain ``zoo train`` is world size 1 and never touches ``torch.distributed``. Under
``torchrun --nproc_per_node=N`` (multi-node too) the environment names the rank; the backend is
NCCL on CUDA and gloo on CPU. SyncBatchNorm needs CUDA (PyTorch implements it only there), so it
is applied on CUDA runs only and a CPU run says so.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist

log = logging.getLogger("zoo")
CPU = torch.device("cpu")


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = CPU

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def all_sum(self, values: list[float]) -> list[float]:
        """Sum numbers over processes (eval counts)."""
        if not self.enabled:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    @contextlib.contextmanager
    def local_main_first(self) -> Iterator[None]:
        """Let one process per node run the body first (e.g. fetch weights once per node)."""
        if self.enabled and self.local_rank != 0:
            dist.barrier()
        yield
        if self.enabled and self.local_rank == 0:
            dist.barrier()


def setup(device: str | None = None) -> Dist:
    """Join the process group torchrun describes, or return the single-process setup."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    want_cuda = device == "cuda" or (device is None and torch.cuda.is_available())
    if world <= 1:
        return Dist(device=torch.device("cuda" if want_cuda else (device or "cpu")))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if want_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if want_cuda else "gloo")
    return Dist(rank=rank, world=world, local_rank=local_rank, device=dev)


def teardown(d: Dist) -> None:
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: torch.nn.Module, d: Dist) -> torch.nn.Module:
    """DDP around the model when distributed; SyncBN across processes on CUDA only."""
    if not d.enabled:
        return model
    if d.device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    elif d.is_main:
        log.info("SyncBatchNorm runs on CUDA only: on CPU each process normalises its own batch")
    ids = [d.device.index] if d.device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
