"""local_attention on every backend against the float64 reference: output and all gradients."""

import math

import pytest
import torch

from logo_attn import local_attention, reference
from logo_attn.ops import clip_window
from oracle import attention_inputs, backend_dtype_params, backend_params, check_op, require

# B, grid, window, heads, head_dim, layout
CASES = [
    pytest.param(2, (4, 7, 7), (2, 7, 7), 2, 32, "packed", id="paper-window"),
    pytest.param(1, (5, 6, 7), (2, 4, 3), 3, 24, "heads_first", id="border-windows-every-axis"),
    pytest.param(2, (3, 5, 4), (4, 8, 8), 2, 16, "contiguous", id="window-larger-than-grid"),
    pytest.param(1, (2, 3, 9), (1, 1, 2), 1, 40, "packed", id="tiny-windows"),
    pytest.param(1, (2, 12, 11), (2, 12, 11), 1, 72, "contiguous", id="264-token-window"),
    pytest.param(1, (3, 4, 5), (2, 3, 3), 2, 128, "heads_first", id="head-dim-128"),
]


def run_local(backend, grid, window):
    return lambda q, k, v: local_attention(q, k, v, grid, window, backend=backend)


@pytest.mark.parametrize("B,grid,window,heads,head_dim,layout", CASES)
@pytest.mark.parametrize("backend,device,dtype", backend_dtype_params())
def test_matches_reference(backend, device, dtype, B, grid, window, heads, head_dim, layout, poison_empty):
    require(backend, device, dtype, head_dim)
    N = math.prod(grid)
    q, k, v = attention_inputs(B, N, N, heads, head_dim, dtype, device, layout)
    dout = torch.randn(B, N, heads, head_dim, dtype=dtype, device=device)
    clipped = clip_window(grid, window)
    check_op(
        run_local(backend, grid, window),
        lambda q, k, v: reference.local_attention(q, k, v, grid, clipped),
        (q, k, v), dout, dtype, ("out", "dq", "dk", "dv"),
        lowp_fn=lambda q, k, v: reference.local_attention_with_lse(q, k, v, grid, clipped, compute_dtype=dtype)[0],
    )


@pytest.mark.parametrize("backend,device", backend_params())
def test_sum_backward_with_stride0_grad(backend, device, poison_empty):
    """out.sum() hands backward an expanded, all-stride-0 gradient."""
    require(backend, device)
    grid, window = (3, 5, 6), (2, 3, 4)
    q, k, v = attention_inputs(2, 90, 90, 2, 16, torch.float32, device, "packed")
    local_attention(q, k, v, grid, window, backend=backend).sum().backward()
    base = q._base
    ref_inputs = tuple(t.detach().double().requires_grad_(True) for t in (q, k, v))
    reference.local_attention(*ref_inputs, grid, window).sum().backward()
    want = torch.stack([t.grad for t in ref_inputs], dim=2)
    torch.testing.assert_close(base.grad.double(), want, atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize("backend,device", backend_params())
def test_six_dim_input_keeps_its_shape(backend, device):
    require(backend, device)
    q, k, v = (torch.randn(2, 3, 4, 5, 2, 16, device=device) for _ in range(3))
    out = local_attention(q, k, v, None, (2, 2, 2), backend=backend)
    flat = local_attention(*(t.flatten(1, 3) for t in (q, k, v)), (3, 4, 5), (2, 2, 2), backend=backend)
    assert out.shape == q.shape
    torch.testing.assert_close(out.flatten(1, 3), flat, atol=0, rtol=0)


@pytest.mark.parametrize("backend,device", backend_params())
def test_backward_is_deterministic(backend, device):
    require(backend, device)
    grid, window = (4, 6, 5), (2, 4, 3)
    q, k, v = attention_inputs(2, 120, 120, 2, 32, torch.float32, device, "contiguous")
    dout = torch.randn_like(q)

    def run():
        out = local_attention(q, k, v, grid, window, backend=backend)
        return (out, *torch.autograd.grad(out, (q, k, v), dout))

    for first, second in zip(run(), run()):
        assert torch.equal(first, second)


@pytest.mark.parametrize("backend,device", backend_params())
def test_explicit_scale(backend, device):
    require(backend, device)
    q, k, v = attention_inputs(1, 60, 60, 2, 16, torch.float32, device, "contiguous")
    out = local_attention(q, k, v, (3, 4, 5), (2, 2, 5), scale=0.3, backend=backend)
    want = reference.local_attention(q.double(), k.double(), v.double(), (3, 4, 5), (2, 2, 5), scale=0.3)
    torch.testing.assert_close(out.double(), want, atol=2e-5, rtol=2e-5)
