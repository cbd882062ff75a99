"""Each GPU backend on an input with more than 2**31 elements (DESIGN §5: addresses are int64).

A kernel that computes an element offset in int32 wraps past 2**31 and reads or writes the wrong
memory; the last batch item of these inputs lies wholly beyond that offset, so it is the one compared
(forward and every gradient) with the float64 reference run on that item alone. The inputs take
4-5 GB each in bf16, about 16 GB per test in all: CUDA only (benchmarks/gpu_check.sh runs these
tests in their own step).
"""

import pytest
import torch

from logo_attn import global_attention, local_attention, reference, window_pool
from oracle import as_double_leaves, as_leaves, assert_matches, grads, require

INT32_LIMIT = 2**31
GPU_BACKENDS = ("triton", "cuda")
DTYPE = torch.bfloat16
GRID, WINDOW, HEADS, HEAD_DIM = (16, 14, 14), (2, 7, 7), 8, 64
TOKENS = GRID[0] * GRID[1] * GRID[2]


def batch_beyond_int32(elements_per_item: int) -> int:
    """The smallest batch whose last item starts past element 2**31."""
    return INT32_LIMIT // elements_per_item + 2


def check_last_item(run, reference_fn, leaves, inputs_of, names):
    """Run `run` on the whole batch, then compare the last item of its output and of each leaf's
    gradient with `reference_fn` on that item (float64, and in bf16 for the 2x rule)."""
    out = run(*inputs_of(leaves))
    dout = torch.randn_like(out)
    full_grads = grads(out, leaves, dout)
    got = (out[-1:], *(g[-1:] for g in full_grads))
    assert any(leaf[-1:].storage_offset() >= INT32_LIMIT for leaf in leaves), "the input no longer reaches past 2**31"
    item = [leaf[-1:] for leaf in leaves]
    expected, lowp = [], []
    for convert, bucket in ((as_double_leaves, expected), (as_leaves, lowp)):
        item_leaves = convert(*item)
        ref = reference_fn(*inputs_of(item_leaves))
        bucket.extend((ref, *grads(ref, item_leaves, dout[-1:].to(ref.dtype))))
    for name, actual, want, low in zip(names, got, expected, lowp):
        assert_matches(name, actual, want, DTYPE, low)


@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_local_attention_large_shape(backend):
    require(backend, "cuda", DTYPE, HEAD_DIM)
    B = batch_beyond_int32(TOKENS * 3 * HEADS * HEAD_DIM)
    qkv = torch.randn(B, TOKENS, 3, HEADS, HEAD_DIM, device="cuda", dtype=DTYPE, requires_grad=True)
    check_last_item(
        lambda q, k, v: local_attention(q, k, v, GRID, WINDOW, backend=backend),
        lambda q, k, v: reference.local_attention(q, k, v, GRID, WINDOW),
        (qkv,), lambda leaves: leaves[0].unbind(2), ("out", "dqkv"))


@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_global_attention_large_shape(backend):
    require(backend, "cuda", DTYPE, HEAD_DIM)
    keys = 32  # the pooled windows of GRID with WINDOW
    B = batch_beyond_int32(TOKENS * HEADS * HEAD_DIM)
    q = torch.randn(B, TOKENS, HEADS, HEAD_DIM, device="cuda", dtype=DTYPE, requires_grad=True)
    kv = torch.randn(B, keys, 2, HEADS, HEAD_DIM, device="cuda", dtype=DTYPE, requires_grad=True)
    check_last_item(
        lambda q, k, v: global_attention(q, k, v, backend=backend),
        reference.global_attention,
        (q, kv), lambda leaves: (leaves[0], *leaves[1].unbind(2)), ("out", "dq", "dkv"))


@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_window_pool_large_shape(backend):
    require(backend, "cuda", DTYPE, HEAD_DIM)
    channels = HEADS * HEAD_DIM
    B = batch_beyond_int32(TOKENS * channels)
    x = torch.randn(B, TOKENS, channels, device="cuda", dtype=DTYPE, requires_grad=True)
    check_last_item(
        lambda x: window_pool(x, GRID, WINDOW, backend=backend),
        lambda x: reference.window_pool(x, GRID, WINDOW),
        (x,), lambda leaves: leaves, ("out", "dx"))
