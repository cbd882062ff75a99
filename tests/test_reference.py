"""The reference ops against formulations written independently of them.

- local attention: full attention with a same-window mask built from token coordinates (the
  definition in DESIGN §1), and SDPA on window-partitioned tensors where the window divides the grid;
- global attention: PyTorch's scaled_dot_product_attention;
- window_pool: mean over token coordinates, and avg_pool3d where the window divides the grid;
- the "torch" backend's written-out backward against autograd, and float64 gradcheck;
- memory that grows with N * window, not N^2.
"""

import math
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

from logo_attn import reference
from logo_attn.ops import clip_window
from dense_reference import coordinates, dense_local_attention, same_window_mask


# random shapes with odd sizes: border windows, windows larger than the grid, odd head dims
RANDOM_SHAPES = [
    ((3, 5, 7), (2, 2, 3), 2, 13),
    ((4, 7, 7), (2, 7, 7), 3, 16),
    ((2, 3, 4), (5, 9, 9), 1, 8),
    ((5, 1, 6), (3, 1, 4), 2, 24),
    ((1, 9, 2), (1, 4, 1), 4, 5),
]


@pytest.mark.parametrize("grid,window,heads,head_dim", RANDOM_SHAPES)
def test_local_equals_dense_masked_attention(grid, window, heads, head_dim):
    N = math.prod(grid)
    q, k, v = (torch.randn(2, N, heads, head_dim, dtype=torch.float64, requires_grad=True) for _ in range(3))
    clipped = clip_window(grid, window)
    scale = head_dim**-0.5
    got = reference.local_attention(q, k, v, grid, clipped)
    want = dense_local_attention(q, k, v, grid, clipped, scale=scale)
    torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-12)
    dout = torch.randn_like(got)
    for g, w in zip(torch.autograd.grad(got, (q, k, v), dout), torch.autograd.grad(want, (q, k, v), dout)):
        torch.testing.assert_close(g, w, atol=1e-12, rtol=1e-12)


