"""Bad input raises ValueError/TypeError whose message names the argument and what was expected
(DESIGN §1): one test per error class."""

import pytest
import torch

from logo_attn import global_attention, local_attention, window_pool
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
    with pytest.raises(ValueError, match=r"window_pool: x must be 3-D \(B, F\*H\*W, C\)"):
        window_pool(q, GRID, WINDOW)


def test_tokens_do_not_match_grid():
    q, k, v = qkv(N=25)
    with pytest.raises(ValueError, match=r"q has 25 tokens but grid \(2, 3, 4\) has F\*H\*W = 24"):
        local_attention(q, k, v, GRID, WINDOW)
    with pytest.raises(ValueError, match=r"x has 25 tokens but grid \(2, 3, 4\) has F\*H\*W = 24"):
        window_pool(q.flatten(2), GRID, WINDOW)


@pytest.mark.parametrize("window", [(0, 2, 2), (2, -1, 2)])
def test_window_below_one(window):
    with pytest.raises(ValueError, match=r"window entries must be >= 1, got"):
        local_attention(*qkv(), GRID, window)
    with pytest.raises(ValueError, match=r"window entries must be >= 1"):
        window_pool(torch.randn(1, 24, 4), GRID, window)


@pytest.mark.parametrize("grid", [(2, 3), (2, 3, 4, 1), "234", (2.0, 3, 4), torch.tensor([2, 3, 4])])
def test_grid_not_three_ints(grid):
    with pytest.raises(TypeError, match=r"grid must (be a sequence of 3 ints|hold ints)"):
        local_attention(*qkv(), grid, WINDOW)


def test_grid_required_for_4d_and_consistent_for_6d():
    with pytest.raises(TypeError, match="grid is required for 4-D inputs"):
        local_attention(*qkv(), None, WINDOW)
    q = torch.randn(1, 2, 3, 4, 2, 8)
    with pytest.raises(ValueError, match=r"grid \(4, 3, 2\) does not match the 6-D input's grid \(2, 3, 4\)"):
        local_attention(q, q, q, (4, 3, 2), WINDOW)


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
    q, k, v = qkv()
    tensors = {"q": q, "k": k, "v": v}
    tensors[which] = torch.randn(shape)
    with pytest.raises(ValueError, match=message):
        local_attention(tensors["q"], tensors["k"], tensors["v"], GRID, WINDOW)
    with pytest.raises(ValueError, match=message):
        global_attention(tensors["q"], tensors["k"], tensors["v"])


def test_keys_and_values_differ_in_length():
    q, k, v = qkv()
    with pytest.raises(ValueError, match="k and v must have the same number of tokens, got 24 and 5"):
        global_attention(q, k, v[:, :5])


def test_bad_scale():
    with pytest.raises(TypeError, match=r"scale must be a finite float or None, got nan"):
        local_attention(*qkv(), GRID, WINDOW, scale=float("nan"))


def test_unknown_backend():
    with pytest.raises(ValueError, match=r"backend must be one of 'auto', 'triton', 'cuda', 'cpu', 'torch', got 'gpu'"):
        local_attention(*qkv(), GRID, WINDOW, backend="gpu")


def test_unavailable_backend_says_why():
    with pytest.raises(ValueError, match=r"backend 'cuda' cannot run here: .*(CPU-only|not built|built without|runs on cuda tensors)"):
        local_attention(*qkv(), GRID, WINDOW, backend="cuda")
    with pytest.raises(ValueError, match=r"backend 'cpu' cannot run here: backend 'cpu' computes bfloat16, float32, float64, got float16"):
        global_attention(*qkv(dtype=torch.float16), backend="cpu")


@pytest.mark.skipif(not triton_interpreted(), reason="the interpreter is only set on machines without a GPU")
def test_triton_interpreter_refuses_bfloat16():
    with pytest.raises(ValueError, match="interpreter computes bfloat16 tl.dot wrongly"):
        local_attention(*qkv(dtype=torch.bfloat16), GRID, WINDOW, backend="triton")
