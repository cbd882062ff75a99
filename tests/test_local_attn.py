"""local_attention, its whole story: the reference against independent definitions, every backend
against the float64 reference (output and every gradient), shifted windows and the relative-position
bias, the registered ops (opcheck, torch.compile, gradcheck, FLOP counting), hostile input (empty
batches, zero heads, non-finite values) and argument errors, and inputs past 2**31 elements on GPU."""

import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch._dynamo.testing import CompileCounterWithBackend
from torch.utils.flop_counter import FlopCounterMode

from logo_attn import local_attention, reference
from logo_attn.flops import attention_flops
from logo_attn.geometry import attended_pairs, clip_shift, clip_window
from dense_reference import dense_local_attention, same_window_mask
from oracle import attention_inputs, backend_dtype_params, backend_params, check_op, require

ops = torch.ops.logo_attn

# B, grid, window, heads, head_dim, layout
CASES = [
    pytest.param(2, (4, 7, 7), (2, 7, 7), 2, 32, "packed", id="paper-window"),
    pytest.param(1, (5, 6, 7), (2, 4, 3), 3, 24, "heads_first", id="border-windows-every-axis"),
    pytest.param(2, (3, 5, 4), (4, 8, 8), 2, 16, "contiguous", id="window-larger-than-grid"),
    pytest.param(1, (2, 3, 9), (1, 1, 2), 1, 40, "packed", id="tiny-windows"),
    pytest.param(1, (2, 12, 11), (2, 12, 11), 1, 72, "contiguous", id="264-token-window"),
    pytest.param(1, (3, 4, 5), (2, 3, 3), 2, 128, "heads_first", id="head-dim-128"),
]

# grid, window, shift: divisible grids (Swin's case), leading and trailing partial windows, and a
# clipped axis whose shift is dropped
SHIFT_CASES = [
    pytest.param((4, 6, 6), (2, 3, 3), (1, 1, 2), id="divisible-swin"),
    pytest.param((5, 7, 6), (2, 3, 4), (1, 2, 1), id="partial-windows-both-ends"),
    pytest.param((3, 4, 5), (4, 2, 3), (2, 1, 0), id="clipped-axis"),
    pytest.param((2, 9, 9), (2, 7, 7), (0, 3, 3), id="98-token-windows"),
]


def bias_table(heads, window, dtype=torch.float64, device="cpu"):
    return torch.randn(heads, *(2 * w - 1 for w in window), dtype=dtype, device=device, requires_grad=True)


# --------------------------------------------------------------------------------------------------
# The reference against independent definitions
# --------------------------------------------------------------------------------------------------

# random shapes with odd sizes: border windows, windows larger than the grid, odd head dims
RANDOM_SHAPES = [
    ((3, 5, 7), (2, 2, 3), 2, 13),
    ((4, 7, 7), (2, 7, 7), 3, 16),
    ((2, 3, 4), (5, 9, 9), 1, 8),
    ((5, 1, 6), (3, 1, 4), 2, 24),
    ((1, 9, 2), (1, 4, 1), 4, 5),
]


@pytest.mark.parametrize("grid,window,heads,head_dim", RANDOM_SHAPES)
def test_reference_equals_dense_masked_attention(grid, window, heads, head_dim):
    N = math.prod(grid)
    q, k, v = (torch.randn(2, N, heads, head_dim, dtype=torch.float64, requires_grad=True) for _ in range(3))
    clipped = clip_window(grid, window)
    got = reference.local_attention(q, k, v, grid, clipped)
    want = dense_local_attention(q, k, v, grid, clipped)
    torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-12)
    dout = torch.randn_like(got)
    for g, w in zip(torch.autograd.grad(got, (q, k, v), dout), torch.autograd.grad(want, (q, k, v), dout)):
        torch.testing.assert_close(g, w, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("grid,window,shift", SHIFT_CASES)
def test_reference_with_shift_and_bias_equals_dense_masked_attention(grid, window, shift):
    """Shifted windows and the bias gathered by coordinates, forward and every gradient (bias too)."""
    check_reference_against_dense(grid, window, shift, bias_table(2, window))


def check_reference_against_dense(grid, window, shift, bias):
    N, heads = math.prod(grid), bias.shape[0]
    q, k, v = (torch.randn(2, N, heads, 8, dtype=torch.float64, requires_grad=True) for _ in range(3))
    clipped, used_shift = clip_window(grid, window), clip_shift(grid, window, shift)
    got = reference.local_attention(q, k, v, grid, clipped, 0.4, shift=used_shift, bias=bias)
    want = dense_local_attention(q, k, v, grid, clipped, used_shift, bias, 0.4)
    torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-12)
    dout = torch.randn_like(got)
    for g, w in zip(torch.autograd.grad(got, (q, k, v, bias), dout), torch.autograd.grad(want, (q, k, v, bias), dout)):
        torch.testing.assert_close(g, w, atol=1e-12, rtol=1e-12)


def swin_regions(grid, window, shift):
    """Swin's SW-MSA region labels of the rolled grid: the slices [0, -w), [-w, -s), [-s, end) per axis."""
    region = torch.zeros(grid, dtype=torch.long)
    count = 0
    for a in (slice(0, -window[0]), slice(-window[0], -shift[0]), slice(-shift[0], None)):
        for b in (slice(0, -window[1]), slice(-window[1], -shift[1]), slice(-shift[1], None)):
            for c in (slice(0, -window[2]), slice(-window[2], -shift[2]), slice(-shift[2], None)):
                region[a, b, c] = count
                count += 1
    return region


def test_shifted_windows_equal_swin_roll_and_region_mask():
    """On a divisible grid a shift is Swin's SW-MSA: roll by -s, attend in windows under the region
    mask (the h/w slices [0, -w), [-w, -s), [-s, end) labelled per axis), roll back."""
    grid, window, shift, heads, d = (4, 6, 6), (2, 3, 3), (1, 1, 2), 2, 8
    N = math.prod(grid)
    q, k, v = (torch.randn(1, N, heads, d, dtype=torch.float64) for _ in range(3))
    ours = reference.local_attention(q, k, v, grid, window, shift=shift)

    def roll(t, sign):
        return torch.roll(t.view(1, *grid, heads, d), [sign * s for s in shift], dims=(1, 2, 3)).reshape(1, N, heads, d)

    region = swin_regions(grid, window, shift)
    rq, rk, rv = (roll(t, -1) for t in (q, k, v))
    same_region = region.flatten()[:, None] == region.flatten()[None, :]
    mask = same_window_mask(grid, window) & same_region
    scores = torch.einsum("bihd,bjhd->bhij", rq, rk) * d**-0.5
    swin = torch.einsum("bhij,bjhd->bihd", scores.masked_fill(~mask, float("-inf")).softmax(-1), rv)
    torch.testing.assert_close(ours, roll(swin, 1), atol=1e-12, rtol=1e-12)


