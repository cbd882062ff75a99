"""What every backend suite shares: the backend/device/dtype matrix, inputs in several stride layouts,
float64 references with gradients by autograd, and the tolerance rules.

Tolerances: `logo_attn.tolerance`'s rule (the benchmarks judge by it too). In fp16/bf16 the
PyTorch computation setting the bound is the reference in that same low precision
(`compute_dtype=dtype`: matmuls and softmax in fp16/bf16).
"""

from __future__ import annotations

import pytest
import torch

from logo_attn import backends
from logo_attn.tolerance import HALF, TOLERANCE, error_bound, max_error  # noqa: F401  (the suites' names)

# (backend, device) pairs every op suite runs. CUDA pairs run where a GPU is present; Triton runs on
# CPU tensors under its interpreter on machines without one (conftest sets TRITON_INTERPRET=1).
BACKEND_DEVICES = (("torch", "cpu"), ("cpu", "cpu"), ("triton", "cpu"), ("torch", "cuda"), ("triton", "cuda"), ("cuda", "cuda"))


# What each backend must compute: the tests' own expectation, checked against what the backends
# declare (tests/test_backends.py), so a backend that silently drops a dtype fails.
EXPECTED_DTYPES = {
    "torch": (torch.float64, torch.float32, torch.float16, torch.bfloat16),
    "cpu": (torch.float64, torch.float32, torch.float16, torch.bfloat16),
    "triton": (torch.float32, torch.float16, torch.bfloat16),
    "cuda": (torch.float32, torch.float16, torch.bfloat16),
}


def dtypes_for(backend: str, device: str) -> tuple[torch.dtype, ...]:
    dtypes = EXPECTED_DTYPES[backend]
    if backend == "triton" and device == "cpu":  # the interpreter computes bf16 tl.dot wrongly
        dtypes = tuple(d for d in dtypes if d != torch.bfloat16)
    return dtypes


def backend_dtype_params(dtypes=(torch.float64, torch.float32, torch.float16, torch.bfloat16)):
    """pytest params (backend, device, dtype) for every pair and every dtype the backend computes there."""
    return [
        pytest.param(b, d, dt, id=f"{b}-{d}-{str(dt).removeprefix('torch.')}")
        for b, d in BACKEND_DEVICES
        for dt in dtypes
        if dt in dtypes_for(b, d)
    ]


def backend_params(interpreted_triton: bool = True):
    """(backend, device) pairs; without Triton on CPU (its interpreter) where `interpreted_triton` is
    False: for the tests whose Triton case is the same kernels as cheaper ones test, run for minutes."""
    return [pytest.param(b, d, id=f"{b}-{d}") for b, d in BACKEND_DEVICES
            if interpreted_triton or (b, d) != ("triton", "cpu")]


def require(backend: str, device: str, dtype: torch.dtype = torch.float32, head_dim: int = 16) -> None:
    """Skip for what the machine lacks (a GPU); fail when the install lacks a backend it should have."""
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU; this machine has none")
    if backend == "triton" and device == "cpu" and not backends.triton_interpreted():
        pytest.skip("TRITON_INTERPRET is unset because a GPU is present: Triton is tested on CUDA here")
    problem = backends.why_not(backend, device, dtype, head_dim)
    if problem:
        pytest.fail(f"backend {backend!r} should run on {device} {dtype} here but cannot: {problem}")


# --------------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------------

# Inputs past 2**31 elements (GPU tests): the last batch item lies wholly beyond that offset.
INT32_LIMIT = 2**31
LAST_ITEM = slice(-1, None)


def batch_beyond_int32(elements_per_item: int) -> int:
    """The smallest batch whose last item starts past element 2**31."""
    return INT32_LIMIT // elements_per_item + 2


LAYOUTS = ("contiguous", "packed", "heads_first")


