"""The attention schemes of the paper's Fig. 1 as layers of one width: the library's own layers.

Full, spatial-only and divided attention are `logo_attn.baselines` (``F.scaled_dot_product_attention``),
LOGO is `logo_attn.LocalGlobalAttention` on the logo_attn ops: the very layers LOGOFormer and its
baselines train (`logo_attn.logoformer.model`), so the benchmark times what the model runs. Each maps
``(B, P + F*H*W, dim)`` to the same shape: pre-norm attention with its residual and no MLP (the MLP
costs the same in every scheme).

`projection_macs` gives each layer's linear-layer MACs (qkv, q, kv and output projections), the part
of a layer's cost that the attention formulas of `logo_attn.flops` leave out.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from logo_attn import DividedAttention, FullAttention, LocalGlobalAttention, SpatialAttention
from logo_attn.flops import SCHEMES
from logo_attn.geometry import clip_window, window_count

BASELINES = {"full": FullAttention, "spatial": SpatialAttention, "divided": DividedAttention}


def build(scheme: str, dim: int, num_heads: int, window: Sequence[int] | None = None, num_prefix_tokens: int = 0,
          backend: str = "auto") -> nn.Module:
    """The layer of `scheme` in `logo_attn.flops.SCHEMES`; `window` and `backend` matter for "logo" only."""
    if scheme == "logo":
        return LocalGlobalAttention(dim, num_heads, window, num_prefix_tokens=num_prefix_tokens, backend=backend)
    if scheme not in BASELINES:
        raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
    return BASELINES[scheme](dim, num_heads, num_prefix_tokens)


def projection_macs(scheme: str, grid: Sequence[int], window: Sequence[int] | None, dim: int, prefix: int = 0) -> int:
    """MACs of the linear layers of `build(scheme, ...)` for one clip (biases not counted, as FlopCounterMode)."""
    frames, height, width = grid
    tokens = frames * height * width
    rows = {  # tokens passing through a dim x dim projection, per projection
        "full": 4 * (tokens + prefix),                   # qkv (3) + proj over all tokens
        "spatial": 4 * (tokens + frames * prefix),       # qkv + proj over every frame with its prefix copy
        "divided": 4 * tokens + 4 * (tokens + frames * prefix),  # temporal qkv + proj, then spatial
    }
    if scheme == "logo":
        keys = window_count(grid, clip_window(grid, window)) + prefix
        # local qkv + proj over grid tokens; global q and proj over all tokens, kv over pooled windows + prefix
        return (4 * tokens + 2 * (tokens + prefix) + 2 * keys) * dim * dim
    if scheme not in rows:
        raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
    return rows[scheme] * dim * dim