def test_local_equals_sdpa_on_partitioned_windows():
    """Where the window divides the grid, windowed attention is SDPA over (B*windows, heads, tokens, d)."""
    B, (Fg, H, W), (f, h, w), heads, d = 2, (4, 14, 14), (2, 7, 7), 2, 32
    q, k, v = (torch.randn(B, Fg * H * W, heads, d, dtype=torch.float64) for _ in range(3))

    def partition(t):
        t = t.view(B, Fg // f, f, H // h, h, W // w, w, heads, d).permute(0, 1, 3, 5, 7, 2, 4, 6, 8)
        return t.reshape(-1, heads, f * h * w, d)

    out = F.scaled_dot_product_attention(partition(q), partition(k), partition(v))
    out = out.view(B, Fg // f, H // h, W // w, heads, f, h, w, d).permute(0, 1, 5, 2, 6, 3, 7, 4, 8)
    torch.testing.assert_close(reference.local_attention(q, k, v, (Fg, H, W), (f, h, w)), out.reshape(B, -1, heads, d))


def test_local_lse_is_logsumexp_of_window_scores():
    grid, window = (3, 4, 5), (2, 3, 2)
    q, k, v = (torch.randn(1, 60, 2, 8, dtype=torch.float64) for _ in range(3))
    _, lse = reference.local_attention_with_lse(q, k, v, grid, window)
    scores = torch.einsum("bihd,bjhd->bhij", q, k) * 8**-0.5
    want = scores.masked_fill(~same_window_mask(grid, window), float("-inf")).logsumexp(-1)
    torch.testing.assert_close(lse, want)


@pytest.mark.parametrize("Nq,Nk", [(7, 1), (50, 8), (33, 130)])
def test_global_equals_sdpa(Nq, Nk):
    q = torch.randn(2, Nq, 3, 24, dtype=torch.float64)
    k, v = (torch.randn(2, Nk, 3, 24, dtype=torch.float64) for _ in range(2))
    want = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)
    torch.testing.assert_close(reference.global_attention(q, k, v), want)


@pytest.mark.parametrize("grid,window,_heads,_d", RANDOM_SHAPES)
def test_window_pool_equals_mean_over_coordinates(grid, window, _heads, _d):
    x = torch.randn(2, math.prod(grid), 6, dtype=torch.float64)
    clipped = clip_window(grid, window)
    t, y, z = coordinates(grid)
    nf, nh, nw = reference.num_windows(grid, clipped)
    index = ((t // clipped[0]) * nh + y // clipped[1]) * nw + z // clipped[2]  # row-major window id
    want = torch.stack([x[:, index == m].mean(dim=1) for m in range(nf * nh * nw)], dim=1)
    torch.testing.assert_close(reference.window_pool(x, grid, clipped), want)


def test_window_pool_equals_avg_pool3d_when_window_divides():
    B, C, grid, window = 2, 5, (4, 6, 9), (2, 3, 3)
    x = torch.randn(B, math.prod(grid), C, dtype=torch.float64)
    want = F.avg_pool3d(x.transpose(1, 2).reshape(B, C, *grid), window, window).flatten(2).transpose(1, 2)
    torch.testing.assert_close(reference.window_pool(x, grid, window), want)


@pytest.mark.parametrize("grid,window,heads,head_dim", RANDOM_SHAPES[:3])
def test_written_out_backward_equals_autograd(grid, window, heads, head_dim):
    """The "torch" backend's backward formulas against autograd through the forward."""
    N, clipped = math.prod(grid), clip_window(grid, window)
    q, k, v = (torch.randn(2, N, heads, head_dim, dtype=torch.float64, requires_grad=True) for _ in range(3))
    out, lse = reference.local_attn_fwd(q, k, v, grid, clipped, 0.7)
    dout = torch.randn_like(out)
    for g, w in zip(reference.local_attn_bwd(dout, q, k, v, out, lse, grid, clipped, 0.7),
                    torch.autograd.grad(out, (q, k, v), dout)):
        torch.testing.assert_close(g, w)
    gq = torch.randn(2, 9, heads, head_dim, dtype=torch.float64, requires_grad=True)
    gk, gv = (torch.randn(2, 4, heads, head_dim, dtype=torch.float64, requires_grad=True) for _ in range(2))
    out, lse = reference.global_attn_fwd(gq, gk, gv, 0.7)
    dout = torch.randn_like(out)
    for g, w in zip(reference.global_attn_bwd(dout, gq, gk, gv, out, lse, 0.7),
                    torch.autograd.grad(out, (gq, gk, gv), dout)):
        torch.testing.assert_close(g, w)
    x = torch.randn(2, N, 4, dtype=torch.float64, requires_grad=True)
    pooled = reference.window_pool_fwd(x, grid, clipped)
    dpool = torch.randn_like(pooled)
    torch.testing.assert_close(reference.window_pool_bwd(dpool, grid, clipped), torch.autograd.grad(pooled, x, dpool)[0])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_low_precision_outputs_keep_the_input_dtype(dtype):
    q, k, v = (torch.randn(1, 24, 2, 16, dtype=dtype) for _ in range(3))
    out, lse = reference.local_attention_with_lse(q, k, v, (2, 3, 4), (2, 2, 2))
    assert out.dtype == dtype and lse.dtype == torch.float32
    want = reference.local_attention(q.double(), k.double(), v.double(), (2, 3, 4), (2, 2, 2))
    torch.testing.assert_close(out.double(), want, atol=torch.finfo(dtype).eps * 4, rtol=0)


def test_memory_grows_with_n_times_window():
    """Grid 16x28x28, window 2x7x7, B=2, 8 heads x 64, fp32, forward+backward: well under 2 GB.

    Full attention would need 2*8*12544^2*4 bytes = 10 GB for one score matrix alone. Peak RSS is
    measured in a fresh process so the rest of the suite does not count.
    """
    script = textwrap.dedent(
        """
        import resource, torch
        from logo_attn import local_attention
        torch.manual_seed(0)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        q, k, v = (torch.randn(2, 16 * 28 * 28, 8, 64, requires_grad=True) for _ in range(3))
        local_attention(q, k, v, (16, 28, 28), (2, 7, 7), backend="torch").sum().backward()
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    peak_bytes = int(result.stdout.strip().splitlines()[-1])
    assert peak_bytes < 2 * 1024**3, f"reference local attention peaked at {peak_bytes / 2**30:.2f} GiB"
