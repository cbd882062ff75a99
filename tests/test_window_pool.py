"""window_pool on every backend against the float64 reference and PyTorch's avg_pool3d."""

import math

import pytest
import torch
import torch.nn.functional as F

from logo_attn import reference, window_pool
from logo_attn.ops import clip_window
from oracle import backend_dtype_params, backend_params, check_op, require

# B, grid, window, channels, layout
CASES = [
    pytest.param(2, (4, 7, 7), (2, 7, 7), 32, "contiguous", id="paper-window"),
    pytest.param(1, (5, 6, 7), (2, 4, 3), 24, "strided", id="border-windows-strided"),
    pytest.param(2, (3, 5, 4), (4, 8, 8), 16, "channels_first", id="window-larger-than-grid"),
    pytest.param(1, (2, 3, 9), (1, 1, 2), 40, "contiguous", id="tiny-windows"),
]


def pool_input(B, N, C, dtype, device, layout):
    if layout == "contiguous":
        base = torch.randn(B, N, C, dtype=dtype, device=device, requires_grad=True)
        return base
    if layout == "strided":  # every other channel of a wider activation
        base = torch.randn(B, N, 2 * C, dtype=dtype, device=device, requires_grad=True)
        return base[..., ::2]
    base = torch.randn(B, C, N, dtype=dtype, device=device, requires_grad=True)  # channels-first storage
    return base.transpose(1, 2)


@pytest.mark.parametrize("B,grid,window,C,layout", CASES)
@pytest.mark.parametrize("backend,device,dtype", backend_dtype_params())
def test_matches_reference(backend, device, dtype, B, grid, window, C, layout, poison_empty):
    require(backend, device, dtype)
    x = pool_input(B, math.prod(grid), C, dtype, device, layout)
    clipped = clip_window(grid, window)
    M = math.prod(reference.num_windows(grid, clipped))
    dout = torch.randn(B, M, C, dtype=dtype, device=device)
    check_op(
        lambda x: window_pool(x, grid, window, backend=backend),
        lambda x: reference.window_pool(x, grid, clipped),
        (x,), dout, dtype, ("out", "dx"),
    )


@pytest.mark.parametrize("backend,device", backend_params())
def test_equals_avg_pool3d_when_window_divides(backend, device):
    require(backend, device)
    B, (Fg, H, W), win, C = 2, (4, 6, 9), (2, 3, 3), 8
    x = torch.randn(B, Fg * H * W, C, device=device, dtype=torch.float64 if backend in ("torch", "cpu") else torch.float32)
    volume = x.transpose(1, 2).reshape(B, C, Fg, H, W)
    want = F.avg_pool3d(volume, win, win).flatten(2).transpose(1, 2)
    torch.testing.assert_close(window_pool(x, (Fg, H, W), win, backend=backend), want, atol=1e-6, rtol=1e-6)
