"""The Triton kernels' own code paths, beyond the shared per-backend suites.

Each case names the path it is there for (packed small windows, one key tile, several key tiles, a
window of >= 1024 tokens, padded head dims, fewer than 16 keys, several backward query chunks,
shifted windows with a bias table, the bias gradient's chunks) and asserts that the launch plan
really takes it, then compares output, log-sum-exp and every gradient with a float64 reference. Runs on CUDA tensors when a GPU is present, else on CPU tensors under
Triton's interpreter (conftest sets TRITON_INTERPRET=1). A last test compiles every kernel for an
H100 (sm_90) with Triton's own compiler and ptxas, so GPU-only compile errors surface on CPU CI.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from dense_reference import dense_local_attention
from logo_attn import backends, global_attention, local_attention, reference, window_pool
from logo_attn.geometry import clip_shift, clip_window
from oracle import as_double_leaves, as_leaves, assert_matches, attention_inputs, check_op

triton = pytest.importorskip("triton")
if not torch.cuda.is_available() and not backends.triton_interpreted():
    pytest.skip("no GPU and TRITON_INTERPRET is unset: Triton kernels cannot run", allow_module_level=True)

from logo_attn.kernels import global_attn, local_attn, relative_bias, tuning, utils  # noqa: E402
from logo_attn.kernels import window_pool as pool_kernels  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# bf16 only on GPU: the interpreter computes bf16 tl.dot wrongly.
DTYPES = (torch.float32, torch.float16) + ((torch.bfloat16,) if DEVICE == "cuda" else ())
AUTOTUNED = (
    local_attn.local_attn_fwd_kernel, local_attn.local_attn_bwd_kernel_dkdv, local_attn.local_attn_bwd_kernel_dq,
    global_attn.global_attn_fwd_kernel, global_attn.global_attn_bwd_kernel_dkdv, global_attn.global_attn_bwd_kernel_dq,
)


def dtype_params(dtypes=DTYPES):
    return [pytest.param(d, id=str(d).removeprefix("torch.")) for d in dtypes]


# --------------------------------------------------------------------------------------------------
# local attention
# --------------------------------------------------------------------------------------------------

# grid, window, heads, head_dim, layout, path: the plan the launcher must choose for these windows
# (a pair: for 2-byte dtypes and for fp32, whose key tiles are half as long at the same head dim)
LOCAL_CASES = [
    pytest.param((3, 5, 7), (1, 2, 3), 2, 8, "packed", "packed", id="6-token-windows-packed-head-dim-8"),
    pytest.param((5, 6, 7), (2, 4, 5), 2, 24, "heads_first", "one-tile", id="40-token-border-windows-head-dim-24"),
    pytest.param((2, 12, 13), (2, 12, 12), 1, 80, "packed", "multi-tile", id="288-token-windows-head-dim-80"),
    pytest.param((2, 4, 4), (2, 4, 4), 2, 128, "contiguous", ("packed", "one-tile"), id="head-dim-128"),
    pytest.param((2, 6, 6), (2, 6, 6), 1, 128, "packed", ("multi-tile", "multi-tile"), id="72-tokens-head-dim-128"),
]


def local_path(window, head_dim, dtype):
    """'packed', 'one-tile' or 'multi-tile': how the launcher tiles these windows."""
    block_k, per_group, _ = local_attn.tile_plan(math.prod(window), tuning.key_tile(head_dim, dtype))
    if per_group > 1:
        return "packed"
    return "one-tile" if math.prod(window) <= block_k else "multi-tile"


def check_local(grid, window, heads, head_dim, dtype, layout):
    """local_attention on the triton backend: output and q/k/v gradients against float64."""
    N = math.prod(grid)
    q, k, v = attention_inputs(1, N, N, heads, head_dim, dtype, DEVICE, layout)
    dout = torch.randn(1, N, heads, head_dim, dtype=dtype, device=DEVICE)
    check_op(
        lambda q, k, v: local_attention(q, k, v, grid, window, backend="triton"),
        lambda q, k, v: reference.local_attention(q, k, v, grid, window),
        (q, k, v), dout, dtype, ("out", "dq", "dk", "dv"),
        lowp_fn=lambda q, k, v: reference.local_attention_with_lse(q, k, v, grid, window, compute_dtype=dtype)[0],
    )


@pytest.mark.parametrize("dtype", dtype_params())
@pytest.mark.parametrize("grid,window,heads,head_dim,layout,path", LOCAL_CASES)
def test_local_attention_paths(grid, window, heads, head_dim, layout, path, dtype, poison_empty):
    if not isinstance(path, str):
        path = path[dtype == torch.float32]
    assert local_path(window, head_dim, dtype) == path
    check_local(grid, window, heads, head_dim, dtype, layout)


def test_local_attention_window_of_1024_tokens(poison_empty):
    """A 4 x 16 x 16 window is eight key tiles; the grid's last column makes 64-token border windows."""
    grid, window = (4, 16, 17), (4, 16, 16)
    assert math.prod(window) >= 1024 and local_path(window, 16, torch.float32) == "multi-tile"
    check_local(grid, window, 1, 16, torch.float32, "packed")


