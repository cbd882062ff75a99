"""A NaN or Inf stays inside its window on the triton backend, forward and backward.

Small windows are packed several to a key tile, and a product over that tile (P V, dS K, P^T dO,
dS^T Q) multiplies the masked-out zeros of one window with the values of the others: 0 x NaN would
spread a fault to every window of the tile. The contract is that each token attends only its own
window, non-finite values included, so the rows the triton kernels make non-finite must be exactly
the rows the `torch` backend (which partitions the grid into windows) makes non-finite, and every
other row must still match the float64 reference. Runs on CUDA when present, else under Triton's
interpreter (conftest sets TRITON_INTERPRET=1).
"""

from __future__ import annotations

import math

import pytest
import torch

from logo_attn import backends, local_attention
from logo_attn.geometry import window_token_indices
from oracle import TOLERANCE

pytest.importorskip("triton")
if not torch.cuda.is_available() and not backends.triton_interpreted():
    pytest.skip("no GPU and TRITON_INTERPRET is unset: Triton kernels cannot run", allow_module_level=True)

from logo_attn.kernels import local_attn, tuning  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# The interpreter runs the kernels on NumPy arrays, which warns about the NaNs these tests feed it.
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")
HEADS, HEAD_DIM = 2, 16

# grid, window, poisoned token, whether the launcher packs several windows per key tile (fp32, d=16)
CASES = [
    pytest.param((4, 5, 6), (2, 3, 4), 37, True, id="24-token-windows-2-per-tile"),
    pytest.param((4, 4, 4), (2, 2, 2), 37, True, id="8-token-windows-8-per-tile"),
    pytest.param((2, 7, 7), (2, 7, 7), 40, False, id="98-token-window-one-tile"),
    pytest.param((2, 12, 12), (2, 12, 12), 150, False, id="288-token-window-three-key-tiles"),
]


def packed(window, dtype):
    return local_attn.tile_plan(math.prod(window), tuning.key_tile(HEAD_DIM, dtype))[1] > 1


def nonfinite_rows(t):
    """(B, N, heads) bool: rows holding a NaN or an infinity."""
    return ~torch.isfinite(t).all(-1)


def run(backend, grid, window, q, k, v, dout):
    """Output and q/k/v gradients of local_attention on `backend`."""
    leaves = [t.detach().clone().requires_grad_(True) for t in (q, k, v)]
    out = local_attention(*leaves, grid, window, backend=backend)
    return (out, *torch.autograd.grad(out, leaves, dout))


def check_confined(grid, window, token, where, value, dtype):
    """Poison one element of `where` (batch 1, head 1, `token`) and compare every output's
    non-finite rows with the torch backend's (run in float64), and the finite rows with its values."""
    N = math.prod(grid)
    tensors = {name: torch.randn(2, N, HEADS, HEAD_DIM, dtype=dtype, device=DEVICE) for name in ("q", "k", "v", "dout")}
    tensors[where][1, token, 1, 3] = value
    got = run("triton", grid, window, *tensors.values())
    want = run("torch", grid, window, *(t.cpu().double() for t in tensors.values()))

    poisoned_window = next(ids for ids in (window_token_indices(i, grid, window) for i in range(N)) if token in ids)
    allowed = torch.zeros(2, N, HEADS, dtype=torch.bool)
    allowed[1, poisoned_window, 1] = True
    any_fault = False
    for name, g, w in zip(("out", "dq", "dk", "dv"), got, want):
        bad, bad_ref = nonfinite_rows(g).cpu(), nonfinite_rows(w)
        assert not (bad_ref & ~allowed).any(), f"{name}: the reference itself spreads the fault (test setup)"
        assert torch.equal(bad, bad_ref), (
            f"{name}: non-finite rows {bad.nonzero().tolist()} on triton, {bad_ref.nonzero().tolist()} on torch")
        any_fault |= bool(bad.any())
        finite = ~bad_ref
        error = (g.cpu().double()[finite] - w[finite]).abs().max().item()
        bound = TOLERANCE[torch.float32] * max(1.0, w[finite].abs().max().item())
        if dtype == torch.float16:  # fp16 inputs and outputs: a few units of fp16 rounding
            bound = 4 * torch.finfo(dtype).eps * max(1.0, w[finite].abs().max().item())
        assert error <= bound, f"{name}: finite rows differ by {error:.3e} > {bound:.3e}"
    assert any_fault, "the poisoned value reached no output: the case tests nothing"


@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
@pytest.mark.parametrize("where", ["q", "k", "v", "dout"])
@pytest.mark.parametrize("grid,window,token,is_packed", CASES)
def test_nonfinite_stays_in_its_window(grid, window, token, is_packed, where, value, poison_empty):
    assert packed(window, torch.float32) == is_packed
    check_confined(grid, window, token, where, value, torch.float32)


@pytest.mark.parametrize("where", ["q", "k", "v", "dout"])
def test_nonfinite_stays_in_its_window_fp16(where, poison_empty):
    assert packed((2, 3, 4), torch.float16)
    check_confined((4, 5, 6), (2, 3, 4), 37, where, float("nan"), torch.float16)


def test_row_with_all_scores_minus_inf_is_nan_like_softmax(poison_empty):
    """q = +inf against keys whose matching component is negative: every score of the row is -inf.
    softmax (and the torch backend) gives NaN there, not 0; the other windows of the tile stay exact."""
    grid, window = (1, 2, 8), (1, 1, 2)
    assert packed(window, torch.float32)
    q, k, v, dout = (torch.randn(1, 16, 1, HEAD_DIM, device=DEVICE) for _ in range(4))
    k[0, 4:6, 0, 0] = -k[0, 4:6, 0, 0].abs() - 0.1
    q[0, 4, 0, 0] = float("inf")
    got = run("triton", grid, window, q, k, v, dout)
    want = run("torch", grid, window, *(t.cpu().double() for t in (q, k, v, dout)))
    assert nonfinite_rows(want[0])[0, 4, 0] and torch.isnan(got[0][0, 4, 0]).all()
    for name, g, w in zip(("out", "dq", "dk", "dv"), got, want):
        assert torch.equal(nonfinite_rows(g).cpu(), nonfinite_rows(w)), name
