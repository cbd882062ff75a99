"""Exact attention cost of the ops, counted in attended (query, key) pairs.

One formula serves the FLOP counter registered on the ops (`logo_attn.ops`), the benchmarks and the
analytic tables, so the three can never disagree; attended pairs of windowed attention come from
`logo_attn.geometry.attended_pairs`. Convention (PyTorch's `FlopCounterMode`, which
counts `scaled_dot_product_attention` the same way): a forward pass does two matmuls per pair,
q.k and p.v, each 2*d FLOPs (one multiply-add = 2 FLOPs); the backward pass does five (recompute
q.k, then dO.v, p^T.dO, dS.k and dS^T.q), i.e. 2.5x the forward. Pooling, softmax and scaling are
not counted, as PyTorch does not count them either.

The second half gives the attended pairs of every attention scheme the paper compares (full,
divided, spatial-only, LOGO), exactly (border windows, prefix tokens), next to the paper's own
expressions; `attention_macs` converts pairs to the MACs that vision papers report as "FLOPs".
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from .geometry import attended_pairs, clip_window, window_count

FORWARD_MATMULS = 2
BACKWARD_MATMULS = 5


def attention_flops(pairs: int, batch: int, heads: int, head_dim: int, *, backward: bool = False) -> int:
    """FLOPs of softmax attention over `pairs` query-key pairs for `batch * heads` independent maps."""
    matmuls = BACKWARD_MATMULS if backward else FORWARD_MATMULS
    return matmuls * 2 * head_dim * pairs * batch * heads


# --------------------------------------------------------------------------------------------------
# Attention schemes compared in the paper (Fig. 1, eq. 9), counted in attended pairs per (batch, head).
#
# N = F*H*W grid tokens, P prefix (CLS) tokens, M = ceil(F/f)*ceil(H/h)*ceil(W/w) pooled windows.
# Prefix tokens follow TimeSformer: they skip temporal attention and join every frame's spatial
# attention (one copy per frame); in LOGO they skip local attention and are keys and queries of the
# global step (`logo_attn.LocalGlobalAttention`).
# --------------------------------------------------------------------------------------------------

SCHEMES = ("full", "divided", "spatial", "logo")


def full_attention_pairs(grid: Sequence[int], prefix: int = 0) -> int:
    """Full space-time attention: every token (prefix included) attends every token, (N + P)^2."""
    return (math.prod(grid) + prefix) ** 2


def spatial_attention_pairs(grid: Sequence[int], prefix: int = 0) -> int:
    """Spatial-only attention: each frame's H*W tokens plus the prefix attend each other, F * (HW + P)^2."""
    frames, height, width = grid
    return frames * (height * width + prefix) ** 2


def divided_attention_pairs(grid: Sequence[int], prefix: int = 0) -> int:
    """TimeSformer's divided space-time attention: temporal (each location over the F frames, N * F)
    followed by spatial attention (`spatial_attention_pairs`)."""
    return math.prod(grid) * grid[0] + spatial_attention_pairs(grid, prefix)


def logo_attention_pairs(grid: Sequence[int], window: Sequence[int], prefix: int = 0) -> int:
    """LOGO: local attention inside windows (border windows exact, a window larger than the grid
    clipped) plus global attention of all N + P tokens over the M pooled windows and the P prefix tokens."""
    window = clip_window(grid, window)
    return attended_pairs(grid, window) + (math.prod(grid) + prefix) * (window_count(grid, window) + prefix)


def attention_pairs(scheme: str, grid: Sequence[int], window: Sequence[int] | None = None, prefix: int = 0) -> int:
    """Exact attended pairs per (batch, head) of `scheme` in `SCHEMES`; `window` is used by "logo" only."""
    if scheme == "logo":
        if window is None:
            raise ValueError("attention_pairs: scheme 'logo' needs a window")
        return logo_attention_pairs(grid, window, prefix)
    formulas = {"full": full_attention_pairs, "divided": divided_attention_pairs, "spatial": spatial_attention_pairs}
    if scheme not in formulas:
        raise ValueError(f"attention_pairs: scheme must be one of {SCHEMES}, got {scheme!r}")
    return formulas[scheme](grid, prefix)


def paper_attention_pairs(scheme: str, grid: Sequence[int], window: Sequence[int] | None = None) -> float:
    """The paper's complexity expressions (Fig. 1, eqs. 2, 8, 9), no prefix token, windows assumed to divide
    the grid: full (FHW)^2, divided (HW)^2 F + HW F^2, spatial F (HW)^2, LOGO FHW fhw + (FHW)^2 / fhw.

    They equal `attention_pairs` whenever the window divides the grid and there is no prefix token.
    """
    frames, height, width = grid
    tokens, area = frames * height * width, height * width
    if scheme == "full":
        return float(tokens**2)
    if scheme == "divided":
        return float(area**2 * frames + area * frames**2)
    if scheme == "spatial":
        return float(frames * area**2)
    if scheme == "logo":
        if window is None:
            raise ValueError("paper_attention_pairs: scheme 'logo' needs a window")
        volume = math.prod(window)
        return tokens * volume + tokens**2 / volume
    raise ValueError(f"paper_attention_pairs: scheme must be one of {SCHEMES}, got {scheme!r}")


def attention_macs(pairs: int, dim: int, batch: int = 1) -> int:
    """Multiply-accumulates of softmax attention over `pairs` pairs at width dim = heads * head_dim, forward.

    The convention of vision papers' "FLOPs" tables: q.k and p.v cost head_dim MACs each per pair and
    head; FLOPs in the strict sense (`attention_flops`, FlopCounterMode) are 2 x MACs.
    """
    return FORWARD_MATMULS * dim * pairs * batch
