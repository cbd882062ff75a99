"""Shifted windows and the relative position bias in the C++ CPU kernels, through the backend
adapter (`logo_attn._cpp`, the protocol the ops call) and the raw torch.ops.logo_attn_C ops.

Every result (out, lse, dq, dk, dv, dbias) is compared with tests/dense_reference.py, full
attention with a coordinate-built window mask and gathered bias, in float64: float64 and float32
within oracle's tolerances, bfloat16 by the 2x rule (error at most twice that of PyTorch's own
bf16 run of the dense reference). Also: float64 gradcheck of the kernels w.r.t. q, k, v and the
bias table; dbias bitwise the same across runs and thread counts; the raw ops' argument checks.
"""

from __future__ import annotations

import math

import pytest
import torch

from dense_reference import dense_local_attention, relative_bias, same_window_mask
from logo_attn import _cpp
from logo_attn.geometry import clip_shift, clip_window
from oracle import HALF, TOLERANCE, max_error

pytestmark = pytest.mark.usefixtures("kernel_threads")

# B, grid, window as the user passes it (the bias table is built for it), shift, heads, head_dim.
CASES = [
    pytest.param(2, (3, 5, 6), (2, 3, 4), (1, 2, 3), 2, 8, id="non-divisible-leading-partial-windows"),
    pytest.param(1, (2, 5, 7), (4, 3, 9), (0, 1, 0), 2, 16, id="clipped-axes-larger-bias-table"),
    pytest.param(1, (3, 14, 15), (3, 10, 10), (0, 4, 5), 1, 8, id="300-token-window-several-query-blocks"),
    pytest.param(2, (4, 4, 5), (2, 2, 2), (1, 1, 1), 3, 4, id="small-windows-shifted-everywhere"),
    pytest.param(1, (1, 6, 6), (1, 3, 3), (0, 0, 0), 2, 33, id="unshifted-head-dim-33"),
]
# q's dtype and the bias table's: q's own, or the accumulation type.
DTYPES = [
    pytest.param(torch.float64, torch.float64, id="float64"),
    pytest.param(torch.float32, torch.float32, id="float32"),
    pytest.param(torch.bfloat16, torch.bfloat16, id="bfloat16"),
    pytest.param(torch.bfloat16, torch.float32, id="bfloat16-float32-bias"),
]
SCALE = 0.4


def clipped(grid, window, shift):
    """What the op passes its backends: the window clipped to the grid, no shift on clipped axes."""
    return list(clip_window(grid, window)), list(clip_shift(grid, window, shift))