def test_reference_equals_sdpa_on_partitioned_windows():
    """Where the window divides the grid, windowed attention is SDPA over (B*windows, heads, tokens, d)."""
    B, (Fg, H, W), (f, h, w), heads, d = 2, (4, 14, 14), (2, 7, 7), 2, 32
    q, k, v = (torch.randn(B, Fg * H * W, heads, d, dtype=torch.float64) for _ in range(3))

    def partition(t):
        t = t.view(B, Fg // f, f, H // h, h, W // w, w, heads, d).permute(0, 1, 3, 5, 7, 2, 4, 6, 8)
        return t.reshape(-1, heads, f * h * w, d)

    out = F.scaled_dot_product_attention(partition(q), partition(k), partition(v))
    out = out.view(B, Fg // f, H // h, W // w, heads, f, h, w, d).permute(0, 1, 5, 2, 6, 3, 7, 4, 8)
    torch.testing.assert_close(reference.local_attention(q, k, v, (Fg, H, W), (f, h, w)), out.reshape(B, -1, heads, d))


def test_reference_lse_is_logsumexp_of_window_scores():
    grid, window = (3, 4, 5), (2, 3, 2)
    q, k, v = (torch.randn(1, 60, 2, 8, dtype=torch.float64) for _ in range(3))
    _, lse = reference.local_attention_with_lse(q, k, v, grid, window)
    scores = torch.einsum("bihd,bjhd->bhij", q, k) * 8**-0.5
    want = scores.masked_fill(~same_window_mask(grid, window), float("-inf")).logsumexp(-1)
    torch.testing.assert_close(lse, want)


@pytest.mark.parametrize("grid,window,shift", SHIFT_CASES[:3])
def test_written_out_backward_equals_autograd(grid, window, shift):
    """The "torch" backend's backward formulas (dbias included) against autograd through its forward."""
    N, clipped, shift = math.prod(grid), clip_window(grid, window), clip_shift(grid, window, shift)
    q, k, v = (torch.randn(2, N, 3, 8, dtype=torch.float64, requires_grad=True) for _ in range(3))
    bias = bias_table(3, window)
    out, lse = reference.local_attn_fwd(q, k, v, grid, clipped, shift, bias, 0.7)
    dout = torch.randn_like(out)
    got = reference.local_attn_bwd(dout, q, k, v, out, lse, grid, clipped, shift, bias, 0.7, True)
    for g, w in zip(got, torch.autograd.grad(out, (q, k, v, bias), dout)):
        torch.testing.assert_close(g, w)
    assert reference.local_attn_bwd(dout, q, k, v, out, lse, grid, clipped, shift, bias, 0.7, False)[3] is None


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_reference_low_precision_outputs_keep_the_input_dtype(dtype):
    q, k, v = (torch.randn(1, 24, 2, 16, dtype=dtype) for _ in range(3))
    out, lse = reference.local_attention_with_lse(q, k, v, (2, 3, 4), (2, 2, 2))
    assert out.dtype == dtype and lse.dtype == torch.float32
    want = reference.local_attention(q.double(), k.double(), v.double(), (2, 3, 4), (2, 2, 2))
    torch.testing.assert_close(out.double(), want, atol=torch.finfo(dtype).eps * 4, rtol=0)


def test_reference_memory_grows_with_n_times_window():
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


# --------------------------------------------------------------------------------------------------
# Every backend against the float64 reference
# --------------------------------------------------------------------------------------------------


def run_local(backend, grid, window, **kwargs):
    return lambda q, k, v, *rest: local_attention(q, k, v, grid, window, backend=backend,
                                                  **kwargs, **dict(zip(("bias",), rest)))


@pytest.mark.parametrize("B,grid,window,heads,head_dim,layout", CASES)
@pytest.mark.parametrize("backend,device,dtype", backend_dtype_params())
def test_matches_reference(backend, device, dtype, B, grid, window, heads, head_dim, layout, poison_empty):
    require(backend, device, dtype, head_dim)
    N = math.prod(grid)
    q, k, v = attention_inputs(B, N, N, heads, head_dim, dtype, device, layout)
    dout = torch.randn(B, N, heads, head_dim, dtype=dtype, device=device)
    clipped = clip_window(grid, window)
    check_op(
        run_local(backend, grid, window),
        lambda q, k, v: reference.local_attention(q, k, v, grid, clipped),
        (q, k, v), dout, dtype, ("out", "dq", "dk", "dv"),
        lowp_fn=lambda q, k, v: reference.local_attention_with_lse(q, k, v, grid, clipped, compute_dtype=dtype)[0],
    )


@pytest.mark.parametrize("grid,window,shift", SHIFT_CASES)
@pytest.mark.parametrize("backend,device,dtype", backend_dtype_params())
def test_shift_and_bias_match_reference(backend, device, dtype, grid, window, shift, poison_empty):
    require(backend, device, dtype, 16)
    check_shift_and_bias(backend, device, dtype, grid, window, shift, bias_table(2, window, dtype, device))


def check_shift_and_bias(backend, device, dtype, grid, window, shift, bias):
    """Output and every gradient (the bias's included) of a shifted call against the reference."""
    N, heads = math.prod(grid), bias.shape[0]
    q, k, v = attention_inputs(2, N, N, heads, 16, dtype, device, "packed")
    dout = torch.randn(2, N, heads, 16, dtype=dtype, device=device)
    clipped, used = clip_window(grid, window), clip_shift(grid, window, shift)

    def ref(q, k, v, bias, **kw):
        return reference.local_attention_with_lse(q, k, v, grid, clipped, shift=used, bias=bias, **kw)[0]

    check_op(
        run_local(backend, grid, window, shift=shift), ref, (q, k, v, bias), dout, dtype,
        ("out", "dq", "dk", "dv", "dbias"), lowp_fn=lambda *t: ref(*t, compute_dtype=dtype),
    )


@pytest.mark.parametrize("backend,device", backend_params())
def test_float32_bias_with_half_inputs(backend, device):
    """Mixed precision: a float32 table (a Swin parameter) with fp16/bf16 activations; dbias float32."""
    dtype = torch.bfloat16 if backend == "cpu" else torch.float16
    require(backend, device, dtype, 16)
    grid, window = (2, 6, 6), (2, 3, 3)
    q, k, v = attention_inputs(1, 72, 72, 2, 16, dtype, device, "contiguous")
    bias = bias_table(2, window, torch.float32, device)
    out = local_attention(q, k, v, grid, window, shift=(1, 1, 1), bias=bias, backend=backend)
    dbias, = torch.autograd.grad(out.float().square().sum(), bias)
    assert out.dtype == dtype and dbias.dtype == torch.float32
    ref_inputs = [t.detach().double().requires_grad_() for t in (q, k, v, bias)]
    used_shift = (0, 1, 1)  # the window covers the 2 frames: no shift along them
    ref = reference.local_attention(*ref_inputs[:3], grid, window, shift=used_shift, bias=ref_inputs[3])
    want, = torch.autograd.grad(ref.square().sum(), ref_inputs[3])
    torch.testing.assert_close(dbias.double(), want, atol=0.05 * want.abs().max().item(), rtol=0)


@pytest.mark.parametrize("backend,device", backend_params())
def test_sum_backward_with_stride0_grad(backend, device, poison_empty):
    """out.sum() hands backward an expanded, all-stride-0 gradient."""
    require(backend, device)
    grid, window = (3, 5, 6), (2, 3, 4)
    q, k, v = attention_inputs(2, 90, 90, 2, 16, torch.float32, device, "packed")
    local_attention(q, k, v, grid, window, backend=backend).sum().backward()
    base = q._base
    ref_inputs = tuple(t.detach().double().requires_grad_(True) for t in (q, k, v))
    reference.local_attention(*ref_inputs, grid, window).sum().backward()
    want = torch.stack([t.grad for t in ref_inputs], dim=2)
    torch.testing.assert_close(base.grad.double(), want, atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize("backend,device", backend_params())
def test_six_dim_input_keeps_its_shape(backend, device):
    require(backend, device)
    q, k, v = (torch.randn(2, 3, 4, 5, 2, 16, device=device) for _ in range(3))
    out = local_attention(q, k, v, None, (2, 2, 2), backend=backend)
    flat = local_attention(*(t.flatten(1, 3) for t in (q, k, v)), (3, 4, 5), (2, 2, 2), backend=backend)
    assert out.shape == q.shape
    torch.testing.assert_close(out.flatten(1, 3), flat, atol=0, rtol=0)


@pytest.mark.parametrize("backend,device", backend_params())
def test_backward_is_deterministic(backend, device):
    require(backend, device)
    grid, window = (4, 6, 5), (2, 4, 3)
    q, k, v = attention_inputs(2, 120, 120, 2, 32, torch.float32, device, "contiguous")
    dout = torch.randn_like(q)

    def run():
        out = local_attention(q, k, v, grid, window, backend=backend)
        return (out, *torch.autograd.grad(out, (q, k, v), dout))

    for first, second in zip(run(), run()):
        assert torch.equal(first, second)


@pytest.mark.parametrize("backend,device", backend_params())
def test_explicit_scale_accepts_any_real(backend, device):
    require(backend, device)
    q, k, v = attention_inputs(1, 60, 60, 2, 16, torch.float32, device, "contiguous")
    want = reference.local_attention(q.double(), k.double(), v.double(), (3, 4, 5), (2, 2, 5), scale=0.3)
    for scale in (0.3, np.float32(0.3), np.float64(0.3)):
        out = local_attention(q, k, v, (3, 4, 5), (2, 2, 5), scale=scale, backend=backend)
        torch.testing.assert_close(out.double(), want, atol=2e-5, rtol=2e-5)


def test_numpy_integers_as_grid_window_and_shift():
    q, k, v = (torch.randn(1, 60, 2, 8) for _ in range(3))
    want = local_attention(q, k, v, (3, 4, 5), (2, 2, 3), shift=(1, 1, 2))
    got = local_attention(q, k, v, np.array([3, 4, 5]), tuple(np.int64(x) for x in (2, 2, 3)),
                          shift=[np.int32(1), np.int16(1), np.uint8(2)])
    assert torch.equal(got, want)


# --------------------------------------------------------------------------------------------------
# Hostile input: empty batches, zero heads, non-finite values
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(0, 24, 2, 8), (2, 24, 0, 8)], ids=["empty-batch", "zero-heads"])
@pytest.mark.parametrize("backend,device", backend_params())
def test_empty_batch_and_zero_heads(backend, device, shape):
    require(backend, device)
    q, k, v = (torch.randn(shape, device=device, requires_grad=True) for _ in range(3))
    out = local_attention(q, k, v, (2, 3, 4), (2, 2, 2), backend=backend)
    assert out.shape == q.shape
    grads = torch.autograd.grad(out.sum(), (q, k, v))
    assert all(g.shape == q.shape for g in grads)


# grid, window, shift, poisoned token: windows packed several to a Triton key tile (24 and 8 tokens),
# one window per tile, a window over three key tiles, and shifted windows with a bias table
POISON_CASES = [
    pytest.param((4, 5, 6), (2, 3, 4), (0, 0, 0), 37, id="24-token-windows"),
    pytest.param((4, 4, 4), (2, 2, 2), (0, 0, 0), 37, id="8-token-windows"),
    pytest.param((2, 7, 7), (2, 7, 7), (0, 0, 0), 40, id="98-token-window"),
    pytest.param((2, 12, 12), (2, 12, 12), (0, 0, 0), 150, id="288-token-window"),
    pytest.param((3, 5, 6), (2, 3, 4), (1, 2, 1), 47, id="shifted-with-bias"),
]


def nonfinite_rows(t):
    """(B, N, heads) bool: rows holding a NaN or an infinity."""
    return ~torch.isfinite(t).all(-1)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("where", ["q", "k", "v", "dout"])
@pytest.mark.parametrize("grid,window,shift,token", POISON_CASES)
@pytest.mark.parametrize("backend,device", backend_params())
def test_non_finite_value_stays_in_its_window(backend, device, grid, window, shift, token, where, value):
    """A NaN or Inf in one element of q, k, v or the upstream gradient (batch 1, head 1) reaches only
    the rows of its own window and head, in the output and every gradient: each token attends only its
    own window, non-finite values included (a kernel packing windows into one tile must not spread
    0 x NaN). A NaN gives exactly the reference's non-finite rows (the "torch" backend in float64,
    which partitions the windows); an Inf at least those (an infinite score may also make the
    log-sum-exp NaN), and never a row outside the window. Finite rows keep their values."""
    require(backend, device)
    N, heads = math.prod(grid), 2
    bias = torch.randn(heads, *(2 * w - 1 for w in window)) if any(shift) else None
    tensors = {name: torch.randn(2, N, heads, 16) for name in ("q", "k", "v", "dout")}
    tensors[where][1, token, 1, 3] = value

    def run(backend, device, dtype):
        q, k, v = (tensors[n].to(device, dtype).requires_grad_() for n in ("q", "k", "v"))
        b = None if bias is None else bias.to(device, dtype)
        out = local_attention(q, k, v, grid, window, shift=shift, bias=b, backend=backend)
        return [t.cpu() for t in (out, *torch.autograd.grad(out, (q, k, v), tensors["dout"].to(device, dtype)))]

    got, want = run(backend, device, torch.float32), run("torch", "cpu", torch.float64)
    used_shift = clip_shift(grid, window, shift)
    inside = torch.zeros(2, N, heads, dtype=torch.bool)
    inside[1, :, 1] = same_window_mask(grid, clip_window(grid, window), used_shift)[token]
    for name, g, w in zip(("out", "dq", "dk", "dv"), got, want):
        bad, bad_ref = nonfinite_rows(g), nonfinite_rows(w)
        assert not (bad & ~inside).any(), f"{name}: a non-finite value left its window: {(bad & ~inside).nonzero()[:4].tolist()}"
        if value != value:
            assert torch.equal(bad, bad_ref), f"{name}: non-finite rows differ from the reference's"
        else:
            assert not (bad_ref & ~bad).any(), f"{name}: rows the reference makes non-finite are finite here"
        fine = ~bad & ~bad_ref
        torch.testing.assert_close(g[fine].double(), w[fine], atol=1e-4, rtol=1e-4)
    assert any(nonfinite_rows(t).any() for t in got), "the poisoned value reached no output: the case tests nothing"


@pytest.mark.parametrize("backend,device", backend_params())
def test_row_whose_scores_are_all_minus_inf_is_nan_like_softmax(backend, device):
    """q = +inf against keys whose matching component is negative: the row's scores are all -inf.
    softmax, and so the reference, gives NaN there, not 0; the other windows stay exact."""
    require(backend, device)
    grid, window = (1, 2, 8), (1, 1, 2)
    q, k, v, dout = (torch.randn(1, 16, 1, 16) for _ in range(4))
    k[0, 4:6, 0, 0] = -k[0, 4:6, 0, 0].abs() - 0.1
    q[0, 4, 0, 0] = float("inf")

    def run(backend, device, dtype):
        leaves = [t.to(device, dtype).requires_grad_() for t in (q, k, v)]
        out = local_attention(*leaves, grid, window, backend=backend)
        return [t.cpu() for t in (out, *torch.autograd.grad(out, leaves, dout.to(device, dtype)))]

    got, want = run(backend, device, torch.float32), run("torch", "cpu", torch.float64)
    assert torch.isnan(got[0][0, 4, 0]).all()
    for name, g, w in zip(("out", "dq", "dk", "dv"), got, want):
        assert torch.equal(nonfinite_rows(g), nonfinite_rows(w)), name


# --------------------------------------------------------------------------------------------------
# The registered ops: opcheck, torch.compile, gradcheck, FLOP counting, double backward
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["contiguous", "heads_first"])
@pytest.mark.parametrize("backend,device", backend_params())
def test_opcheck(backend, device, layout):
    require(backend, device)
    grid, window, shift, scale = [3, 4, 5], [2, 3, 2], [0, 0, 0], 0.25
    q, k, v = (t.detach() for t in attention_inputs(2, 60, 60, 2, 16, torch.float32, device, layout))
    out, lse = ops.local_attn_fwd(q, k, v, grid, window, shift, None, scale, backend)
    torch.library.opcheck(ops.local_attn_fwd, (q, k, v, grid, window, shift, None, scale, backend))
    torch.library.opcheck(ops.local_attn_bwd,
                          (torch.randn_like(out), q, k, v, out, lse, grid, window, shift, None, scale, False, backend))


