"""global_attention on every backend against the float64 reference: output and all gradients."""

import pytest
import torch

from logo_attn import global_attention, reference
from oracle import attention_inputs, backend_dtype_params, backend_params, check_op, require

# B, Nq, Nk, heads, head_dim, layout
CASES = [
    pytest.param(2, 37, 8, 2, 32, "packed", id="8-pooled-keys"),
    pytest.param(1, 50, 1, 3, 24, "heads_first", id="single-key"),
    pytest.param(2, 20, 17, 2, 16, "contiguous", id="17-keys"),
    pytest.param(1, 64, 130, 1, 128, "packed", id="130-keys-head-dim-128"),
    pytest.param(1, 9, 64, 2, 72, "heads_first", id="head-dim-72"),
]


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
