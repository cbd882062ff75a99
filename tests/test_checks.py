"""The argument checks every op and layer share (logo_attn/checks.py): each refusal names the
argument and what was expected, and everything index-like or real is accepted where a number is."""

import numpy as np
import pytest
import torch

from logo_attn import LocalGlobalAttention, global_attention, local_attention, window_pool
from logo_attn.backends import triton_interpreted

GRID, WINDOW = (2, 3, 4), (2, 2, 2)


def qkv(N=24, heads=2, d=8, **kwargs):
    return tuple(torch.randn(1, N, heads, d, **kwargs) for _ in range(3))


def test_wrong_rank():
    q, k, v = qkv()
    with pytest.raises(ValueError, match=r"local_attention: q must be 4-D \(B, N, heads, head_dim\), got shape \(24, 2, 8\)"):
        local_attention(q[0], k[0], v[0], GRID, WINDOW)
    with pytest.raises(ValueError, match=r"global_attention: k must be 4-D"):
        global_attention(q, k[0], v)


@pytest.mark.parametrize("grid", [(2, 3), (2, 3, 4, 1), "234", (2.0, 3, 4), torch.tensor([2, 3, 4]), (True, 3, 4)])
def test_grid_not_three_ints(grid):
    with pytest.raises(TypeError, match=r"grid (must be a sequence of 3 ints|\(F, H, W\) must be an int)"):
        local_attention(*qkv(), grid, WINDOW)


def test_numpy_integers_are_ints():
    x = torch.randn(1, 24, 4)
    want = window_pool(x, GRID, WINDOW)
    assert torch.equal(window_pool(x, tuple(np.int64(g) for g in GRID), np.array(WINDOW)), want)


def test_mismatched_dtypes():
    q, k, v = qkv()
    with pytest.raises(TypeError, match="k has dtype torch.float64 but q has torch.float32; they must match"):
        local_attention(q, k.double(), v, GRID, WINDOW)
    with pytest.raises(TypeError, match="v has dtype torch.float16 but q has torch.float32"):
        global_attention(q, k, v.half())


def test_non_float_dtype():
    q, k, v = qkv()
    with pytest.raises(TypeError, match="q must be float16, bfloat16, float32 or float64, got torch.int64"):
        local_attention(q.long(), k, v, GRID, WINDOW)
    with pytest.raises(TypeError, match="window_pool: x must be float16, bfloat16, float32 or float64, got torch.uint8"):
        window_pool(torch.zeros(1, 24, 4, dtype=torch.uint8), GRID, WINDOW)


def test_not_a_tensor():
    q, k, v = qkv()
    with pytest.raises(TypeError, match="global_attention: v must be a torch.Tensor, got list"):
        global_attention(q, k, [1.0])


def test_mismatched_devices():
    q, k, v = qkv()
    with pytest.raises(ValueError, match="k is on meta but q is on cpu; they must match"):
        local_attention(q, k.to("meta"), v, GRID, WINDOW)


@pytest.mark.parametrize(
    "which,shape,message",
    [
        ("k", (1, 24, 3, 8), r"same heads \(dim 2\), got 2, 3, 2"),
        ("v", (1, 24, 2, 16), r"same head_dim \(dim 3\), got 8, 8, 16"),
        ("k", (2, 24, 2, 8), r"same batch size \(dim 0\), got 1, 2, 1"),
    ],
)
def test_mismatched_heads_head_dim_batch(which, shape, message):
    tensors = dict(zip("qkv", qkv()))
    tensors[which] = torch.randn(shape)
    with pytest.raises(ValueError, match=message):
        local_attention(tensors["q"], tensors["k"], tensors["v"], GRID, WINDOW)
    with pytest.raises(ValueError, match=message):
        global_attention(tensors["q"], tensors["k"], tensors["v"])


@pytest.mark.parametrize("scale", [float("nan"), float("inf"), "0.5", True, torch.tensor(0.5)])
def test_bad_scale(scale):
    with pytest.raises(TypeError, match=r"scale must be a finite real number or None, got"):
        local_attention(*qkv(), GRID, WINDOW, scale=scale)


def test_unknown_backend():
    with pytest.raises(ValueError, match=r"backend must be one of 'auto', 'triton', 'cuda', 'cpu', 'torch', got 'gpu'"):
        local_attention(*qkv(), GRID, WINDOW, backend="gpu")


def test_unavailable_backend_says_why():
    with pytest.raises(ValueError, match=r"backend 'cuda' cannot run here: .*(CPU-only|not available|built without|runs on cuda tensors)"):
        local_attention(*qkv(), GRID, WINDOW, backend="cuda")
    # the C++ CPU kernels now compute every floating dtype; Triton's kernels have no float64
    with pytest.raises(ValueError, match=r"backend 'triton' cannot run here: backend 'triton' computes .*float32, got float64"):
        global_attention(*qkv(dtype=torch.float64), backend="triton")


@pytest.mark.skipif(not triton_interpreted(), reason="the interpreter is only set on machines without a GPU")
def test_triton_interpreter_refuses_bfloat16():
    with pytest.raises(ValueError, match="interpreter computes bfloat16 tl.dot wrongly"):
        local_attention(*qkv(dtype=torch.bfloat16), GRID, WINDOW, backend="triton")


# --------------------------------------------------------------------------------------------------
# Layer construction
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs,error,message", [
    (dict(dim=64, num_heads=0), ValueError, r"dim and num_heads must be >= 1, got dim=64, num_heads=0"),
    (dict(dim=64, num_heads=5), ValueError, r"dim \(64\) must be divisible by num_heads \(5\)"),
    (dict(dim=64, num_heads=4.0), TypeError, r"num_heads must be an int, got 4.0"),
    (dict(dim=64, num_prefix_tokens=1.5), TypeError, r"num_prefix_tokens must be an int, got 1.5"),
    (dict(dim=64, num_prefix_tokens=-1), ValueError, r"num_prefix_tokens must be >= 0, got -1"),
    (dict(dim=64, window=(2, 0, 2)), ValueError, r"window \(f, h, w\) entries must be >= 1"),
    (dict(dim=64, pool="max"), ValueError, r"pool must be 'avg' or 'conv', got 'max'"),
])
def test_layer_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        LocalGlobalAttention(**kwargs)


def test_layer_accepts_numpy_integers():
    layer = LocalGlobalAttention(np.int64(32), num_heads=np.int32(4), window=np.array([2, 2, 2]),
                                 num_prefix_tokens=np.int64(1))
    assert layer(torch.randn(2, 1 + 24, 32), np.array(GRID)).shape == (2, 25, 32)


def test_layer_names_x_and_dim_on_a_wrong_feature_width():
    layer = LocalGlobalAttention(32, num_heads=4, window=WINDOW, num_prefix_tokens=1)
    with pytest.raises(ValueError, match=r"LocalGlobalAttention: x must be \(B, num_prefix_tokens \+ F\*H\*W, dim\) = "
                                         r"\(B, 1 \+ 24, 32\) for grid \(2, 3, 4\), got \(2, 25, 48\)"):
        layer(torch.randn(2, 25, 48), GRID)