@pytest.mark.parametrize("backend,device", backend_params())
@pytest.mark.parametrize("bias_shape,layout", [((2, 3, 5, 3), "contiguous"), ((2, 12, 12), "heads_first")],
                         ids=["table", "dense"])
def test_opcheck_with_shift_and_bias(backend, device, bias_shape, layout):
    require(backend, device)
    grid, window, shift, scale = [3, 4, 5], [2, 3, 2], [1, 2, 1], 0.25
    q, k, v = (t.detach() for t in attention_inputs(2, 60, 60, 2, 16, torch.float32, device, layout))
    bias = torch.randn(bias_shape, device=device)
    out, lse = ops.local_attn_fwd(q, k, v, grid, window, shift, bias, scale, backend)
    torch.library.opcheck(ops.local_attn_fwd, (q, k, v, grid, window, shift, bias, scale, backend))
    torch.library.opcheck(ops.local_attn_bwd,
                          (torch.randn_like(out), q, k, v, out, lse, grid, window, shift, bias, scale, True, backend))


@pytest.mark.parametrize("backend,device,dense", [
    *[pytest.param(*p.values, False, id=f"no-bias-{p.id}") for p in backend_params()],
    # Interpreted Triton with the dense bias took 156 s of CI (its backward under the interpreter):
    # the compiled graph calls the same op on the same inputs as eager, whose dense-bias Triton
    # kernels the eager tests check; the no-bias case keeps Triton under torch.compile.
    *[pytest.param(*p.values, True, id=f"shift-and-dense-bias-{p.id}") for p in backend_params(interpreted_triton=False)],
])
def test_compile_fullgraph_dynamic_without_recompiles(backend, device, dense):
    require(backend, device)
    torch._dynamo.reset()
    counter = CompileCounterWithBackend("inductor")

    def local(q, k, v, grid, bias):
        return local_attention(q, k, v, grid, (2, 2, 3), shift=(1, 1, 1) if dense else (0, 0, 0), bias=bias,
                               backend=backend)

    compiled = torch.compile(local, backend=counter, fullgraph=True, dynamic=True)
    # sizes distinct from each other and from 0/1, so neither duck sizing nor 0/1 specialisation adds
    # guards that a new shape would fail
    for B, grid in ((6, (3, 4, 5)), (7, (4, 6, 5)), (9, (5, 4, 7))):
        q, k, v = attention_inputs(B, math.prod(grid), math.prod(grid), 2, 16, torch.float32, device, "packed")
        bias = torch.randn(2, 12, 12, device=device, requires_grad=True) if dense else None
        leaves = (q, k, v, bias) if dense else (q, k, v)
        dout = torch.randn(q.shape, device=device)
        got = compiled(q, k, v, grid, bias)
        want = local(q, k, v, grid, bias)
        torch.testing.assert_close(got, want)
        for g, w in zip(torch.autograd.grad(got, leaves, dout), torch.autograd.grad(want, leaves, dout)):
            torch.testing.assert_close(g, w)
    assert counter.frame_count == 1, f"recompiled: {counter.frame_count} frames for 3 shapes"


