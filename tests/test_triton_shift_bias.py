"""Shifted windows and the relative-position bias in the Triton local-attention kernels.

The launchers (`local_attn_fwd` / `local_attn_bwd` of the backend protocol) are compared with
tests/dense_reference.py: full attention over the grid with a same-window mask built from token
coordinates and the bias gathered per pair, run in float64, gradients (dbias included) by autograd.
The cases cover shifted windows with leading partial windows, grids the window does not divide,
windows clipped to the grid (the bias table keeps the user's window), small windows packed several
to a key tile, windows longer than one key tile, and the bitwise determinism of dbias. fp32 uses
the fp32 tolerance of tests/oracle.py; fp16 the 2x rule against PyTorch's own fp16 result. Runs on
CUDA when present, else under Triton's interpreter (conftest sets TRITON_INTERPRET=1).
"""

from __future__ import annotations

import math

import pytest
import torch

from dense_reference import dense_local_attention
from logo_attn import backends
from logo_attn.geometry import clip_shift, clip_window
from oracle import as_double_leaves, as_leaves, assert_matches

pytest.importorskip("triton")
if not torch.cuda.is_available() and not backends.triton_interpreted():
    pytest.skip("no GPU and TRITON_INTERPRET is unset: Triton kernels cannot run", allow_module_level=True)

from logo_attn.kernels import local_attn, relative_bias, tuning  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
SCALE = 0.3

# grid, the user's window (before clipping), shift, heads, head_dim, how the launcher tiles the
# clipped window in fp32 ("packed": several windows per key tile; "one-tile"; "multi-tile")
CASES = [
    pytest.param((4, 6, 7), (2, 3, 3), (1, 1, 2), 2, 16, "packed", id="shifted-9-token-windows-packed-4-per-tile"),
    pytest.param((3, 8, 10), (2, 4, 4), (1, 2, 2), 2, 24, "packed", id="swin-shift-32-token-windows-head-dim-24"),
    pytest.param((2, 9, 11), (2, 7, 7), (1, 3, 4), 1, 32, "one-tile", id="shifted-2x7x7-non-divisible"),
    pytest.param((3, 5, 6), (4, 8, 2), (2, 5, 1), 2, 16, "packed", id="clipped-axes-keep-the-users-table"),
    pytest.param((2, 13, 14), (2, 12, 12), (1, 5, 7), 1, 16, "multi-tile", id="shifted-288-token-windows-3-key-tiles"),
]


def path(window, head_dim, dtype):
    block_k, per_group, _ = local_attn.tile_plan(math.prod(window), tuning.key_tile(head_dim, dtype))
    if per_group > 1:
        return "packed"
    return "one-tile" if math.prod(window) <= block_k else "multi-tile"


def make_inputs(grid, window, heads, head_dim, dtype, bias_dtype):
    """q, k, v (2, N, heads, d) as strided views of one projection, the upstream gradient, and a
    (heads, 2f-1, 2h-1, 2w-1) bias table of the user's (unclipped) window."""
    N = math.prod(grid)
    qkv = torch.randn(2, N, 3, heads, head_dim, dtype=dtype, device=DEVICE)
    q, k, v = qkv.unbind(2)
    dout = torch.randn(2, N, heads, head_dim, dtype=dtype, device=DEVICE)
    bias = torch.randn(heads, *(2 * n - 1 for n in window), dtype=bias_dtype, device=DEVICE)
    return q, k, v, dout, bias


def reference(q, k, v, dout, bias, grid, window, shift):
    """Output and gradients of q, k, v (and of the bias when given) through the dense reference."""
    leaves = [q, k, v] + ([bias] if bias is not None else [])
    out = dense_local_attention(q, k, v, grid, window, shift, bias, SCALE)
    return (out, *torch.autograd.grad(out, leaves, dout))


def run_kernels(q, k, v, dout, bias, grid, window, shift, bias_grad=True):
    out, lse = local_attn.local_attn_fwd(q, k, v, grid, window, shift, bias, SCALE)
    grads = local_attn.local_attn_bwd(dout, q, k, v, out, lse, grid, window, shift, bias, SCALE, bias_grad)
    return out, lse, grads


def check(grid, user_window, user_shift, heads, head_dim, dtype, with_bias=True, bias_dtype=None):
    window, shift = clip_window(grid, user_window), clip_shift(grid, user_window, user_shift)
    q, k, v, dout, bias = make_inputs(grid, user_window, heads, head_dim, dtype, bias_dtype or dtype)
    bias = bias if with_bias else None
    out, lse, (dq, dk, dv, dbias) = run_kernels(q, k, v, dout, bias, grid, window, shift)
    assert out.is_contiguous() and lse.dtype == torch.float32 and lse.shape == (2, heads, math.prod(grid))
    assert (dbias is None) == (bias is None)

    inputs = [q, k, v] + ([bias] if with_bias else [])
    want = reference(*as_double_leaves(*inputs[:3]), dout.double(),
                     as_double_leaves(bias)[0] if with_bias else None, grid, window, shift)
    lowp = (None,) * len(want)
    if dtype == torch.float16:
        low = as_leaves(*inputs)
        lowp = reference(*low[:3], dout, low[3] if with_bias else None, grid, window, shift)
    names = ("out", "dq", "dk", "dv", "dbias")
    if with_bias:
        assert dbias.dtype == bias.dtype, f"dbias is {dbias.dtype}, the bias {bias.dtype}"
    for name, got, ref, low in zip(names, (out, dq, dk, dv, dbias), want, lowp):
        # an fp32 table's gradient from fp16 inputs carries fp16 error: judged by the inputs' rule
        assert_matches(name, got.to(dtype), ref, dtype, low)


