"""window_pool, its whole story: the reference against means over coordinates and avg_pool3d, every
backend against the float64 reference, the registered ops, hostile input and inputs past 2**31
elements on GPU."""

import math

import pytest
import torch
import torch.nn.functional as F

from logo_attn import reference, window_pool
from logo_attn.geometry import clip_window, window_count
from dense_reference import coordinates
from oracle import INT32_LIMIT, LAST_ITEM, backend_dtype_params, backend_params, batch_beyond_int32, check_op, require

ops = torch.ops.logo_attn

# B, grid, window, channels, layout
CASES = [
    pytest.param(2, (4, 7, 7), (2, 7, 7), 32, "contiguous", id="paper-window"),
    pytest.param(1, (5, 6, 7), (2, 4, 3), 24, "strided", id="border-windows-strided"),
    pytest.param(2, (3, 5, 4), (4, 8, 8), 16, "channels_first", id="window-larger-than-grid"),
    pytest.param(1, (2, 3, 9), (1, 1, 2), 40, "contiguous", id="tiny-windows"),
]


def pool_input(B, N, C, dtype, device, layout):
    if layout == "contiguous":
        return torch.randn(B, N, C, dtype=dtype, device=device, requires_grad=True)
    if layout == "strided":  # every other channel of a wider activation
        return torch.randn(B, N, 2 * C, dtype=dtype, device=device, requires_grad=True)[..., ::2]
    return torch.randn(B, C, N, dtype=dtype, device=device, requires_grad=True).transpose(1, 2)  # channels-first


@pytest.mark.parametrize("grid,window", [((3, 5, 7), (2, 2, 3)), ((2, 3, 4), (5, 9, 9)), ((5, 1, 6), (3, 1, 4))])
def test_reference_equals_mean_over_coordinates(grid, window):
    x = torch.randn(2, math.prod(grid), 6, dtype=torch.float64)
    clipped = clip_window(grid, window)
    t, y, z = coordinates(grid)
    nf, nh, nw = (-(-g // w) for g, w in zip(grid, clipped))
    index = ((t // clipped[0]) * nh + y // clipped[1]) * nw + z // clipped[2]  # row-major window id
    want = torch.stack([x[:, index == m].mean(dim=1) for m in range(nf * nh * nw)], dim=1)
    torch.testing.assert_close(reference.window_pool(x, grid, clipped), want)


def test_written_out_backward_equals_autograd():
    grid, window = (3, 5, 7), (2, 2, 3)
    x = torch.randn(2, math.prod(grid), 4, dtype=torch.float64, requires_grad=True)
    pooled = reference.window_pool_fwd(x, grid, window)
    dpool = torch.randn_like(pooled)
    torch.testing.assert_close(reference.window_pool_bwd(dpool, grid, window), torch.autograd.grad(pooled, x, dpool)[0])


@pytest.mark.parametrize("B,grid,window,C,layout", CASES)
@pytest.mark.parametrize("backend,device,dtype", backend_dtype_params())
def test_matches_reference(backend, device, dtype, B, grid, window, C, layout, poison_empty):
    require(backend, device, dtype)
    x = pool_input(B, math.prod(grid), C, dtype, device, layout)
    clipped = clip_window(grid, window)
    dout = torch.randn(B, window_count(grid, clipped), C, dtype=dtype, device=device)
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


@pytest.mark.parametrize("shape", [(0, 24, 8), (2, 24, 0)], ids=["empty-batch", "no-channels"])
@pytest.mark.parametrize("backend,device", backend_params())
def test_empty_batch_and_no_channels(backend, device, shape):
    require(backend, device)
    x = torch.randn(shape, device=device, requires_grad=True)
    out = window_pool(x, (2, 3, 4), (2, 2, 2), backend=backend)
    assert out.shape == (shape[0], window_count((2, 3, 4), (2, 2, 2)), shape[2])
    dx, = torch.autograd.grad(out.sum(), x)
    assert dx.shape == x.shape


@pytest.mark.parametrize("backend,device", backend_params())
def test_non_finite_value_stays_in_its_window(backend, device):
    require(backend, device)
    grid, window = (4, 5, 6), (2, 3, 4)
    x = torch.randn(1, 120, 8, device=device)
    x[0, 37, 3] = float("nan")
    out = window_pool(x, grid, window, backend=backend)
    want = window_pool(x, grid, window, backend="torch")
    assert torch.equal(torch.isnan(out), torch.isnan(want)) and torch.isnan(out).sum() == 1


@pytest.mark.parametrize("backend,device", backend_params())
def test_opcheck_compile_gradcheck_and_second_derivatives(backend, device):
    require(backend, device)
    grid, window = [3, 4, 5], [2, 3, 2]
    x = torch.randn(2, 60, 2, 16, device=device).transpose(2, 3).flatten(2)  # strided channels
    pooled = ops.window_pool_fwd(x, grid, window, backend)
    torch.library.opcheck(ops.window_pool_fwd, (x, grid, window, backend))
    torch.library.opcheck(ops.window_pool_bwd, (torch.randn_like(pooled), grid, window, backend))
    torch._dynamo.reset()
    compiled = torch.compile(lambda x: window_pool(x, grid, window, backend=backend), fullgraph=True, dynamic=True)
    leaf = x.detach().requires_grad_()
    torch.testing.assert_close(compiled(leaf), window_pool(leaf, grid, window, backend=backend))
    dtype = torch.float64 if backend in ("torch", "cpu") else torch.float32
    x64 = torch.randn(1, 60, 3, dtype=dtype, device=device, requires_grad=True)
    if dtype == torch.float64:
        assert torch.autograd.gradcheck(lambda x: window_pool(x, grid, window, backend=backend), (x64,))
        assert torch.autograd.gradgradcheck(lambda x: window_pool(x, grid, window, backend=backend), (x64,))


def test_tokens_do_not_match_grid():
    with pytest.raises(ValueError, match=r"x has 25 tokens but grid \(2, 3, 4\) has F\*H\*W = 24"):
        window_pool(torch.randn(1, 25, 4), (2, 3, 4), (2, 2, 2))
    with pytest.raises(ValueError, match=r"window_pool: x must be 3-D \(B, F\*H\*W, C\)"):
        window_pool(torch.randn(1, 24, 2, 2), (2, 3, 4), (2, 2, 2))
    with pytest.raises(ValueError, match=r"window \(f, h, w\) entries must be >= 1"):
        window_pool(torch.randn(1, 24, 4), (2, 3, 4), (2, 0, 2))


@pytest.mark.parametrize("backend", ["triton", "cuda"])
def test_large_shape_past_int32_offsets(backend):
    dtype, grid, window, channels = torch.bfloat16, (16, 14, 14), (2, 7, 7), 512
    require(backend, "cuda", dtype, 64)
    tokens = math.prod(grid)
    x = torch.randn(batch_beyond_int32(tokens * channels), tokens, channels, device="cuda", dtype=dtype).requires_grad_()
    assert x[LAST_ITEM].storage_offset() >= INT32_LIMIT
    check_op(lambda x: window_pool(x, grid, window, backend=backend),
             lambda x: reference.window_pool(x, grid, window),
             (x,), torch.randn(x.shape[0], window_count(grid, window), channels, device="cuda", dtype=dtype),
             dtype, ("out", "dx"), items=LAST_ITEM)