@pytest.mark.parametrize("grid,window", [((3, 5, 7), (1, 2, 3)), ((5, 6, 7), (2, 4, 5)), ((2, 12, 13), (2, 12, 12))])
def test_local_lse_and_protocol_outputs(grid, window, poison_empty):
    """The protocol functions directly: fresh contiguous outputs, fp32 lse equal to the reference's."""
    N = math.prod(grid)
    q, k, v = (t.detach() for t in attention_inputs(2, N, N, 2, 32, torch.float32, DEVICE, "packed"))
    out, lse = local_attn.local_attn_fwd(q, k, v, grid, window, (0, 0, 0), None, 0.3)
    want_out, want_lse = reference.local_attention_with_lse(*(t.double() for t in (q, k, v)), grid, window, 0.3)
    assert out.is_contiguous() and lse.dtype == torch.float32 and lse.shape == (2, 2, N)
    assert_matches("out", out, want_out, torch.float32)
    assert_matches("lse", lse, want_lse, torch.float32)


def test_local_small_query_tiles(monkeypatch, poison_empty):
    """Query tiles of 16 make every program loop over several query blocks per key tile."""
    small = [triton.Config({"BLOCK_Q": 16}, num_warps=4, num_stages=1)]
    for kernel in AUTOTUNED[:3]:
        monkeypatch.setattr(kernel, "configs", small)
    for grid, window in (((3, 5, 7), (1, 2, 3)), ((2, 6, 7), (2, 5, 5)), ((2, 12, 13), (2, 12, 12))):
        check_local(grid, window, 1, 16, torch.float32, "packed")


def test_local_backward_reads_stride0_gradients_in_place(poison_empty):
    """A gradient broadcast over batch and tokens (stride 0, unit last stride) is read without a copy."""
    grid, window = (3, 5, 6), (2, 3, 4)
    N = math.prod(grid)
    q, k, v = (t.detach() for t in attention_inputs(2, N, N, 2, 16, torch.float32, DEVICE, "packed"))
    out, lse = local_attn.local_attn_fwd(q, k, v, grid, window, (0, 0, 0), None, 0.25)
    dout = torch.randn(1, 1, 2, 16, device=DEVICE).expand(2, N, 2, 16)
    assert utils.last_dim_contiguous(dout) is dout
    *got, dbias = local_attn.local_attn_bwd(dout, q, k, v, out, lse, grid, window, (0, 0, 0), None, 0.25, False)
    assert dbias is None
    leaves = as_double_leaves(q, k, v)
    want = torch.autograd.grad(reference.local_attention(*leaves, grid, window, 0.25), leaves, dout.double())
    for name, g, w in zip(("dq", "dk", "dv"), got, want):
        assert_matches(name, g, w, torch.float32)


# --------------------------------------------------------------------------------------------------
# local attention: shifted windows and the relative-position bias, against tests/dense_reference.py
# (cases: leading partial windows, grids the window does not divide, windows clipped to the grid
# with the user's table, packed windows, windows longer than one key tile; dbias determinism)
# --------------------------------------------------------------------------------------------------

SCALE = 0.3