@pytest.mark.parametrize("grid,window,shift,heads,head_dim,plan", CASES)
def test_shift_and_bias_fp32(grid, window, shift, heads, head_dim, plan, poison_empty):
    assert path(clip_window(grid, window), head_dim, torch.float32) == plan
    check(grid, window, shift, heads, head_dim, torch.float32)


@pytest.mark.parametrize("bias_dtype", [torch.float16, torch.float32], ids=["fp16-bias", "fp32-bias"])
def test_shift_and_bias_fp16(bias_dtype, poison_empty):
    """fp16 inputs, the bias in the input dtype or in fp32: at most twice PyTorch's own fp16 error."""
    check((4, 6, 7), (2, 3, 3), (1, 1, 2), 2, 16, torch.float16, bias_dtype=bias_dtype)


def test_shift_without_bias(poison_empty):
    check((3, 8, 10), (2, 4, 4), (1, 2, 2), 2, 16, torch.float32, with_bias=False)


def test_no_shift_equals_plain_windows(poison_empty):
    """shift (0, 0, 0) and no bias give the kernels' unshifted windows (same bits)."""
    grid, window = (3, 5, 7), (2, 2, 3)
    q, k, v, dout, _ = make_inputs(grid, window, 2, 16, torch.float32, torch.float32)
    plain = dense_local_attention(*(t.double() for t in (q, k, v)), grid, window, scale=SCALE)
    out, _, _ = run_kernels(q, k, v, dout, None, grid, window, (0, 0, 0))
    assert_matches("out", out, plain, torch.float32)


def test_dbias_only_when_asked(poison_empty):
    grid, window, shift = (3, 8, 10), (2, 4, 4), (1, 2, 2)
    q, k, v, dout, bias = make_inputs(grid, window, 2, 16, torch.float32, torch.float32)
    out, lse, grads = run_kernels(q, k, v, dout, bias, grid, window, shift, bias_grad=False)
    assert grads[3] is None
    with_dbias = run_kernels(q, k, v, dout, bias, grid, window, shift)[2]
    for name, a, b in zip(("dq", "dk", "dv"), grads[:3], with_dbias[:3]):
        assert torch.equal(a, b), f"{name} changes when dbias is computed too"


def test_dbias_is_bitwise_deterministic(poison_empty):
    """Several chunks of windows write partial sums that are reduced in a fixed order: two runs, same bits."""
    grid, window, shift = (4, 6, 7), (2, 3, 3), (1, 1, 2)
    q, k, v, dout, bias = make_inputs(grid, window, 2, 16, torch.float32, torch.float32)
    out, lse = local_attn.local_attn_fwd(q, k, v, grid, window, shift, bias, SCALE)
    items = 2 * math.prod(local_attn.num_windows(grid, window, shift))
    assert relative_bias.dbias_plan(q, math.prod(window), items)[2] > 1, "the case needs several chunks of windows"
    first, second = (local_attn.local_attn_bwd(dout, q, k, v, out, lse, grid, window, shift, bias, SCALE, True)[3]
                     for _ in range(2))
    assert torch.equal(first, second)


def test_offset_sums_match_a_loop():
    """The diagonal sums that fold the expanded (query slot, key slot) gradient into the table."""
    x = torch.randn(3, 5, 5, dtype=torch.float64)
    want = torch.zeros(3, 9, dtype=torch.float64)
    for a in range(5):
        for b in range(5):
            want[:, a - b + 4] += x[:, a, b]
    torch.testing.assert_close(relative_bias.offset_sums(x), want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("shift,bias_shape,match", [
    ((0, 3, 0), (2, 3, 5, 5), "shift must satisfy 0 <= shift < window"),
    ((0, -1, 0), (2, 3, 5, 5), "shift must satisfy 0 <= shift < window"),
    ((0, 1, 1), (2, 3, 3, 5), "bias must be"),
    ((0, 1, 1), (3, 3, 5, 5), "bias must be"),
    ((0, 1, 1), (2, 3, 6, 5), "bias must be"),
])
def test_bad_shift_or_bias_table_is_refused(shift, bias_shape, match):
    grid, window = (2, 6, 6), (2, 3, 3)
    q = torch.randn(1, math.prod(grid), 2, 16, device=DEVICE)
    with pytest.raises(ValueError, match=match):
        local_attn.local_attn_fwd(q, q, q, grid, window, shift, torch.zeros(bias_shape, device=DEVICE), SCALE)
