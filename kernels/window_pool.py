"""Window mean pooling, forward and backward, straight from the strided (B, N, C) layout.

One program per (batch, window, channel block): the forward walks the window's tokens in blocks of
BLOCK_T rows and writes one output row; the backward reads one gradient row and writes it, divided
by the window's token count, to every token of the window. Windows tile the grid exactly, so every
element of dx is written once and there are no atomics.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from ..geometry import num_windows
from .interpreter import INTERPRETED
from .utils import device_guard, last_dim_contiguous, next_power_of_2
from .window_index import window_geometry, window_tokens

MAX_BLOCK_C = 32 if INTERPRETED else 128


@triton.jit
def _window_program(windows, windows_h, windows_w, F, H, W, f, h, w, BLOCK_C: tl.constexpr):
    """(batch, window, channel offsets) of this program and the window's geometry."""
    pid = tl.program_id(0).to(tl.int64)
    window = pid % windows
    b = pid // windows
    channels = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    t0, y0, x0, extent_h, extent_w, count = window_geometry(window, windows_h, windows_w, F, H, W, f, h, w, 0, 0, 0)
    return b, window, channels, t0, y0, x0, extent_h, extent_w, count


@triton.jit
def window_pool_fwd_kernel(
    x_ptr, out_ptr, stride_xb, stride_xn, stride_ob, stride_om,
    C, windows, windows_h, windows_w, F, H, W, f, h, w,
    BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr,
):
    b, window, channels, t0, y0, x0, extent_h, extent_w, count = _window_program(
        windows, windows_h, windows_w, F, H, W, f, h, w, BLOCK_C)
    c_mask = channels < C
    x_base = x_ptr + b * stride_xb
    acc = tl.zeros((BLOCK_C,), tl.float32)
    for start in range(0, count, BLOCK_T):
        slots = start + tl.arange(0, BLOCK_T)
        tokens = window_tokens(slots, t0, y0, x0, extent_h, extent_w, H, W)
        mask = (slots < count)[:, None] & c_mask[None, :]
        x = tl.load(x_base + tokens[:, None] * stride_xn + channels[None, :], mask=mask, other=0.0)
        acc += tl.sum(x.to(tl.float32), 0)
    mean = acc / count.to(tl.float32)
    tl.store(out_ptr + b * stride_ob + window * stride_om + channels, mean.to(out_ptr.dtype.element_ty), mask=c_mask)


@triton.jit
def window_pool_bwd_kernel(
    dout_ptr, dx_ptr, stride_gb, stride_gm, stride_xb, stride_xn,
    C, windows, windows_h, windows_w, F, H, W, f, h, w,
    BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr,
):
    b, window, channels, t0, y0, x0, extent_h, extent_w, count = _window_program(
        windows, windows_h, windows_w, F, H, W, f, h, w, BLOCK_C)
    c_mask = channels < C
    grad = tl.load(dout_ptr + b * stride_gb + window * stride_gm + channels, mask=c_mask, other=0.0)
    share = (grad.to(tl.float32) / count.to(tl.float32)).to(dx_ptr.dtype.element_ty)
    dx_base = dx_ptr + b * stride_xb
    for start in range(0, count, BLOCK_T):
        slots = start + tl.arange(0, BLOCK_T)
        tokens = window_tokens(slots, t0, y0, x0, extent_h, extent_w, H, W)
        mask = (slots < count)[:, None] & c_mask[None, :]
        rows = tl.broadcast_to(share[None, :], (BLOCK_T, BLOCK_C))
        tl.store(dx_base + tokens[:, None] * stride_xn + channels[None, :], rows, mask=mask)


def _launch(x_like: torch.Tensor, grid, window):
    """Grid, shape arguments and block sizes: BLOCK_C channels wide, BLOCK_T tokens deep (~4K elements)."""
    B, C = x_like.shape[0], x_like.shape[-1]
    windows = num_windows(grid, window)
    block_c = min(next_power_of_2(C), MAX_BLOCK_C)
    block_t = min(next_power_of_2(math.prod(window)), max(1, 4096 // block_c))
    launch_grid = (B * math.prod(windows), triton.cdiv(C, block_c))
    args = (C, math.prod(windows), windows[1], windows[2], *grid, *window)
    return launch_grid, args, dict(BLOCK_T=block_t, BLOCK_C=block_c, num_warps=4)


def window_pool_fwd(x, grid, window):
    x = last_dim_contiguous(x)
    B, _, C = x.shape
    out = torch.empty((B, math.prod(num_windows(grid, window)), C), dtype=x.dtype, device=x.device)
    if out.numel() == 0:
        return out
    launch_grid, args, meta = _launch(x, grid, window)
    with device_guard(x):
        window_pool_fwd_kernel[launch_grid](x, out, *x.stride()[:2], *out.stride()[:2], *args, **meta)
    return out


def window_pool_bwd(dout, grid, window):
    dout = last_dim_contiguous(dout)
    B, _, C = dout.shape
    dx = torch.empty((B, math.prod(grid), C), dtype=dout.dtype, device=dout.device)
    if dx.numel() == 0:
        return dx
    launch_grid, args, meta = _launch(dout, grid, window)
    with device_guard(dout):
        window_pool_bwd_kernel[launch_grid](dout, dx, *dout.stride()[:2], *dx.stride()[:2], *args, **meta)
    return dx