# grid, the user's window (before clipping), shift, heads, head_dim, how the launcher tiles the
# clipped window in fp32 ("packed": several windows per key tile; "one-tile"; "multi-tile")
SHIFT_BIAS_CASES = [
    pytest.param((4, 6, 7), (2, 3, 3), (1, 1, 2), 2, 16, "packed", id="shifted-9-token-windows-packed-4-per-tile"),
    pytest.param((3, 8, 10), (2, 4, 4), (1, 2, 2), 2, 24, "packed", id="swin-shift-32-token-windows-head-dim-24"),
    pytest.param((2, 9, 11), (2, 7, 7), (1, 3, 4), 1, 32, "one-tile", id="shifted-2x7x7-non-divisible"),
    pytest.param((3, 5, 6), (4, 8, 2), (2, 5, 1), 2, 16, "packed", id="clipped-axes-keep-the-users-table"),
    pytest.param((2, 13, 14), (2, 12, 12), (1, 5, 7), 1, 16, "multi-tile", id="shifted-288-token-windows-3-key-tiles"),
]


def make_inputs(grid, window, heads, head_dim, dtype, bias_dtype, dense=False):
    """q, k, v (2, N, heads, d) as strided views of one projection, the upstream gradient, and a
    (heads, 2f-1, 2h-1, 2w-1) bias table of the user's (unclipped) window, or with `dense` a dense
    (heads, T, T) bias of the clipped window, read through a transposed view."""
    N = math.prod(grid)
    qkv = torch.randn(2, N, 3, heads, head_dim, dtype=dtype, device=DEVICE)
    q, k, v = qkv.unbind(2)
    dout = torch.randn(2, N, heads, head_dim, dtype=dtype, device=DEVICE)
    if dense:
        slots = math.prod(clip_window(grid, window))
        bias = torch.randn(heads, slots, slots, dtype=bias_dtype, device=DEVICE).transpose(1, 2)
    else:
        bias = torch.randn(heads, *(2 * n - 1 for n in window), dtype=bias_dtype, device=DEVICE)
    return q, k, v, dout, bias


def dense_results(q, k, v, dout, bias, grid, window, shift):
    """Output and gradients of q, k, v (and of the bias when given) through the dense reference."""
    leaves = [q, k, v] + ([bias] if bias is not None else [])
    out = dense_local_attention(q, k, v, grid, window, shift, bias, SCALE)
    return (out, *torch.autograd.grad(out, leaves, dout))


def run_kernels(q, k, v, dout, bias, grid, window, shift, bias_grad=True):
    out, lse = local_attn.local_attn_fwd(q, k, v, grid, window, shift, bias, SCALE)
    grads = local_attn.local_attn_bwd(dout, q, k, v, out, lse, grid, window, shift, bias, SCALE, bias_grad)
    return out, lse, grads


def check_shift_bias(grid, user_window, user_shift, heads, head_dim, dtype, with_bias=True, bias_dtype=None,
                     dense=False):
    window, shift = clip_window(grid, user_window), clip_shift(grid, user_window, user_shift)
    q, k, v, dout, bias = make_inputs(grid, user_window, heads, head_dim, dtype, bias_dtype or dtype, dense)
    bias = bias if with_bias else None
    out, lse, (dq, dk, dv, dbias) = run_kernels(q, k, v, dout, bias, grid, window, shift)
    assert out.is_contiguous() and lse.dtype == torch.float32 and lse.shape == (2, heads, math.prod(grid))
    assert (dbias is None) == (bias is None)

    inputs = [q, k, v] + ([bias] if with_bias else [])
    want = dense_results(*as_double_leaves(*inputs[:3]), dout.double(),
                     as_double_leaves(bias)[0] if with_bias else None, grid, window, shift)
    lowp = (None,) * len(want)
    if dtype == torch.float16:
        low = as_leaves(*inputs)
        lowp = dense_results(*low[:3], dout, low[3] if with_bias else None, grid, window, shift)
    names = ("out", "dq", "dk", "dv", "dbias")
    if with_bias:
        assert dbias.dtype == bias.dtype, f"dbias is {dbias.dtype}, the bias {bias.dtype}"
    for name, got, ref, low in zip(names, (out, dq, dk, dv, dbias), want, lowp):
        # an fp32 table's gradient from fp16 inputs carries fp16 error: judged by the inputs' rule
        assert_matches(name, got.to(dtype), ref, dtype, low)


