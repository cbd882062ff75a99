"""A NaN or Inf in one window stays in that window on the C++ CPU kernels.

Each CPU task computes one (batch, window, head), so a non-finite value of one window's q, k, v or
dout can only reach that window's rows of out, dq, dk and dv; kernels that pack several windows in
one tile can leak it (0 * NaN = NaN). The rows that come out non-finite must all lie inside the
poisoned window, and for a NaN they must be exactly those of the "torch" backend (which partitions
the windows). An Inf is compared by containment only: an infinite score makes the kernels'
log-sum-exp max + log(sum) NaN where torch.logsumexp returns inf, so backward's P = exp(S - lse)
is NaN on the whole row on CPU but only at the infinite scores in torch (more NaN dV rows, all in
the window).
"""

from __future__ import annotations

import pytest
import torch

from logo_attn import _cpp, local_attention

GRID, WINDOW = (3, 5, 6), (2, 3, 4)  # border windows on every axis
B, HEADS, HEAD_DIM = 2, 2, 8
POISON = (1, (2, 4, 5), 1, 3)  # batch, grid coordinate (t, y, x), head, channel


def window_rows(grid, window, b, coord, head, shift=(0, 0, 0)):
    """(B, N, heads) bool: the rows of (batch b, head, the window holding coord)."""
    t, y, x = torch.meshgrid(*(torch.arange(g) for g in grid), indexing="ij")
    same = torch.ones(t.shape, dtype=torch.bool)
    for c, w, s, axis in zip(coord, window, shift, (t, y, x)):
        offset = (w - s) % w
        same &= (axis + offset) // w == (c + offset) // w
    rows = torch.zeros(B, t.numel(), HEADS, dtype=torch.bool)
    rows[b, :, head] = same.flatten()
    return rows


def nonfinite_rows(t: torch.Tensor) -> torch.Tensor:
    return ~torch.isfinite(t).all(dim=-1)


def results(backend, q, k, v, dout):
    leaves = tuple(t.detach().requires_grad_(True) for t in (q, k, v))
    out = local_attention(*leaves, GRID, WINDOW, backend=backend)
    return {"out": out, **dict(zip(("dq", "dk", "dv"), torch.autograd.grad(out, leaves, dout)))}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("poisoned", ["q", "k", "v", "dout"])
def test_nonfinite_value_stays_in_its_window(poisoned, value, dtype):
    N = GRID[0] * GRID[1] * GRID[2]
    tensors = {name: torch.randn(B, N, HEADS, HEAD_DIM, dtype=dtype) for name in ("q", "k", "v", "dout")}
    b, (t, y, x), head, channel = POISON
    tensors[poisoned][b, (t * GRID[1] + y) * GRID[2] + x, head, channel] = value
    got, want = results("cpu", **tensors), results("torch", **tensors)
    inside = window_rows(GRID, WINDOW, b, (t, y, x), head)
    reached = torch.zeros_like(inside)
    for name in got:
        rows = nonfinite_rows(got[name])
        assert not (rows & ~inside).any(), f"{name}: a non-finite value left its window"
        if value != value:  # NaN
            assert torch.equal(rows, nonfinite_rows(want[name])), f"{name}: non-finite rows differ from torch's"
        reached |= rows
    assert reached.any(), "the poisoned value reached no output: the test would check nothing"


@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
@pytest.mark.parametrize("poisoned", ["q", "k", "v", "dout"])
def test_nonfinite_value_stays_in_its_shifted_window_with_bias(poisoned, value):
    """The same with shifted windows and a bias, on the raw kernels (containment only: the dense
    reference lets a NaN through its masked zeros into every window)."""
    shift = (1, 2, 1)
    N = GRID[0] * GRID[1] * GRID[2]
    tensors = {name: torch.randn(B, N, HEADS, HEAD_DIM) for name in ("q", "k", "v", "dout")}
    b, (t, y, x), head, channel = POISON
    tensors[poisoned][b, (t * GRID[1] + y) * GRID[2] + x, head, channel] = value
    q, k, v, dout = tensors.values()
    bias = torch.randn(HEADS, *(2 * w - 1 for w in WINDOW))
    out, lse = _cpp.local_attn_fwd(q, k, v, GRID, WINDOW, shift, bias, 0.3)
    grads = _cpp.local_attn_bwd(dout, q, k, v, out, lse, GRID, WINDOW, shift, bias, 0.3, True)
    inside = window_rows(GRID, WINDOW, b, (t, y, x), head, shift)
    reached = torch.zeros_like(inside)
    for name, result in zip(("out", "dq", "dk", "dv"), (out, *grads[:3])):
        rows = nonfinite_rows(result)
        assert not (rows & ~inside).any(), f"{name}: a non-finite value left its window"
        reached |= rows
    assert reached.any(), "the poisoned value reached no output: the test would check nothing"