def test_compiled_backward_runs_the_fused_op_not_the_reference(monkeypatch):
    """torch.compile traces the backward once; it must trace the fused backward op (the reference
    path is for graphs that take a second derivative)."""
    from logo_attn.ops import local_attn as module

    def refuse(*args):
        raise AssertionError("the compiled backward went through the reference")

    monkeypatch.setattr(module, "_reference_grads", refuse)
    torch._dynamo.reset()
    q, k, v = attention_inputs(2, 60, 60, 2, 16, torch.float32, "cpu", "contiguous")
    compiled = torch.compile(lambda q, k, v: local_attention(q, k, v, (3, 4, 5), (2, 2, 3)), fullgraph=True)
    compiled(q, k, v).sum().backward()
    assert q.grad is not None


@pytest.mark.parametrize("backend,device,dtype", backend_dtype_params(dtypes=(torch.float64,)))
def test_gradcheck_float64(backend, device, dtype):
    require(backend, device, dtype)
    q, k, v = (t.detach().requires_grad_(True) for t in attention_inputs(1, 24, 24, 2, 4, dtype, device, "contiguous"))
    grid, window = (2, 3, 4), (2, 2, 3)
    assert torch.autograd.gradcheck(lambda q, k, v: local_attention(q, k, v, grid, window, backend=backend), (q, k, v))


