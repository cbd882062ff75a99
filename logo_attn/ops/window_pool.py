"""window_pool: the mean of each window's tokens.

The contract is `window_pool`'s docstring; `logo_attn.reference.window_pool` defines the maths;
the kernels are `kernels/window_pool.py` (Triton), `csrc/cpu/window_pool_kernel.cpp` and
`csrc/cuda/window_pool.cu`; the tests are tests/test_window_pool.py and the benchmark rows
``bench_ops.py --ops pool``. No FLOP formula: pooling has no attended pairs, and PyTorch counts no
pooling FLOPs either.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .. import backends
from ..checks import as_grid, as_window, check_tensors
from ..geometry import clip_window, window_count
from .common import apply, call

__all__ = ["window_pool", "WindowPoolFunction"]


def _window_pool_fwd(x: Tensor, grid: Sequence[int], window: Sequence[int], backend: str) -> Tensor:
    return backends.module_for(backend, x, head_dim=0).window_pool_fwd(x, grid, window)


window_pool_fwd = torch.library.custom_op("logo_attn::window_pool_fwd", _window_pool_fwd, mutates_args=())


@window_pool_fwd.register_fake
def _(x, grid, window, backend):
    return x.new_empty((x.shape[0], window_count(grid, window), x.shape[2]))


def _window_pool_bwd(dout: Tensor, grid: Sequence[int], window: Sequence[int], backend: str) -> Tensor:
    return backends.module_for(backend, dout, head_dim=0).window_pool_bwd(dout, grid, window)


window_pool_bwd = torch.library.custom_op("logo_attn::window_pool_bwd", _window_pool_bwd, mutates_args=())


@window_pool_bwd.register_fake
def _(dout, grid, window, backend):
    return dout.new_empty((dout.shape[0], grid[0] * grid[1] * grid[2], dout.shape[2]))


class WindowPoolFunction(torch.autograd.Function):
    """Autograd for window pooling: backward spreads each window's gradient over its tokens. The
    backward is linear in the gradient, so it is its own second derivative's building block: a
    backward that records a graph calls the same op (the gradient of a mean is a mean's transpose)."""

    @staticmethod
    def forward(x, grid, window, backend):
        return call(torch.ops.logo_attn.window_pool_fwd, _window_pool_fwd, x, grid, window, backend)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, grid, window, backend = inputs
        ctx.args = (grid, window, backend)

    @staticmethod
    def backward(ctx, dout):
        return apply(WindowPoolBackward, dout, *ctx.args), None, None, None


class WindowPoolBackward(torch.autograd.Function):
    """dx = spread(dout); its own backward is the pooling of the incoming gradient (the adjoint)."""

    @staticmethod
    def forward(dout, grid, window, backend):
        return call(torch.ops.logo_attn.window_pool_bwd, _window_pool_bwd, dout, grid, window, backend)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, grid, window, backend = inputs
        ctx.args = (grid, window, backend)

    @staticmethod
    def backward(ctx, ddx):
        return apply(WindowPoolFunction, ddx, *ctx.args), None, None, None


def window_pool(x: Tensor, grid: Sequence[int], window: Sequence[int], *, backend: str = "auto") -> Tensor:
    """Mean of the tokens of each f x h x w window of the F x H x W grid.

    Args:
        x: ``(B, F*H*W, C)``, grid tokens in row-major (F, H, W) order, any strides.
        grid: ``(F, H, W)``; window: ``(f, h, w)``, clipped to the grid.

    Returns:
        ``(B, M, C)`` with M = ceil(F/f) * ceil(H/h) * ceil(W/w) windows in row-major order; a border
        window averages only its own tokens. Differentiable to any order.
    """
    op = "window_pool"
    check_tensors(op, x=x)
    if x.dim() != 3:
        raise ValueError(f"{op}: x must be 3-D (B, F*H*W, C), got shape {tuple(x.shape)}")
    grid = as_grid(grid)
    window = clip_window(grid, as_window(window))
    tokens = grid[0] * grid[1] * grid[2]
    if x.shape[1] != tokens:
        raise ValueError(f"{op}: x has {x.shape[1]} tokens but grid {grid} has F*H*W = {tokens}")
    backends.check_name(backend)
    return apply(WindowPoolFunction, x, list(grid), list(window), backend)
