"""The processes of a run: device, bf16 autocast, the DDP process group (torchrun) and, with
``--context-parallel K``, the clip groups of K ranks each (their time sharding is the library's
`logo_attn.distributed.TimeSharding`)."""

from __future__ import annotations

import contextlib
import os

import torch
import torch.distributed as dist

from .config import TrainConfig
from .errors import UsageError


class Runtime:
    """Device, autocast and the process group of this run (one process, or one of a torchrun job)."""

    def __init__(self, config: TrainConfig) -> None:
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        use_cuda = config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available())
        if use_cuda and not torch.cuda.is_available():
            raise UsageError("device 'cuda' was asked for but no CUDA device is visible (use --device cpu or auto)")
        self.device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
        if use_cuda:
            torch.cuda.set_device(self.device)
        self.distributed = self.world_size > 1
        if self.distributed and not dist.is_initialized():
            dist.init_process_group("nccl" if use_cuda else "gloo")
        self.context_size = config.context_parallel
        if self.world_size % self.context_size:
            raise UsageError(f"context_parallel {self.context_size} must divide the {self.world_size} process(es)")
        # ranks g*K .. g*K + K-1 share clip group g; every rank creates every group (new_group is collective)
        self.data_size, self.data_rank = self.world_size // self.context_size, self.rank // self.context_size
        self.context_group = None
        if self.context_size > 1:
            for g in range(self.data_size):
                group = dist.new_group(list(range(g * self.context_size, (g + 1) * self.context_size)))
                if g == self.data_rank:
                    self.context_group = group
        amp = config.amp if config.amp != "auto" else ("bf16" if use_cuda else "off")
        self.autocast_dtype = torch.bfloat16 if amp == "bf16" else None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def close(self) -> None:
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()