@pytest.mark.parametrize("backend,device,dtype", backend_dtype_params(dtypes=(torch.float64,)))
def test_gradcheck_float64_with_shift_and_bias(backend, device, dtype):
    require(backend, device, dtype)
    q, k, v = (t.detach().requires_grad_(True) for t in attention_inputs(1, 45, 45, 2, 4, dtype, device, "contiguous"))
    bias = torch.randn(2, 3, 3, 5, dtype=dtype, device=device, requires_grad=True)
    grid, window, shift = (3, 3, 5), (2, 2, 3), (1, 1, 2)
    assert torch.autograd.gradcheck(
        lambda q, k, v, b: local_attention(q, k, v, grid, window, shift=shift, bias=b, backend=backend), (q, k, v, bias))


def second_derivatives(fn, inputs):
    """Gradients of a gradient penalty: d/dx sum_i |d(sum out^2)/dx_i|^2, through a graph of the first."""
    out = fn(*inputs)
    grads = torch.autograd.grad(out.square().sum(), inputs, create_graph=True)
    return torch.autograd.grad(sum(g.square().sum() for g in grads), inputs)


@pytest.mark.parametrize("backend,device", backend_params())
def test_second_derivatives_through_the_reference(backend, device):
    """Double backward (e.g. a gradient penalty) gives autograd's second derivatives of the reference."""
    require(backend, device)
    dtype = torch.float64 if backend in ("torch", "cpu") else torch.float32
    grid, window = (2, 3, 4), (2, 2, 3)
    inputs = tuple(t.detach().requires_grad_(True) for t in attention_inputs(1, 24, 24, 2, 4, dtype, device, "contiguous"))
    got = second_derivatives(lambda q, k, v: local_attention(q, k, v, grid, window, backend=backend), inputs)
    want = second_derivatives(lambda q, k, v: reference.local_attention(q, k, v, grid, window), inputs)
    for g, w in zip(got, want):  # fp32 kernels' outputs feed the penalty: relative 1e-4
        torch.testing.assert_close(g, w, atol=1e-4 * w.abs().max().item(), rtol=1e-4)


@pytest.mark.parametrize("bias_shape", [(2, 3, 3, 5), (2, 12, 12)], ids=["table", "dense"])
@pytest.mark.parametrize("backend,device", backend_params())
def test_second_derivatives_with_shift_and_bias(backend, device, bias_shape):
    require(backend, device)
    grid, window, shift = (2, 3, 4), (2, 2, 3), (0, 1, 2)
    q, k, v = (t.detach().requires_grad_(True) for t in attention_inputs(1, 24, 24, 2, 4, torch.float32, device, "contiguous"))
    inputs = (q, k, v, torch.randn(bias_shape, device=device, requires_grad=True))
    got = second_derivatives(
        lambda q, k, v, b: local_attention(q, k, v, grid, window, shift=shift, bias=b, backend=backend), inputs)
    want = second_derivatives(
        lambda q, k, v, b: reference.local_attention(q, k, v, grid, window, shift=shift, bias=b), inputs)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=1e-4 * w.abs().max().item(), rtol=1e-4)


def test_torch_func_grad_and_jacrev():
    """torch.func.grad and jacrev of the op equal autograd's (torch.func.vmap is not supported: the
    custom ops have no batching rule, and PyTorch says so)."""
    q, k, v = (torch.randn(1, 24, 2, 8, dtype=torch.float64) for _ in range(3))

    def loss(q):
        return local_attention(q, k, v, (2, 3, 4), (2, 2, 2)).square().sum()

    q_leaf = q.clone().requires_grad_()
    want, = torch.autograd.grad(loss(q_leaf), q_leaf)
    torch.testing.assert_close(torch.func.grad(loss)(q), want)
    small = q[:, :8]
    jacobian = torch.func.jacrev(lambda q: local_attention(q, k[:, :8], v[:, :8], (1, 2, 4), (1, 2, 2)))(small)
    ref = torch.autograd.functional.jacobian(
        lambda q: reference.local_attention(q, k[:, :8], v[:, :8], (1, 2, 4), (1, 2, 2)), small)
    torch.testing.assert_close(jacobian, ref)
    with pytest.raises(RuntimeError, match="does not have vmap support"):
        torch.func.vmap(lambda x: local_attention(x, x, x, (2, 3, 4), (2, 2, 2)))(torch.randn(3, 1, 24, 2, 8))


def brute_force_pairs(grid, window, shift):
    """Sum over windows of tokens^2, counting each token's window id from its coordinates."""
    return int(same_window_mask(grid, window, shift).sum())


