"""global_attention, its whole story: the reference against PyTorch's SDPA, every backend against the
float64 reference (output and every gradient), the registered ops (opcheck, torch.compile,
gradcheck, FLOP counting, second derivatives), hostile input and inputs past 2**31 elements on GPU."""

import pytest
import torch
import torch.nn.functional as F
from torch._dynamo.testing import CompileCounterWithBackend
from torch.utils.flop_counter import FlopCounterMode

from logo_attn import global_attention, reference
from logo_attn.flops import attention_flops
from oracle import (INT32_LIMIT, LAST_ITEM, attention_inputs, backend_dtype_params, backend_params,
                    batch_beyond_int32, check_op, require)

ops = torch.ops.logo_attn

# B, Nq, Nk, heads, head_dim, layout
CASES = [
    pytest.param(2, 37, 8, 2, 32, "packed", id="8-pooled-keys"),
    pytest.param(1, 50, 1, 3, 24, "heads_first", id="single-key"),
    pytest.param(2, 20, 17, 2, 16, "contiguous", id="17-keys"),
    pytest.param(1, 64, 130, 1, 128, "packed", id="130-keys-head-dim-128"),
    pytest.param(1, 9, 64, 2, 72, "heads_first", id="head-dim-72"),
]


@pytest.mark.parametrize("Nq,Nk", [(7, 1), (50, 8), (33, 130)])
def test_reference_equals_sdpa(Nq, Nk):
    q = torch.randn(2, Nq, 3, 24, dtype=torch.float64)
    k, v = (torch.randn(2, Nk, 3, 24, dtype=torch.float64) for _ in range(2))
    want = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)
    torch.testing.assert_close(reference.global_attention(q, k, v), want)


def test_written_out_backward_equals_autograd():
    q = torch.randn(2, 9, 3, 8, dtype=torch.float64, requires_grad=True)
    k, v = (torch.randn(2, 4, 3, 8, dtype=torch.float64, requires_grad=True) for _ in range(2))
    out, lse = reference.global_attn_fwd(q, k, v, 0.7)
    dout = torch.randn_like(out)
    for g, w in zip(reference.global_attn_bwd(dout, q, k, v, out, lse, 0.7), torch.autograd.grad(out, (q, k, v), dout)):
        torch.testing.assert_close(g, w)


@pytest.mark.parametrize("B,Nq,Nk,heads,head_dim,layout", CASES)
@pytest.mark.parametrize("backend,device,dtype", backend_dtype_params())
def test_matches_reference(backend, device, dtype, B, Nq, Nk, heads, head_dim, layout, poison_empty):
    require(backend, device, dtype, head_dim)
    q, k, v = attention_inputs(B, Nq, Nk, heads, head_dim, dtype, device, layout)
    dout = torch.randn(B, Nq, heads, head_dim, dtype=dtype, device=device)
    check_op(
        lambda q, k, v: global_attention(q, k, v, backend=backend),
        reference.global_attention,
        (q, k, v), dout, dtype, ("out", "dq", "dk", "dv"),
        lowp_fn=lambda q, k, v: reference.global_attention_with_lse(q, k, v, compute_dtype=dtype)[0],
    )