@pytest.mark.parametrize("grid,window,shift,heads,head_dim,plan", SHIFT_BIAS_CASES)
def test_shift_and_bias_fp32(grid, window, shift, heads, head_dim, plan, poison_empty):
    assert local_path(clip_window(grid, window), head_dim, torch.float32) == plan
    check_shift_bias(grid, window, shift, heads, head_dim, torch.float32)


@pytest.mark.parametrize("bias_dtype", [torch.float16, torch.float32], ids=["fp16-bias", "fp32-bias"])
def test_shift_and_bias_fp16(bias_dtype, poison_empty):
    """fp16 inputs, the bias in the input dtype or in fp32: at most twice PyTorch's own fp16 error."""
    check_shift_bias((4, 6, 7), (2, 3, 3), (1, 1, 2), 2, 16, torch.float16, bias_dtype=bias_dtype)


@pytest.mark.parametrize("grid,window,shift,heads,head_dim,plan", [SHIFT_BIAS_CASES[i] for i in (0, 2, 3, 4)])
def test_shift_and_dense_bias_fp32(grid, window, shift, heads, head_dim, plan, poison_empty):
    """A dense (heads, T, T) bias, strided, on every tiling: packed, one tile, several key tiles."""
    check_shift_bias(grid, window, shift, heads, head_dim, torch.float32, dense=True)


def test_dense_bias_fp16_with_fp32_bias(poison_empty):
    check_shift_bias((4, 6, 7), (2, 3, 3), (1, 1, 2), 2, 16, torch.float16, bias_dtype=torch.float32, dense=True)


def test_dense_dbias_is_bitwise_deterministic(poison_empty):
    grid, window, shift = (4, 6, 7), (2, 3, 3), (1, 1, 2)
    q, k, v, dout, bias = make_inputs(grid, window, 2, 16, torch.float32, torch.float32, dense=True)
    out, lse = local_attn.local_attn_fwd(q, k, v, grid, window, shift, bias, SCALE)
    first, second = (local_attn.local_attn_bwd(dout, q, k, v, out, lse, grid, window, shift, bias, SCALE, True)[3]
                     for _ in range(2))
    assert first.shape == bias.shape and torch.equal(first, second)


def test_shift_without_bias(poison_empty):
    check_shift_bias((3, 8, 10), (2, 4, 4), (1, 2, 2), 2, 16, torch.float32, with_bias=False)


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
    ((0, 1, 1), (2, 18, 17), r"a dense bias must be \(heads, T, T\) = \(2, 18, 18\)"),
    ((0, 1, 1), (3, 18, 18), r"a dense bias must be \(heads, T, T\) = \(2, 18, 18\)"),
])
def test_bad_shift_or_bias_table_is_refused(shift, bias_shape, match):
    grid, window = (2, 6, 6), (2, 3, 3)
    q = torch.randn(1, math.prod(grid), 2, 16, device=DEVICE)
    with pytest.raises(ValueError, match=match):
        local_attn.local_attn_fwd(q, q, q, grid, window, shift, torch.zeros(bias_shape, device=DEVICE), SCALE)


# --------------------------------------------------------------------------------------------------
# global attention
# --------------------------------------------------------------------------------------------------

# Nq, Nk, head_dim, layout
GLOBAL_CASES = [
    pytest.param(40, 1, 16, "packed", id="1-key"),
    pytest.param(70, 5, 24, "heads_first", id="5-keys-padded-to-16"),
    pytest.param(33, 16, 64, "contiguous", id="16-keys"),
    pytest.param(50, 130, 80, "packed", id="130-keys-two-tiles"),
]