@pytest.mark.parametrize("backend,device", backend_params())
def test_flop_counter_counts_attended_pairs(backend, device):
    require(backend, device)
    B, grid, window, heads, d = 2, (3, 5, 7), (2, 2, 3), 2, 16
    N = math.prod(grid)
    q, k, v = attention_inputs(B, N, N, heads, d, torch.float32, device, "contiguous")
    with FlopCounterMode(display=False) as counter:
        local_attention(q, k, v, grid, window, backend=backend).sum().backward()
    pairs = attended_pairs(grid, window)
    assert pairs == brute_force_pairs(grid, window, (0, 0, 0))
    want = attention_flops(pairs, B, heads, d) + attention_flops(pairs, B, heads, d, backward=True)
    assert counter.get_total_flops() == want


@pytest.mark.parametrize("grid,window,shift", SHIFT_CASES)
def test_flop_formula_counts_shifted_windows(grid, window, shift):
    clipped, used = clip_window(grid, window), clip_shift(grid, window, shift)
    q = torch.randn(1, math.prod(grid), 2, 8)
    with FlopCounterMode(display=False) as counter:
        local_attention(q, q, q, grid, window, shift=shift)
    pairs = brute_force_pairs(grid, clipped, used)
    assert attended_pairs(grid, clipped, used) == pairs
    assert counter.get_total_flops() == attention_flops(pairs, 1, 2, 8)


# --------------------------------------------------------------------------------------------------
# The dense (heads, T, T) bias shared by every window
# --------------------------------------------------------------------------------------------------

# grid, window, shift: divisible with a shift (Swin's SW-MSA slots), partial windows at both ends,
# a clipped axis (T follows the clipped window), a window clipped on every axis after one of length
# > 1 (where MONAI's relative_position_index[:n, :n] is not a table of offsets), one window over
# three Triton key tiles, and a 2-D grid of one frame
DENSE_CASES = [
    pytest.param((4, 6, 6), (2, 3, 3), (1, 1, 2), id="divisible-swin"),
    pytest.param((5, 7, 6), (2, 3, 4), (1, 2, 1), id="partial-windows-both-ends"),
    pytest.param((3, 4, 5), (4, 2, 3), (2, 1, 0), id="clipped-axis"),
    pytest.param((3, 3, 3), (7, 7, 7), (3, 3, 3), id="clipped-everywhere"),
    pytest.param((2, 12, 12), (2, 12, 12), (0, 0, 0), id="288-slot-window"),
    pytest.param((1, 9, 10), (1, 4, 4), (0, 2, 2), id="2d-one-frame"),
]


def dense_bias(heads, grid, window, dtype=torch.float64, device="cpu"):
    slots = math.prod(clip_window(grid, window))
    return torch.randn(heads, slots, slots, dtype=dtype, device=device, requires_grad=True)


@pytest.mark.parametrize("grid,window,shift", DENSE_CASES)
def test_reference_with_dense_bias_equals_dense_masked_attention(grid, window, shift):
    """The reference's partition slots against slots computed from coordinates: forward and every
    gradient, the bias's included."""
    check_reference_against_dense(grid, window, shift, dense_bias(2, grid, window))


@pytest.mark.parametrize("grid,window,shift", DENSE_CASES[:3])
def test_dense_bias_backward_written_out_equals_autograd(grid, window, shift):
    N, clipped, shift = math.prod(grid), clip_window(grid, window), clip_shift(grid, window, shift)
    q, k, v = (torch.randn(2, N, 3, 8, dtype=torch.float64, requires_grad=True) for _ in range(3))
    bias = dense_bias(3, grid, clipped)
    out, lse = reference.local_attn_fwd(q, k, v, grid, clipped, shift, bias, 0.7)
    dout = torch.randn_like(out)
    got = reference.local_attn_bwd(dout, q, k, v, out, lse, grid, clipped, shift, bias, 0.7, True)
    for g, w in zip(got, torch.autograd.grad(out, (q, k, v, bias), dout)):
        torch.testing.assert_close(g, w)


