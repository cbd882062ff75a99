"""Launch plumbing shared by the kernels: power-of-two sizes, input strides, device context."""

from __future__ import annotations

import contextlib

import torch
import triton


def next_power_of_2(n: int) -> int:
    return triton.next_power_of_2(max(int(n), 1))


def last_dim_contiguous(t: torch.Tensor) -> torch.Tensor:
    """The kernels take any strides but need unit stride along the last dim (coalesced rows).

    A stride-0 gradient from ``.sum()`` or a transposed view fails that; only then is it copied.
    """
    return t if t.stride(-1) == 1 or t.shape[-1] == 1 else t.contiguous()


def device_guard(t: torch.Tensor):
    """Launch on the tensor's GPU (Triton launches on the current device)."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()