@pytest.mark.parametrize("backend,device", backend_params())
def test_sum_backward_with_stride0_grad(backend, device, poison_empty):
    require(backend, device)
    q, k, v = attention_inputs(2, 33, 9, 2, 16, torch.float32, device, "contiguous")
    global_attention(q, k, v, backend=backend).sum().backward()
    ref_inputs = tuple(t.detach().double().requires_grad_(True) for t in (q, k, v))
    reference.global_attention(*ref_inputs).sum().backward()
    for got, want in zip((q, k, v), ref_inputs):
        torch.testing.assert_close(got.grad.double(), want.grad, atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize("deterministic", [True, False], ids=["deterministic", "default"])
@pytest.mark.parametrize("backend,device", backend_params())
def test_backward_is_reproducible(backend, device, deterministic):
    """With deterministic algorithms on, dk/dv are bitwise equal run to run (no float atomics)."""
    require(backend, device)
    q, k, v = attention_inputs(2, 300, 12, 2, 32, torch.float32, device, "contiguous")
    dout = torch.randn_like(q)
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(deterministic)
    try:
        runs = [torch.autograd.grad(global_attention(q, k, v, backend=backend), (q, k, v), dout) for _ in range(2)]
    finally:
        torch.use_deterministic_algorithms(previous)
    for first, second in zip(*runs):
        if deterministic:
            assert torch.equal(first, second)
        else:
            torch.testing.assert_close(first, second, atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------------------------------
# Hostile input: empty batches, zero heads, no queries
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("q_shape,kv_shape", [((0, 8, 2, 16), (0, 4, 2, 16)), ((2, 8, 0, 16), (2, 4, 0, 16)),
                                              ((2, 0, 2, 16), (2, 4, 2, 16))],
                         ids=["empty-batch", "zero-heads", "no-queries"])
@pytest.mark.parametrize("backend,device", backend_params())
def test_empty_inputs(backend, device, q_shape, kv_shape):
    """Nothing to compute still gives outputs and gradients of the right shapes; no query means the
    keys and values get zero gradients."""
    require(backend, device)
    q = torch.randn(q_shape, device=device, requires_grad=True)
    k, v = (torch.randn(kv_shape, device=device, requires_grad=True) for _ in range(2))
    out = global_attention(q, k, v, backend=backend)
    assert out.shape == q.shape
    dq, dk, dv = torch.autograd.grad(out.sum(), (q, k, v))
    assert dq.shape == q.shape and dk.shape == k.shape and dv.shape == v.shape
    assert not dk.any() and not dv.any()


# --------------------------------------------------------------------------------------------------
# The registered ops
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["contiguous", "heads_first"])
@pytest.mark.parametrize("backend,device", backend_params())
def test_opcheck(backend, device, layout):
    require(backend, device)
    q, k, v = (t.detach() for t in attention_inputs(2, 60, 7, 2, 16, torch.float32, device, layout))
    out, lse = ops.global_attn_fwd(q, k, v, 0.25, backend)
    torch.library.opcheck(ops.global_attn_fwd, (q, k, v, 0.25, backend))
    torch.library.opcheck(ops.global_attn_bwd, (torch.randn_like(out), q, k, v, out, lse, 0.25, backend))


@pytest.mark.parametrize("backend,device", backend_params())
def test_compile_fullgraph_dynamic_without_recompiles(backend, device):
    require(backend, device)
    torch._dynamo.reset()
    counter = CompileCounterWithBackend("inductor")
    compiled = torch.compile(lambda q, k, v: global_attention(q, k, v, backend=backend), backend=counter,
                             fullgraph=True, dynamic=True)
    for B, Nq, Nk in ((6, 30, 5), (7, 44, 9), (9, 51, 13)):
        q, k, v = attention_inputs(B, Nq, Nk, 2, 16, torch.float32, device, "packed")
        got, want = compiled(q, k, v), global_attention(q, k, v, backend=backend)
        torch.testing.assert_close(got, want)
        dout = torch.randn_like(got)
        for g, w in zip(torch.autograd.grad(got, (q, k, v), dout), torch.autograd.grad(want, (q, k, v), dout)):
            torch.testing.assert_close(g, w)
    assert counter.frame_count == 1, f"recompiled: {counter.frame_count} frames for 3 shapes"


@pytest.mark.parametrize("backend,device,dtype", backend_dtype_params(dtypes=(torch.float64,)))
def test_gradcheck_float64(backend, device, dtype):
    require(backend, device, dtype)
    q, k, v = (t.detach().requires_grad_(True) for t in attention_inputs(1, 24, 5, 2, 4, dtype, device, "contiguous"))
    assert torch.autograd.gradcheck(lambda q, k, v: global_attention(q, k, v, backend=backend), (q, k, v))


@pytest.mark.parametrize("backend,device", backend_params())
def test_second_derivatives_and_torch_func_grad(backend, device):
    require(backend, device)
    dtype = torch.float64 if backend in ("torch", "cpu") else torch.float32
    q, k, v = (t.detach().requires_grad_(True) for t in attention_inputs(1, 24, 5, 2, 4, dtype, device, "contiguous"))

    def penalty(fn):
        grads = torch.autograd.grad(fn(q, k, v).square().sum(), (q, k, v), create_graph=True)
        return torch.autograd.grad(sum(g.square().sum() for g in grads), (q, k, v))

    got = penalty(lambda q, k, v: global_attention(q, k, v, backend=backend))
    want = penalty(reference.global_attention)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=1e-4 * w.abs().max().item(), rtol=1e-4)
    func_grad = torch.func.grad(lambda q: global_attention(q, k, v, backend=backend).square().sum())(q.detach())
    ref_grad, = torch.autograd.grad(reference.global_attention(q, k, v).square().sum(), q)
    torch.testing.assert_close(func_grad, ref_grad, atol=1e-4 * ref_grad.abs().max().item(), rtol=1e-4)


@pytest.mark.parametrize("backend,device", backend_params())
def test_flop_counter_counts_attended_pairs(backend, device):
    require(backend, device)
    B, Nq, Nk, heads, d = 2, 105, 9, 2, 16
    q, k, v = attention_inputs(B, Nq, Nk, heads, d, torch.float32, device, "contiguous")
    with FlopCounterMode(display=False) as counter:
        global_attention(q, k, v, backend=backend).sum().backward()
    pairs = Nq * Nk
    assert counter.get_total_flops() == attention_flops(pairs, B, heads, d) + attention_flops(pairs, B, heads, d, backward=True)


# --------------------------------------------------------------------------------------------------
# Argument errors specific to this op (the shared checks are in tests/test_checks.py)
# --------------------------------------------------------------------------------------------------


def test_keys_and_values_differ_in_length():
    q, k, v = (torch.randn(1, 24, 2, 8) for _ in range(3))
    with pytest.raises(ValueError, match="k and v must have the same number of tokens, got 24 and 5"):
        global_attention(q, k, v[:, :5])


def test_no_keys():
    q, k = torch.randn(1, 24, 2, 8), torch.randn(1, 0, 2, 8)
    with pytest.raises(ValueError, match="head_dim and the number of keys must be >= 1"):
        global_attention(q, k, k)


# --------------------------------------------------------------------------------------------------
# Inputs past 2**31 elements (GPU only)
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["triton", "cuda"])
def test_large_shape_past_int32_offsets(backend):
    dtype, tokens, keys, heads, head_dim = torch.bfloat16, 16 * 14 * 14, 32, 8, 64
    require(backend, "cuda", dtype, head_dim)
    B = batch_beyond_int32(tokens * heads * head_dim)
    q = torch.randn(B, tokens, heads, head_dim, device="cuda", dtype=dtype).requires_grad_()
    assert q[LAST_ITEM].storage_offset() >= INT32_LIMIT
    k, v = torch.randn(B, keys, 2, heads, head_dim, device="cuda", dtype=dtype).requires_grad_().unbind(2)
    check_op(lambda q, k, v: global_attention(q, k, v, backend=backend), reference.global_attention,
             (q, k, v), torch.randn_like(q), dtype, ("out", "dq", "dk", "dv"), items=LAST_ITEM)