def inputs(B, grid, window, heads, head_dim, dtype, bias_dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    N = math.prod(grid)
    q, k, v, dout = (torch.randn(B, N, heads, head_dim, generator=gen).to(dtype) for _ in range(4))
    bias = torch.randn(heads, *(2 * w - 1 for w in window), generator=gen).to(bias_dtype)
    return q, k, v, bias, dout


def dense_results(q, k, v, bias, dout, grid, window, shift):
    """out, lse, dq, dk, dv, dbias of the dense reference, computed in q's and bias's dtypes."""
    leaves = tuple(t.detach().clone().requires_grad_(True) for t in (q, k, v, bias))
    out = dense_local_attention(*leaves[:3], grid, window, shift, leaves[3], SCALE)
    scores = torch.einsum("bihd,bjhd->bhij", leaves[0], leaves[1]) * SCALE + relative_bias(leaves[3], grid).to(q.dtype)
    lse = scores.masked_fill(~same_window_mask(grid, window, shift), float("-inf")).logsumexp(-1)
    return (out, lse.detach(), *torch.autograd.grad(out, leaves, dout))


def kernel_results(q, k, v, bias, dout, grid, window, shift, bias_grad=True):
    out, lse = _cpp.local_attn_fwd(q, k, v, grid, window, shift, bias, SCALE)
    return (out, lse, *_cpp.local_attn_bwd(dout, q, k, v, out, lse, grid, window, shift, bias, SCALE, bias_grad))


NAMES = ("out", "lse", "dq", "dk", "dv", "dbias")


@pytest.mark.parametrize("dtype,bias_dtype", DTYPES)
@pytest.mark.parametrize("B,grid,window,shift,heads,head_dim", CASES)
def test_local_attn_shift_bias_matches_reference(B, grid, window, shift, heads, head_dim, dtype, bias_dtype):
    q, k, v, bias, dout = inputs(B, grid, window, heads, head_dim, dtype, bias_dtype)
    win, sh = clipped(grid, window, shift)
    got = kernel_results(q, k, v, bias, dout, list(grid), win, sh)
    want = dense_results(*(t.double() for t in (q, k, v, bias, dout)), grid, win, sh)
    lowp = dense_results(q, k, v, bias, dout, grid, win, sh) if dtype in HALF else (None,) * len(NAMES)
    for name, actual, expected, low in zip(NAMES, got, want, lowp):
        assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
        wanted_dtype = {"lse": torch.float64 if dtype == torch.float64 else torch.float32, "dbias": bias_dtype}
        assert actual.dtype == wanted_dtype.get(name, dtype), f"{name}: dtype {actual.dtype}"
        assert torch.isfinite(actual).all(), f"{name}: non-finite values"
        err, magnitude = max_error(actual, expected), expected.abs().max().item()
        if actual.dtype in HALF:  # rounded outputs of a low-precision run: the 2x rule
            bound = 2 * max_error(low, expected) + torch.finfo(actual.dtype).eps * max(1.0, magnitude)
        else:  # fp32 results (lse, an fp32 bias's gradient) of bf16 inputs are fp32-accurate too
            bound = TOLERANCE[actual.dtype] * max(1.0, magnitude)
        assert err <= bound, f"{name}: max error {err:.3e} exceeds {bound:.3e}"


def test_shift_without_bias_and_bias_without_its_gradient():
    """bias None or bias_grad False: no dbias (None), and the other results bitwise the same as with it."""
    B, grid, window, shift, heads, head_dim = 2, (3, 5, 6), (2, 3, 4), (1, 2, 3), 2, 8
    q, k, v, bias, dout = inputs(B, grid, window, heads, head_dim, torch.float32, torch.float32)
    with_grad = kernel_results(q, k, v, bias, dout, grid, window, shift)
    without = kernel_results(q, k, v, bias, dout, grid, window, shift, bias_grad=False)
    assert without[5] is None
    for name, a, b in zip(NAMES[:5], with_grad, without):
        assert torch.equal(a, b), name
    unbiased = kernel_results(q, k, v, None, dout, grid, window, shift, bias_grad=True)
    assert unbiased[5] is None
    want = dense_results(*(t.double() for t in (q, k, v, torch.zeros_like(bias), dout)), grid, window, shift)
    for name, actual, expected in zip(NAMES[:5], unbiased, want):
        assert max_error(actual, expected) <= TOLERANCE[torch.float32] * max(1.0, expected.abs().max().item()), name


class KernelLocalAttention(torch.autograd.Function):
    """The CPU kernels' forward and backward (bias gradient included) as one differentiable function."""

    @staticmethod
    def forward(ctx, q, k, v, bias, grid, window, shift):
        out, lse = _cpp.local_attn_fwd(q, k, v, grid, window, shift, bias, SCALE)
        ctx.save_for_backward(q, k, v, bias, out, lse)
        ctx.geometry = (grid, window, shift)
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, bias, out, lse = ctx.saved_tensors
        grid, window, shift = ctx.geometry
        dq, dk, dv, dbias = _cpp.local_attn_bwd(dout, q, k, v, out, lse, grid, window, shift, bias, SCALE, True)
        return dq, dk, dv, dbias, None, None, None


@pytest.mark.parametrize("grid,window,shift", [
    pytest.param((2, 3, 4), (2, 2, 3), (1, 1, 2), id="shifted"),
    pytest.param((2, 3, 4), (3, 2, 5), (0, 1, 0), id="clipped-axes"),
])
def test_gradcheck_float64(grid, window, shift):
    q, k, v, bias, _ = inputs(1, grid, window, 2, 3, torch.float64, torch.float64)
    win, sh = clipped(grid, window, shift)
    leaves = tuple(t.requires_grad_(True) for t in (q, k, v, bias))
    assert torch.autograd.gradcheck(lambda *t: KernelLocalAttention.apply(*t, list(grid), win, sh), leaves)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_dbias_bitwise_deterministic_across_runs_and_thread_counts(dtype):
    grid, window, shift = (4, 9, 10), (2, 4, 4), (1, 2, 3)
    q, k, v, bias, dout = inputs(2, grid, window, 3, 16, dtype, torch.float32)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = kernel_results(q, k, v, bias, dout, grid, window, shift)
        torch.set_num_threads(max(2, threads))
        many, again = (kernel_results(q, k, v, bias, dout, grid, window, shift) for _ in range(2))
    finally:
        torch.set_num_threads(threads)
    for name, a, b, c in zip(NAMES, one, many, again):
        assert torch.equal(a, b) and torch.equal(b, c), name


def test_raw_ops_return_an_empty_dbias_unless_asked():
    q, k, v, bias, dout = inputs(1, (2, 3, 4), (2, 2, 2), 2, 4, torch.float32, torch.float32)
    ops = torch.ops.logo_attn_C
    out, lse = ops.local_attn_fwd(q, k, v, [2, 3, 4], [2, 2, 2], [0, 1, 1], bias, SCALE)
    for b, wanted in ((bias, False), (None, True), (None, False)):
        dbias = ops.local_attn_bwd(dout, q, k, v, out, lse, [2, 3, 4], [2, 2, 2], [0, 1, 1], b, SCALE, wanted)[3]
        assert dbias.numel() == 0
    dbias = ops.local_attn_bwd(dout, q, k, v, out, lse, [2, 3, 4], [2, 2, 2], [0, 1, 1], bias, SCALE, True)[3]
    assert dbias.shape == bias.shape and dbias.dtype == bias.dtype
    dense = torch.randn(2, 8, 8, dtype=torch.float32)
    out, lse = ops.local_attn_fwd(q, k, v, [2, 3, 4], [2, 2, 2], [0, 1, 1], dense, SCALE)
    assert ops.local_attn_bwd(dout, q, k, v, out, lse, [2, 3, 4], [2, 2, 2], [0, 1, 1], dense, SCALE, False)[3].numel() == 0
    dbias = ops.local_attn_bwd(dout, q, k, v, out, lse, [2, 3, 4], [2, 2, 2], [0, 1, 1], dense, SCALE, True)[3]
    assert dbias.shape == dense.shape and dbias.dtype == dense.dtype


@pytest.mark.parametrize("shift,window,bias_shape,bias_dtype,match", [
    ([1, 1], [2, 2, 2], None, None, "shift must hold 3 ints"),
    ([0, 2, 0], [2, 2, 2], None, None, "0 <= shift < window"),
    ([0, -1, 0], [2, 2, 2], None, None, "0 <= shift < window"),
    ([0, 0, 4], [2, 2, 9], None, None, "0 <= shift < window"),  # window clipped to 4
    ([1, 0, 0], [2, 2, 2], None, None, "shift must be 0 on an axis whose window covers the whole grid"),
    ([0, 1, 1], [2, 2, 2], (3, 3, 3, 3), None, "bias must be a \\(heads, 2f-1, 2h-1, 2w-1\\) table or a dense "
                                               "\\(heads, T, T\\) bias with heads = 2"),
    ([0, 1, 1], [2, 2, 2], (2, 3, 3, 3, 3), None, "or a dense \\(heads, T, T\\) bias with heads = 2"),
    ([0, 1, 1], [2, 2, 2], (2, 3, 3), None, "a dense bias must be \\(heads, T, T\\) = \\(2, 8, 8\\) for the window "
                                            "\\(2, 2, 2\\) clipped to the grid"),
    ([0, 0, 1], [2, 9, 2], (2, 8, 8), None, "a dense bias must be \\(heads, T, T\\) = \\(2, 12, 12\\) for the window "
                                            "\\(2, 3, 2\\)"),
    ([0, 1, 1], [2, 2, 2], (2, 8, 8), torch.float64, "bias must have q's dtype Float or Float, got Double"),
    ([0, 1, 1], [2, 2, 2], (2, 3, 2, 3), None, "at least as large as the clipped window"),
    ([0, 1, 1], [2, 2, 3], (2, 3, 3, 3), None, "at least as large as the clipped window"),
    ([0, 1, 1], [2, 2, 2], (2, 3, 3, 3), torch.float64, "bias must have q's dtype Float or Float, got Double"),
    ([0, 1, 1], [2, 2, 2], (2, 3, 3, 3), torch.bfloat16, "bias must have q's dtype Float or Float, got BFloat16"),
])
def test_raw_ops_reject_bad_shift_and_bias(shift, window, bias_shape, bias_dtype, match):
    grid = [2, 3, 4]
    q = torch.randn(1, 24, 2, 4)
    bias = None if bias_shape is None else torch.randn(bias_shape).to(bias_dtype or torch.float32)
    ops = torch.ops.logo_attn_C
    with pytest.raises(RuntimeError, match=match):
        ops.local_attn_fwd(q, q, q, grid, window, shift, bias, 1.0)
    out, lse = ops.local_attn_fwd(q, q, q, grid, [2, 2, 2], [0, 0, 0], None, 1.0)
    with pytest.raises(RuntimeError, match=match):
        ops.local_attn_bwd(q, q, q, q, out, lse, grid, window, shift, bias, 1.0, True)