@pytest.mark.parametrize("dtype", dtype_params())
@pytest.mark.parametrize("Nq,Nk,head_dim,layout", GLOBAL_CASES)
def test_global_attention_paths(Nq, Nk, head_dim, layout, dtype, poison_empty):
    q, k, v = attention_inputs(2, Nq, Nk, 2, head_dim, dtype, DEVICE, layout)
    dout = torch.randn(2, Nq, 2, head_dim, dtype=dtype, device=DEVICE)
    check_op(
        lambda q, k, v: global_attention(q, k, v, backend="triton"),
        reference.global_attention,
        (q, k, v), dout, dtype, ("out", "dq", "dk", "dv"),
        lowp_fn=lambda q, k, v: reference.global_attention_with_lse(q, k, v, compute_dtype=dtype)[0],
    )


def test_global_attention_1024_keys(poison_empty):
    q, k, v = attention_inputs(1, 20, 1024, 1, 32, torch.float32, DEVICE, "packed")
    dout = torch.randn(1, 20, 1, 32, device=DEVICE)
    check_op(
        lambda q, k, v: global_attention(q, k, v, backend="triton"),
        reference.global_attention, (q, k, v), dout, torch.float32, ("out", "dq", "dk", "dv"),
    )


def test_global_attention_over_no_keys(poison_empty):
    """No keys: an empty softmax sum, as the reference computes it (out 0, lse -inf, dq 0), every
    output written although no kernel program has a key block to run."""
    q = torch.randn(2, 5, 2, 16, device=DEVICE)
    k, v = torch.randn(2, 0, 2, 16, device=DEVICE), torch.randn(2, 0, 2, 16, device=DEVICE)
    out, lse = global_attn.global_attn_fwd(q, k, v, 0.25)
    want_out, want_lse = reference.global_attention_with_lse(q.double(), k.double(), v.double(), 0.25)
    assert_matches("out", out, want_out, torch.float32)
    assert torch.equal(lse.cpu(), want_lse.float())
    dout = torch.randn_like(out)
    dq, dk, dv = global_attn.global_attn_bwd(dout, q, k, v, out, lse, 0.25)
    want = reference.global_attn_bwd(*(t.double() for t in (dout, q, k, v, want_out, want_lse)), 0.25)
    assert_matches("dq", dq, want[0], torch.float32)
    assert dk.shape == k.shape and dv.shape == v.shape


@pytest.mark.parametrize("Nk", [7, 200])
def test_global_backward_sums_query_chunks_deterministically(Nk, poison_empty):
    """Several query chunks write partial dK/dV that are summed in a fixed order: bitwise repeatable."""
    Nq = 40 * global_attn.CHUNK_ALIGN
    q, k, v = (t.detach() for t in attention_inputs(1, Nq, Nk, 1, 16, torch.float32, DEVICE, "contiguous"))
    key_blocks = math.ceil(Nk / global_attn._meta(q, Nk)["BLOCK_K"])
    assert global_attn._chunk_queries(q, key_blocks) < Nq, "the case must split the queries into chunks"
    out, lse = global_attn.global_attn_fwd(q, k, v, 0.25)
    dout = torch.randn_like(out)
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        first, second = (global_attn.global_attn_bwd(dout, q, k, v, out, lse, 0.25) for _ in range(2))
    finally:
        torch.use_deterministic_algorithms(previous)
    want = reference.global_attn_bwd(dout.double(), *(t.double() for t in (q, k, v, out, lse)), 0.25)
    for name, a, b, w in zip(("dq", "dk", "dv"), first, second, want):
        assert torch.equal(a, b), f"{name} differs between two runs"
        assert_matches(name, a, w, torch.float32)


# --------------------------------------------------------------------------------------------------
# window pooling
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", dtype_params())
def test_window_pool_several_channel_and_token_blocks(dtype, poison_empty):
    """162-token windows (two token blocks at BLOCK_C=32) and 70 channels (several channel blocks)."""
    grid, window, C = (3, 9, 10), (2, 9, 9), 70
    x = torch.randn(2, math.prod(grid), C, dtype=dtype, device=DEVICE, requires_grad=True)
    M = math.prod(reference.num_windows(grid, window))
    dout = torch.randn(2, M, C, dtype=dtype, device=DEVICE)
    check_op(lambda x: window_pool(x, grid, window, backend="triton"),
             lambda x: reference.window_pool(x, grid, window), (x,), dout, dtype, ("out", "dx"))