def attention_inputs(B, Nq, Nk, heads, head_dim, dtype, device, layout):
    """q (B, Nq, heads, d) and k, v (B, Nk, heads, d) with the given storage, requiring grad.

    contiguous:  three separate tensors.
    packed:      views of one projection, like `qkv.unbind(2)` (q packed with k/v when Nq == Nk).
    heads_first: (B, heads, N, d) storage seen through transpose(1, 2), as a heads-first model has it.
    """
    def randn(*shape):
        return torch.randn(*shape, dtype=dtype, device=device)

    if layout == "contiguous":
        q, k, v = randn(B, Nq, heads, head_dim), randn(B, Nk, heads, head_dim), randn(B, Nk, heads, head_dim)
        leaves = (q, k, v)
    elif layout == "packed" and Nq == Nk:
        qkv = randn(B, Nq, 3, heads, head_dim)
        leaves = (qkv,)
    elif layout == "packed":
        q, kv = randn(B, Nq, heads, head_dim), randn(B, Nk, 2, heads, head_dim)
        leaves = (q, kv)
    elif layout == "heads_first":
        q, k, v = randn(B, heads, Nq, head_dim), randn(B, heads, Nk, head_dim), randn(B, heads, Nk, head_dim)
        leaves = (q, k, v)
    else:
        raise ValueError(layout)
    for t in leaves:
        t.requires_grad_(True)
    if layout == "packed" and Nq == Nk:
        return leaves[0].unbind(2)
    if layout == "packed":
        return (leaves[0], *leaves[1].unbind(2))
    if layout == "heads_first":
        return tuple(t.transpose(1, 2) for t in leaves)
    return leaves


def as_double_leaves(*tensors):
    return tuple(t.detach().double().requires_grad_(True) for t in tensors)


def as_leaves(*tensors, dtype=None):
    return tuple(t.detach().to(dtype or t.dtype).requires_grad_(True) for t in tensors)


def grads(out, inputs, dout):
    return torch.autograd.grad(out, inputs, dout)


# --------------------------------------------------------------------------------------------------
# Comparison
# --------------------------------------------------------------------------------------------------


def assert_matches(name, actual, reference, dtype, lowp=None):
    """`actual` (dtype) against the float64 `reference`; `lowp` is the PyTorch result in dtype for fp16/bf16."""
    assert actual.shape == reference.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(reference.shape)}"
    assert actual.dtype == dtype, f"{name}: dtype {actual.dtype}, expected {dtype}"
    assert torch.isfinite(actual).all(), f"{name}: non-finite values (an output element was never written?)"
    err = max_error(actual, reference)
    magnitude = reference.abs().max().item()
    if dtype in HALF:
        assert lowp is not None, "low-precision comparisons need the PyTorch low-precision result"
    bound, rule = error_bound(dtype, magnitude, None if lowp is None else max_error(lowp, reference))
    assert err <= bound, f"{name}: max error {err:.3e} exceeds {bound:.3e} ({rule})"



def check_op(run, reference_fn, inputs, dout, dtype, names, lowp_fn=None, items=slice(None)):
    """Compare an op and the gradients of all its inputs against float64 autograd through `reference_fn`.

    run(*inputs) is the op under test; reference_fn runs on float64 copies; for fp16/bf16, lowp_fn
    (default reference_fn) runs on copies in the input dtype and sets the 2x bound. `items` selects
    the batch items compared (all by default): the references run on those items alone, for inputs
    too large to copy to float64 whole.
    """
    out = run(*inputs)
    got = tuple(t[items] for t in (out, *grads(out, inputs, dout)))
    inputs, dout = tuple(t[items] for t in inputs), dout[items]
    ref_inputs = as_double_leaves(*inputs)
    ref = reference_fn(*ref_inputs)
    want = (ref, *grads(ref, ref_inputs, dout.double()))
    lowp = (None,) * len(got)
    if dtype in HALF:
        lowp_inputs = as_leaves(*inputs)
        low = (lowp_fn or reference_fn)(*lowp_inputs)
        lowp = (low, *grads(low, lowp_inputs, dout))
    for name, actual, expected, low in zip(names, got, want, lowp):
        assert_matches(name, actual, expected, dtype, low)
