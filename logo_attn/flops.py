"""Exact attention cost of the ops, counted in attended (query, key) pairs.

One formula serves the FLOP counter registered on the ops (`logo_attn.ops`), the benchmarks and the
analytic tables, so the three can never disagree. Convention (PyTorch's `FlopCounterMode`, which
counts `scaled_dot_product_attention` the same way): a forward pass does two matmuls per pair,
q.k and p.v, each 2*d FLOPs (one multiply-add = 2 FLOPs); the backward pass does five (recompute
q.k, then dO.v, p^T.dO, dS.k and dS^T.q), i.e. 2.5x the forward. Pooling, softmax and scaling are
not counted, as PyTorch does not count them either.
"""

from __future__ import annotations

from collections.abc import Sequence

FORWARD_MATMULS = 2
BACKWARD_MATMULS = 5


def segment_square_sum(size: int, window: int) -> int:
    """Sum of squared segment lengths when `size` is cut into pieces of `window` (the last may be short)."""
    full, rest = divmod(size, window)
    return full * window * window + rest * rest


def local_attention_pairs(grid: Sequence[int], window: Sequence[int]) -> int:
    """Attended pairs of windowed attention over one (batch, head): sum over windows of tokens^2.

    A window's token count is the product of its per-axis lengths, so the sum over all windows
    factorises into a product over the three axes; border windows are counted exactly.
    """
    pairs = 1
    for size, win in zip(grid, window):
        pairs *= segment_square_sum(int(size), min(int(win), int(size)))
    return pairs


def attention_flops(pairs: int, batch: int, heads: int, head_dim: int, *, backward: bool = False) -> int:
    """FLOPs of softmax attention over `pairs` query-key pairs for `batch * heads` independent maps."""
    matmuls = BACKWARD_MATMULS if backward else FORWARD_MATMULS
    return matmuls * 2 * head_dim * pairs * batch * heads
