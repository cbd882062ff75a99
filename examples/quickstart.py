"""Quick start: which backends this install has, then LocalGlobalAttention against the same layer
written with plain PyTorch (window partition + F.scaled_dot_product_attention, avg_pool3d, SDPA).

    python examples/quickstart.py
"""

import math
import time

import torch
import torch.nn.functional as F

from logo_attn import LocalGlobalAttention, global_attention, local_attention, window_pool
from logo_attn.info import report


def plain_pytorch(layer: LocalGlobalAttention, x: torch.Tensor, grid) -> torch.Tensor:
    """What a user would write without logo_attn (window divides the grid, no prefix tokens)."""
    B, N, C = x.shape
    (Fg, H, W), (f, h, w), heads = grid, layer.window, layer.num_heads

    def partition(t):  # (B, N, C) -> (B * windows, heads, f*h*w, C/heads)
        t = t.view(B, Fg // f, f, H // h, h, W // w, w, heads, C // heads)
        return t.permute(0, 1, 3, 5, 7, 2, 4, 6, 8).reshape(-1, heads, f * h * w, C // heads)

    def unpartition(t):
        t = t.view(B, Fg // f, H // h, W // w, heads, f, h, w, C // heads)
        return t.permute(0, 1, 5, 2, 6, 3, 7, 4, 8).reshape(B, N, C)

    q, k, v = layer.local_qkv(layer.norm_local(x)).chunk(3, dim=-1)
    local = unpartition(F.scaled_dot_product_attention(partition(q), partition(k), partition(v)))
    y = x + layer.local_proj(local)
    pooled = F.avg_pool3d(y.transpose(1, 2).reshape(B, C, Fg, H, W), (f, h, w)).flatten(2).transpose(1, 2)
    q = layer.q(layer.norm_q(y)).view(B, N, heads, -1).transpose(1, 2)
    k, v = (t.view(B, -1, heads, C // heads).transpose(1, 2) for t in layer.kv(layer.norm_kv(pooled)).chunk(2, -1))
    out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, N, C)
    return y + layer.proj(out)


def timed(fn, repeats=5):
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    print(report(), end="\n\n")
    torch.manual_seed(0)

    # The functional ops: (B, N, heads, head_dim) in, border windows handled exactly.
    grid, window = (5, 9, 9), (2, 7, 7)
    q, k, v = (torch.randn(2, math.prod(grid), 4, 32) for _ in range(3))
    local = local_attention(q, k, v, grid, window)
    pooled = window_pool(local.flatten(2), grid, window).unflatten(2, (4, 32))
    out = global_attention(q, pooled, pooled)
    print(f"ops: local {tuple(local.shape)}, pooled {tuple(pooled.shape)}, global {tuple(out.shape)}")

    # The layer against plain PyTorch, forward and backward.
    grid = (8, 7, 7)
    layer = LocalGlobalAttention(dim=256, num_heads=8, window=(2, 7, 7))
    x = torch.randn(4, math.prod(grid), 256, requires_grad=True)
    ours, theirs = layer(x, grid), plain_pytorch(layer, x, grid)
    g_ours, g_theirs = (torch.autograd.grad(o.square().mean(), x)[0] for o in (ours, theirs))
    print(f"layer vs plain PyTorch: max |out diff| {(ours - theirs).abs().max():.2e}, "
          f"max |grad diff| {(g_ours - g_theirs).abs().max():.2e}")
    assert torch.allclose(ours, theirs, atol=1e-4) and torch.allclose(g_ours, g_theirs, atol=1e-5)

    t_ours = timed(lambda: layer(x, grid).sum().backward())
    t_theirs = timed(lambda: plain_pytorch(layer, x, grid).sum().backward())
    print(f"forward+backward, B=4, grid {grid}, dim 256, 8 heads, {torch.get_num_threads()} threads: "
          f"logo_attn {t_ours * 1e3:.1f} ms, plain PyTorch {t_theirs * 1e3:.1f} ms ({t_theirs / t_ours:.2f}x)")


if __name__ == "__main__":
    main()
