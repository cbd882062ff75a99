"""Each GPU backend on an input with more than 2**31 elements (DESIGN §5: addresses are int64).

A kernel that computes an element offset in int32 wraps past 2**31 and reads or writes the wrong
memory; the last batch item of these inputs lies wholly beyond that offset, so it is the one compared
(forward and every gradient) with the float64 reference run on that item alone. The inputs take
4-5 GB each in bf16, about 16 GB per test in all: CUDA only (benchmarks/gpu_check.sh runs these
tests in their own step).
"""

import math

import pytest
import torch

from logo_attn import global_attention, local_attention, reference, window_pool
from oracle import check_op, require

INT32_LIMIT = 2**31
GPU_BACKENDS = ("triton", "cuda")
DTYPE = torch.bfloat16
GRID, WINDOW, HEADS, HEAD_DIM = (16, 14, 14), (2, 7, 7), 8, 64
TOKENS = GRID[0] * GRID[1] * GRID[2]
LAST_ITEM = slice(-1, None)


def batch_beyond_int32(elements_per_item: int) -> int:
    """The smallest batch whose last item starts past element 2**31."""
    return INT32_LIMIT // elements_per_item + 2


def randn(*shape):
    return torch.randn(*shape, device="cuda", dtype=DTYPE)


def assert_past_int32(storage: torch.Tensor) -> None:
    assert storage[LAST_ITEM].storage_offset() >= INT32_LIMIT, "the input no longer reaches past 2**31"


@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_local_attention_large_shape(backend):
    require(backend, "cuda", DTYPE, HEAD_DIM)
    qkv = randn(batch_beyond_int32(TOKENS * 3 * HEADS * HEAD_DIM), TOKENS, 3, HEADS, HEAD_DIM).requires_grad_()
    assert_past_int32(qkv)
    q, k, v = qkv.unbind(2)
    check_op(lambda q, k, v: local_attention(q, k, v, GRID, WINDOW, backend=backend),
             lambda q, k, v: reference.local_attention(q, k, v, GRID, WINDOW),
             (q, k, v), torch.randn_like(q), DTYPE, ("out", "dq", "dk", "dv"), items=LAST_ITEM)


@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_global_attention_large_shape(backend):
    require(backend, "cuda", DTYPE, HEAD_DIM)
    keys = 32  # the pooled windows of GRID with WINDOW
    B = batch_beyond_int32(TOKENS * HEADS * HEAD_DIM)
    q = randn(B, TOKENS, HEADS, HEAD_DIM).requires_grad_()
    assert_past_int32(q)
    k, v = randn(B, keys, 2, HEADS, HEAD_DIM).requires_grad_().unbind(2)
    check_op(lambda q, k, v: global_attention(q, k, v, backend=backend), reference.global_attention,
             (q, k, v), torch.randn_like(q), DTYPE, ("out", "dq", "dk", "dv"), items=LAST_ITEM)


@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_window_pool_large_shape(backend):
    require(backend, "cuda", DTYPE, HEAD_DIM)
    channels = HEADS * HEAD_DIM
    x = randn(batch_beyond_int32(TOKENS * channels), TOKENS, channels).requires_grad_()
    assert_past_int32(x)
    windows = math.prod(reference.num_windows(GRID, WINDOW))
    check_op(lambda x: window_pool(x, GRID, WINDOW, backend=backend),
             lambda x: reference.window_pool(x, GRID, WINDOW),
             (x,), randn(x.shape[0], windows, channels), DTYPE, ("out", "dx"), items=LAST_ITEM)