def test_dense_bias_equals_swin_roll_partition_on_a_divisible_grid():
    """Swin's SW-MSA with a dense bias: roll by -s, partition, add bias[head, slot_i, slot_j] and the
    region mask inside each window, un-partition, roll back."""
    grid, window, shift, heads, d = (4, 6, 6), (2, 3, 3), (1, 1, 2), 2, 8
    N, T = math.prod(grid), math.prod(window)
    q, k, v = (torch.randn(1, N, heads, d, dtype=torch.float64) for _ in range(3))
    bias = torch.randn(heads, T, T, dtype=torch.float64)
    ours = reference.local_attention(q, k, v, grid, window, shift=shift, bias=bias)

    def windows(t, roll=True):  # (1, N, heads, c) rolled -> (windows, heads, T, c), Swin's window_partition
        t = t.view(*grid, *t.shape[2:])
        if roll:
            t = torch.roll(t, [-s for s in shift], dims=(0, 1, 2))
        n = [g // w for g, w in zip(grid, window)]
        t = t.view(n[0], window[0], n[1], window[1], n[2], window[2], *t.shape[3:]).permute(0, 2, 4, 6, 1, 3, 5, 7)
        return t.reshape(-1, t.shape[4], T, t.shape[-1])

    region = swin_regions(grid, window, shift)
    # the region labels are those of the rolled grid's tokens already
    labels = windows(region.view(1, N, 1, 1).expand(1, N, heads, 1), roll=False)[:, 0, :, 0]  # (windows, T)
    mask = labels[:, None, :, None] == labels[:, None, None, :]
    scores = windows(q) @ windows(k).transpose(-1, -2) * d**-0.5 + bias
    out = scores.masked_fill(~mask, float("-inf")).softmax(-1) @ windows(v)  # (windows, heads, T, d)
    n = [g // w for g, w in zip(grid, window)]
    out = out.view(*n, heads, *window, d).permute(0, 4, 1, 5, 2, 6, 3, 7).reshape(*grid, heads, d)
    swin = torch.roll(out, list(shift), dims=(0, 1, 2)).reshape(1, N, heads, d)
    torch.testing.assert_close(ours, swin, atol=1e-12, rtol=1e-12)


def test_dense_bias_gathered_from_a_table_equals_the_table():
    """On an unclipped window, table[relative_position_index] as a dense bias is the table itself."""
    grid, window, shift = (5, 7, 6), (2, 3, 4), (1, 2, 1)
    q, k, v = (torch.randn(2, math.prod(grid), 3, 8, dtype=torch.float64) for _ in range(3))
    table = torch.randn(3, *(2 * w - 1 for w in window), dtype=torch.float64)
    dense = reference.window_bias(table, window)
    torch.testing.assert_close(reference.local_attention(q, k, v, grid, window, shift=shift, bias=dense),
                               dense_local_attention(q, k, v, grid, window, shift, table), atol=1e-12, rtol=0)


@pytest.mark.parametrize("grid,window,shift", DENSE_CASES)
@pytest.mark.parametrize("backend,device,dtype", backend_dtype_params())
def test_dense_bias_matches_reference(backend, device, dtype, grid, window, shift, poison_empty):
    require(backend, device, dtype, 16)
    check_shift_and_bias(backend, device, dtype, grid, window, shift, dense_bias(2, grid, window, dtype, device))


@pytest.mark.parametrize("backend,device", backend_params())
def test_dense_bias_strided_float32_with_half_inputs(backend, device):
    """A float32 dense bias read through strides (a transposed view) with fp16/bf16 activations."""
    dtype = torch.bfloat16 if backend in ("cpu", "torch") else torch.float16
    require(backend, device, dtype, 16)
    grid, window, shift = (2, 6, 7), (2, 3, 3), (1, 1, 1)
    q, k, v = attention_inputs(1, 84, 84, 2, 16, dtype, device, "heads_first")
    leaf = torch.randn(18, 18, 2, device=device, requires_grad=True)
    bias = leaf.permute(2, 1, 0)  # (heads, T, T), no unit stride anywhere but the heads
    out = local_attention(q, k, v, grid, window, shift=shift, bias=bias, backend=backend)
    dleaf, = torch.autograd.grad(out.float().square().sum(), leaf)
    assert out.dtype == dtype and dleaf.dtype == torch.float32
    ref_inputs = [t.detach().double().requires_grad_() for t in (q, k, v, bias)]
    ref = reference.local_attention(*ref_inputs[:3], grid, window, shift=(0, 1, 1), bias=ref_inputs[3])
    want, = torch.autograd.grad(ref.square().sum(), ref_inputs[3])
    torch.testing.assert_close(dleaf.permute(2, 1, 0).double(), want, atol=0.05 * want.abs().max().item(), rtol=0)


# Not interpreted Triton: threads mean nothing to the interpreter, and tests/test_triton_kernels.py's
# test_dense_dbias_is_bitwise_deterministic checks the same kernels' determinism in a tenth of the time.
@pytest.mark.parametrize("backend,device", backend_params(interpreted_triton=False))
def test_dense_bias_gradient_is_deterministic_and_thread_count_independent(backend, device):
    require(backend, device)
    grid, window, shift = (4, 7, 6), (2, 3, 4), (1, 1, 2)
    q, k, v = attention_inputs(3, 168, 168, 2, 16, torch.float32, device, "packed")
    bias = dense_bias(2, grid, window, torch.float32, device)
    dout = torch.randn(3, 168, 2, 16, device=device)

    def run(threads):
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            out = local_attention(q, k, v, grid, window, shift=shift, bias=bias, backend=backend)
            return (out, *torch.autograd.grad(out, (q, k, v, bias), dout))
        finally:
            torch.set_num_threads(before)

    first = run(2)
    for again in (run(2), run(1)):
        for a, b in zip(first, again):
            assert torch.equal(a, b)


@pytest.mark.parametrize("backend,device", backend_params())
def test_non_finite_dense_bias_entry_stays_in_its_slot_pair(backend, device):
    """A NaN at bias[h, i, j] reaches, in the output, only head h's queries at slot i of the windows
    holding slot j too, and in the bias gradient only row (h, i) (those queries' probabilities)."""
    require(backend, device)
    grid, window, shift, heads = (3, 5, 6), (2, 3, 4), (1, 2, 1), 2
    N, T = math.prod(grid), math.prod(window)
    q, k, v, dout = (torch.randn(2, N, heads, 16) for _ in range(4))
    bias = torch.randn(heads, T, T)
    i, j = 5, 17
    bias[1, i, j] = float("nan")
    leaves = [t.to(device).requires_grad_() for t in (q, k, v, bias)]
    out = local_attention(*leaves[:3], grid, window, shift=shift, bias=leaves[3], backend=backend)
    dbias, = torch.autograd.grad(out, leaves[3], dout.to(device))
    from dense_reference import window_slots
    slot = window_slots(grid, window, shift)
    reached = same_window_mask(grid, window, shift) & (slot[:, None] == i) & (slot[None, :] == j)
    expected = torch.zeros(2, N, heads, dtype=torch.bool)
    expected[:, :, 1] = reached.any(1)
    assert expected.any(), "no window holds both slots: the case tests nothing"
    assert torch.equal(nonfinite_rows(out.cpu()), expected)
    bad = ~torch.isfinite(dbias.cpu())
    assert bad[1, i].any() and not bad[0].any() and not bad[1, :i].any() and not bad[1, i + 1:].any()


@pytest.mark.parametrize("backend,device,dtype", backend_dtype_params(dtypes=(torch.float64,)))
def test_gradcheck_float64_with_dense_bias(backend, device, dtype):
    require(backend, device, dtype)
    q, k, v = (t.detach().requires_grad_(True) for t in attention_inputs(1, 45, 45, 2, 4, dtype, device, "contiguous"))
    bias = torch.randn(2, 12, 12, dtype=dtype, device=device, requires_grad=True)
    grid, window, shift = (3, 3, 5), (2, 2, 3), (1, 1, 2)
    assert torch.autograd.gradcheck(
        lambda q, k, v, b: local_attention(q, k, v, grid, window, shift=shift, bias=b, backend=backend), (q, k, v, bias))


@pytest.mark.parametrize("backend,device", backend_params())
def test_flop_counter_is_the_same_with_a_dense_bias(backend, device):
    require(backend, device)
    grid, window, shift = (3, 5, 7), (2, 2, 3), (1, 1, 1)
    q, k, v = attention_inputs(2, 105, 105, 2, 16, torch.float32, device, "contiguous")
    with FlopCounterMode(display=False) as counter:
        local_attention(q, k, v, grid, window, shift=shift, bias=torch.randn(2, 12, 12, device=device,
                                                                             requires_grad=True), backend=backend).sum().backward()
    pairs = attended_pairs(grid, window, shift)
    assert counter.get_total_flops() == attention_flops(pairs, 2, 2, 16) + attention_flops(pairs, 2, 2, 16, backward=True)


# --------------------------------------------------------------------------------------------------
# Argument errors specific to this op (the shared checks are in tests/test_checks.py)
# --------------------------------------------------------------------------------------------------

GRID, WINDOW = (2, 3, 4), (2, 2, 2)


def qkv(N=24, heads=2, d=8, **kwargs):
    return tuple(torch.randn(1, N, heads, d, **kwargs) for _ in range(3))


def test_tokens_do_not_match_grid():
    with pytest.raises(ValueError, match=r"q has 25 tokens but grid \(2, 3, 4\) has F\*H\*W = 24"):
        local_attention(*qkv(N=25), GRID, WINDOW)


def test_grid_required_for_4d_and_consistent_for_6d():
    with pytest.raises(TypeError, match="grid is required for 4-D inputs"):
        local_attention(*qkv(), None, WINDOW)
    q = torch.randn(1, 2, 3, 4, 2, 8)
    with pytest.raises(ValueError, match=r"grid \(4, 3, 2\) does not match the 6-D input's grid \(2, 3, 4\)"):
        local_attention(q, q, q, (4, 3, 2), WINDOW)


@pytest.mark.parametrize("window", [(0, 2, 2), (2, -1, 2)])
def test_window_below_one(window):
    with pytest.raises(ValueError, match=r"window \(f, h, w\) entries must be >= 1, got"):
        local_attention(*qkv(), GRID, window)


@pytest.mark.parametrize("shift,message", [
    ((2, 0, 0), r"shift \(2, 0, 0\) must be smaller than the window \(2, 2, 2\)"),
    ((0, -1, 0), r"shift \(sf, sh, sw\) entries must be >= 0"),
    ((0, 1), r"shift must be a sequence of 3 ints \(sf, sh, sw\)"),
])
def test_bad_shift(shift, message):
    with pytest.raises((ValueError, TypeError), match=message):
        local_attention(*qkv(), GRID, WINDOW, shift=shift)


def test_bad_bias():
    q, k, v = qkv()
    with pytest.raises(ValueError, match=r"bias must be a \(heads, 2f-1, 2h-1, 2w-1\) = \(2, 3, 3, 3\) table for "
                                         r"window \(2, 2, 2\) or a dense \(heads, T, T\) bias, got shape \(2, 3, 3, 4\)"):
        local_attention(q, k, v, GRID, WINDOW, bias=torch.zeros(2, 3, 3, 4))
    with pytest.raises(ValueError, match=r"or a dense \(heads, T, T\) bias, got shape \(2, 8\)"):
        local_attention(q, k, v, GRID, WINDOW, bias=torch.zeros(2, 8))
    with pytest.raises(TypeError, match=r"bias must be torch.float32 for torch.float32 q, got torch.float64"):
        local_attention(q, k, v, GRID, WINDOW, bias=torch.zeros(2, 3, 3, 3, dtype=torch.float64))
    with pytest.raises(TypeError, match=r"bias must be torch.float32 for torch.float32 q, got torch.float16"):
        local_attention(q, k, v, GRID, WINDOW, bias=torch.zeros(2, 8, 8, dtype=torch.float16))
    with pytest.raises(TypeError, match=r"bias must be a torch.Tensor or None, got list"):
        local_attention(q, k, v, GRID, WINDOW, bias=[0.0])
    with pytest.raises(ValueError, match=r"bias is on meta but q is on cpu"):
        local_attention(q, k, v, GRID, WINDOW, bias=torch.zeros(2, 3, 3, 3, device="meta"))
    with pytest.raises(ValueError, match=r"bias is on meta but q is on cpu"):
        local_attention(q, k, v, GRID, WINDOW, bias=torch.zeros(2, 8, 8, device="meta"))


@pytest.mark.parametrize("window,bias_shape,message", [
    ((2, 2, 2), (2, 27, 27), r"\(heads, T, T\) = \(2, 8, 8\): T = f\*h\*w = 8 slots of window \(2, 2, 2\) clipped to grid "
                             r"\(2, 3, 4\) as \(2, 2, 2\), got shape \(2, 27, 27\)"),
    ((7, 7, 7), (2, 343, 343), r"\(heads, T, T\) = \(2, 24, 24\): T = f\*h\*w = 24 slots of window \(7, 7, 7\) clipped to grid "
                               r"\(2, 3, 4\) as \(2, 3, 4\)"),
    ((2, 2, 2), (3, 8, 8), r"\(heads, T, T\) = \(2, 8, 8\)"),
    ((2, 2, 2), (2, 8, 7), r"\(heads, T, T\) = \(2, 8, 8\)"),
], ids=["wrong-T", "T-of-the-clipped-window", "heads", "not-square"])
def test_bad_dense_bias_shape(window, bias_shape, message):
    with pytest.raises(ValueError, match="a dense bias must be " + message):
        local_attention(*qkv(), GRID, window, bias=torch.zeros(bias_shape))


def test_bias_table_follows_the_window_as_given_even_when_clipped():
    """A (heads, 2f-1, ...) table for the configured window stays valid on a smaller grid."""
    q, k, v = qkv()
    bias = torch.randn(2, 13, 13, 13)  # window 7x7x7 on a 2x3x4 grid
    out = local_attention(q, k, v, GRID, (7, 7, 7), shift=(3, 3, 3), bias=bias)
    torch.testing.assert_close(out, dense_local_attention(q, k, v, GRID, GRID, (0, 0, 0), bias))


# --------------------------------------------------------------------------------------------------
# Inputs past 2**31 elements (GPU only: about 16 GB)
# --------------------------------------------------------------------------------------------------

LARGE_GRID, LARGE_WINDOW, LARGE_HEADS, LARGE_HEAD_DIM = (16, 14, 14), (2, 7, 7), 8, 64


@pytest.mark.parametrize("backend", ["triton", "cuda"])
def test_large_shape_past_int32_offsets(backend):
    """The last batch item lies wholly beyond element 2**31: a kernel computing offsets in int32
    would read or write the wrong memory; that item is compared with the float64 reference."""
    from oracle import INT32_LIMIT, LAST_ITEM, batch_beyond_int32

    dtype = torch.bfloat16
    require(backend, "cuda", dtype, LARGE_HEAD_DIM)
    tokens = math.prod(LARGE_GRID)
    qkv_ = torch.randn(batch_beyond_int32(tokens * 3 * LARGE_HEADS * LARGE_HEAD_DIM), tokens, 3, LARGE_HEADS,
                       LARGE_HEAD_DIM, device="cuda", dtype=dtype).requires_grad_()
    assert qkv_[LAST_ITEM].storage_offset() >= INT32_LIMIT
    q, k, v = qkv_.unbind(2)
    check_op(lambda q, k, v: local_attention(q, k, v, LARGE_GRID, LARGE_WINDOW, backend=backend),
             lambda q, k, v: reference.local_attention(q, k, v, LARGE_GRID, LARGE_WINDOW),
             (q, k, v), torch.randn_like(q), dtype, ("out", "dq", "dk", "dv"), items=LAST_ITEM)