def test_window_pool_backward_of_stride0_gradient(poison_empty):
    grid, window = (3, 5, 6), (2, 2, 4)
    M = math.prod(reference.num_windows(grid, window))
    dout = torch.randn(2, 1, 24, device=DEVICE).expand(2, M, 24)
    got = pool_kernels.window_pool_bwd(dout, grid, window)
    assert_matches("dx", got, reference.window_pool_bwd(dout.double(), grid, window), torch.float32)


# --------------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------------


def test_one_fixed_config_under_the_interpreter():
    for kernel in AUTOTUNED:
        if backends.triton_interpreted():
            assert len(kernel.configs) == 1, f"{kernel.fn.__name__} would autotune under the interpreter"
        else:
            assert len(kernel.configs) > 1, f"{kernel.fn.__name__} has no configs to tune on GPU"


def test_fp32_dot_precision_follows_torch_matmul_setting():
    previous = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("highest")
        assert tuning.dot_precision(torch.float32) == "ieee"
        torch.set_float32_matmul_precision("high")
        assert tuning.dot_precision(torch.float32) == "tf32"
        assert tuning.dot_precision(torch.float16) == "ieee"
    finally:
        torch.set_float32_matmul_precision(previous)


# Compiles each kernel for sm_90 in a fresh interpreter-free process (Triton decides at import time
# whether kernels are interpreted) and prints registers, spill bytes and shared memory per config.
_COMPILE_SCRIPT = r"""
import json, os, re, subprocess, sys, tempfile
os.environ.pop("TRITON_INTERPRET", None)
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
import torch
from logo_attn.kernels import global_attn, local_attn, relative_bias, tuning, window_pool

from triton.backends.nvidia.compiler import get_ptxas
ptxas = get_ptxas(90).path  # the ptxas Triton itself uses for sm_90 (3.9 ships a newer one for its PTX 9.x)

def compile_kernel(kernel, dtype, constants, num_warps, num_stages):
    fn = kernel.fn if hasattr(kernel, "configs") else kernel  # an Autotuner wraps the JITFunction
    signature, attrs = {}, {}
    for index, param in enumerate(fn.params):
        if param.is_constexpr:
            signature[param.name] = "constexpr"
        elif param.name.endswith("_ptr"):
            signature[param.name] = "*fp32" if param.name in ("lse_ptr", "part_ptr") else "*" + dtype
        else:
            signature[param.name] = "fp32" if param.name.endswith("scale") else "i32"
        if param.name.endswith("_ptr") or param.name.startswith("stride_"):
            attrs[(index,)] = [["tt.divisibility", 16]]  # what a launch with aligned tensors specialises
    source = ASTSource(fn=fn, signature=signature, constexprs=constants, attrs=attrs)
    compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32),
                              options={"num_warps": num_warps, "num_stages": num_stages})
    with tempfile.NamedTemporaryFile("w", suffix=".ptx", delete=False) as f:
        f.write(compiled.asm["ptx"])
    run = subprocess.run([ptxas, "-v", "--gpu-name=sm_90a", f.name, "-o", os.devnull], capture_output=True, text=True)
    log = run.stdout + run.stderr  # ptxas prints its -v report on stdout
    os.unlink(f.name)
    spills = re.search(r"(\d+) bytes spill stores", log)
    registers = re.search(r"Used (\d+) registers", log)
    return {"kernel": fn.__name__, "dtype": dtype, "shared": compiled.metadata.shared,
            "registers": int(registers.group(1)) if registers else -1,
            "spills": int(spills.group(1)) if spills else -1,
            "config": {k: str(v) for k, v in constants.items()}, "warps": num_warps, "stages": num_stages}

results = []
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
# fp16 at the common head dim, bf16 at the largest; fp32 with full-precision dots (CUDA cores).
for dtype, head_dim in (("fp16", 64), ("bf16", 128), ("fp32", 128)):
    tile = tuning.key_tile(head_dim, DTYPES[dtype])
    common = dict(HEAD_DIM=head_dim, BLOCK_D=head_dim, DOT_PRECISION="ieee")
    local_plans = [
        (local_attn.local_attn_fwd_kernel,
         dict(BLOCK_K=tile, WINDOWS_PER_GROUP=1, SLOTS_PER_WINDOW=tile, SINGLE_KEY_TILE=False)),
        (local_attn.local_attn_fwd_kernel,
         dict(BLOCK_K=min(tile, 64), WINDOWS_PER_GROUP=2, SLOTS_PER_WINDOW=min(tile, 64) // 2, SINGLE_KEY_TILE=True)),
        (local_attn.local_attn_bwd_kernel_dkdv,
         dict(BLOCK_K=tile, WINDOWS_PER_GROUP=1, SLOTS_PER_WINDOW=tile, SINGLE_KEY_TILE=True)),
        (local_attn.local_attn_bwd_kernel_dkdv,
         dict(BLOCK_K=min(tile, 64), WINDOWS_PER_GROUP=2, SLOTS_PER_WINDOW=min(tile, 64) // 2, SINGLE_KEY_TILE=True)),
        (local_attn.local_attn_bwd_kernel_dq,
         dict(BLOCK_K=tile, WINDOWS_PER_GROUP=1, SLOTS_PER_WINDOW=tile, SINGLE_KEY_TILE=False)),
    ]
    # every local-attention plan without and with the relative-position bias
    plans = [(kernel, {**plan, "HAS_BIAS": has_bias}) for kernel, plan in local_plans for has_bias in (False, True)]
    plans += [
        (global_attn.global_attn_fwd_kernel, dict(BLOCK_K=16, SINGLE_KEY_TILE=True)),
        (global_attn.global_attn_bwd_kernel_dkdv, dict(BLOCK_K=tile, SINGLE_KEY_TILE=True)),
        (global_attn.global_attn_bwd_kernel_dq, dict(BLOCK_K=tile, SINGLE_KEY_TILE=False)),
    ]
    for kernel, plan in plans:
        constants = {**common, **plan}
        # the surviving config that needs the most registers and shared memory
        element = torch.empty(0, dtype=DTYPES[dtype])
        config = max(kernel.early_config_prune(kernel.configs, {"q_ptr": element}, **constants),
                     key=lambda c: (c.kwargs["BLOCK_Q"] / c.num_warps, c.num_stages))
        constants.update(config.kwargs)
        results.append(compile_kernel(kernel, dtype, constants, config.num_warps, config.num_stages))
    # the bias gradient (not autotuned: one tile size per head dim, 8 warps, 1 stage)
    results.append(compile_kernel(relative_bias.local_attn_bwd_kernel_dbias, dtype,
                                  {**common, "BLOCK": relative_bias.dbias_tile(head_dim)}, 8, 1))
    for pool_kernel in (window_pool.window_pool_fwd_kernel, window_pool.window_pool_bwd_kernel):
        results.append(compile_kernel(pool_kernel, dtype, dict(BLOCK_T=32, BLOCK_C=128), 4, 1))
print(json.dumps(results))
"""


def test_kernels_compile_for_h100():
    """Every kernel compiles for sm_90 (tl.dot sizes, constexpr globals, types the interpreter lets pass)
    at the heaviest config its autotune pruning keeps, within H100 shared memory, and spilling at most a
    few registers in fp16/bf16 (full-precision fp32 dots run on CUDA cores and may spill: an accuracy path)."""
    if not os.path.exists(os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")):
        pytest.skip("this Triton has no NVIDIA backend (ptxas) to compile for sm_90 with")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, "-c", _COMPILE_SCRIPT], capture_output=True, text=True, env=env, timeout=1200)
    assert run.returncode == 0, run.stderr[-4000:]
    results = json.loads(run.stdout.strip().splitlines()[-1])
    h100_shared_memory = 227 * 1024
    for r in results:
        print(r)
        assert r["registers"] > 0 and r["spills"] >= 0, f"ptxas printed no register report: {r}"
        assert r["shared"] <= h100_shared_memory, f"needs more shared memory than an H100 has: {r}"
        # a few spilled registers stay in L1 and cost little; hundreds of bytes mean a wrong tile plan
        assert r["spills"] <= 128 or r["dtype"] == "fp32", f"spills registers at the config most likely to: {r}"
