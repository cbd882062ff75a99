"""The registered ops (DESIGN §4) on every backend: opcheck with contiguous and permuted inputs,
torch.compile(fullgraph=True, dynamic=True) forward+backward without recompiles, float64 gradcheck,
and FlopCounterMode totals equal to the attended-pair formulas."""

import math

import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend
from torch.utils.flop_counter import FlopCounterMode

from logo_attn import global_attention, local_attention, window_pool
from logo_attn.flops import attention_flops, local_attention_pairs
from oracle import attention_inputs, backend_dtype_params, backend_params, require

ops = torch.ops.logo_attn


def detached(*tensors):
    return tuple(t.detach() for t in tensors)


@pytest.mark.parametrize("layout", ["contiguous", "heads_first"])
@pytest.mark.parametrize("backend,device", backend_params())
def test_opcheck(backend, device, layout):
    require(backend, device)
    grid, window, scale = [3, 4, 5], [2, 3, 2], 0.25
    q, k, v = detached(*attention_inputs(2, 60, 60, 2, 16, torch.float32, device, layout))
    out, lse = ops.local_attn_fwd(q, k, v, grid, window, scale, backend)
    torch.library.opcheck(ops.local_attn_fwd, (q, k, v, grid, window, scale, backend))
    torch.library.opcheck(ops.local_attn_bwd, (torch.randn_like(out), q, k, v, out, lse, grid, window, scale, backend))

    gk, gv = k[:, :7], v[:, :7]
    out, lse = ops.global_attn_fwd(q, gk, gv, scale, backend)
    torch.library.opcheck(ops.global_attn_fwd, (q, gk, gv, scale, backend))
    torch.library.opcheck(ops.global_attn_bwd, (torch.randn_like(out), q, gk, gv, out, lse, scale, backend))

    x = q.flatten(2)  # (B, N, heads*d), strided in the heads_first layout
    pooled = ops.window_pool_fwd(x, grid, window, backend)
    torch.library.opcheck(ops.window_pool_fwd, (x, grid, window, backend))
    torch.library.opcheck(ops.window_pool_bwd, (torch.randn_like(pooled), grid, window, backend))


def logo_attention(q, k, v, grid, backend):
    """A miniature LOGO step through all three ops, so one compiled graph holds them all."""
    local = local_attention(q, k, v, grid, (2, 2, 3), backend=backend)
    B, N, heads, d = local.shape
    pooled = window_pool(local.flatten(2), grid, (2, 2, 3), backend=backend).unflatten(2, (heads, d))
    return global_attention(local, pooled, pooled, backend=backend)


@pytest.mark.parametrize("backend,device", backend_params())
def test_compile_fullgraph_dynamic_without_recompiles(backend, device):
    require(backend, device)
    torch._dynamo.reset()
    counter = CompileCounterWithBackend("inductor")
    compiled = torch.compile(logo_attention, backend=counter, fullgraph=True, dynamic=True)
    # sizes chosen distinct from each other and from 0/1, so neither duck sizing nor 0/1
    # specialisation adds guards that a new shape would fail
    for B, grid in ((6, (3, 4, 5)), (7, (4, 6, 5)), (9, (5, 4, 7))):
        q, k, v = attention_inputs(B, math.prod(grid), math.prod(grid), 2, 16, torch.float32, device, "packed")
        dout = torch.randn(q.shape, device=device)
        got = compiled(q, k, v, grid, backend)
        got_grads = torch.autograd.grad(got, (q, k, v), dout)
        want = logo_attention(q, k, v, grid, backend)
        want_grads = torch.autograd.grad(want, (q, k, v), dout)
        torch.testing.assert_close(got, want)
        for g, w in zip(got_grads, want_grads):
            torch.testing.assert_close(g, w)
    assert counter.frame_count == 1, f"recompiled: {counter.frame_count} frames for 3 shapes"


@pytest.mark.parametrize("backend,device,dtype", backend_dtype_params(dtypes=(torch.float64,)))
def test_gradcheck_float64(backend, device, dtype):
    require(backend, device, dtype)
    q, k, v = (t.detach().requires_grad_(True) for t in attention_inputs(1, 24, 24, 2, 4, dtype, device, "contiguous"))
    grid, window = (2, 3, 4), (2, 2, 3)
    assert torch.autograd.gradcheck(lambda q, k, v: local_attention(q, k, v, grid, window, backend=backend), (q, k, v))
    assert torch.autograd.gradcheck(lambda q, k, v: global_attention(q, k[:, :5], v[:, :5], backend=backend), (q, k, v))
    x = q.detach().flatten(2).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: window_pool(x, grid, window, backend=backend), (x,))


def brute_force_pairs(grid, window):
    """Sum over windows of tokens^2, counting each token's window id from its coordinates."""
    t, y, x = torch.meshgrid(*(torch.arange(g) for g in grid), indexing="ij")
    ids = [(c // w).flatten() for c, w in zip((t, y, x), window)]
    window_id = (ids[0] * grid[1] + ids[1]) * grid[2] + ids[2]
    return int((torch.bincount(window_id).long() ** 2).sum())


@pytest.mark.parametrize("backend,device", backend_params())
def test_flop_counter_counts_attended_pairs(backend, device):
    require(backend, device)
    B, grid, window, heads, d = 2, (3, 5, 7), (2, 2, 3), 2, 16
    N = math.prod(grid)
    q, k, v = attention_inputs(B, N, N, heads, d, torch.float32, device, "contiguous")
    with FlopCounterMode(display=False) as counter:
        local_attention(q, k, v, grid, window, backend=backend).sum().backward()
    pairs = local_attention_pairs(grid, window)
    assert pairs == brute_force_pairs(grid, window)
    want = attention_flops(pairs, B, heads, d) + attention_flops(pairs, B, heads, d, backward=True)
    assert counter.get_total_flops() == want

    with FlopCounterMode(display=False) as counter:
        global_attention(q, k[:, :9], v[:, :9], backend=backend).sum().backward()
    pairs = N * 9
    assert counter.get_total_flops() == attention_flops(pairs, B, heads, d) + attention_flops(pairs, B, heads, d, backward=True)
