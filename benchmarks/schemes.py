"""The attention schemes of the paper's Fig. 1 as layers of one width, built from the real ops.

Each layer maps ``(B, P + F*H*W, dim)`` to the same shape: pre-norm attention with its residual and
no MLP (the MLP costs the same in every scheme). Full, spatial-only and divided attention use
``F.scaled_dot_product_attention``; LOGO is `logo_attn.LocalGlobalAttention` on the logo_attn ops.

- full: one multi-head attention over all P + N tokens (ViT / "MSA").
- spatial: attention inside each frame; the P prefix tokens are copied into every frame and their
  outputs averaged over frames (TimeSformer's treatment of CLS in spatial attention).
- divided: TimeSformer's divided space-time attention: temporal attention of each spatial location
  over the F frames (prefix tokens skip it), then spatial attention as above. TimeSformer's extra
  ``temporal_fc`` projection is left out, as in `logo_attn.model.DividedAttentionBlock`, so that
  "divided" means one thing in this project (and costs N * dim^2 MACs less than TimeSformer's).
- logo: local window attention then global attention over the pooled windows (and prefix tokens).

`projection_macs` gives each layer's linear-layer MACs (qkv, q, kv and output projections),
the part of a layer's cost that the attention formulas of `logo_attn.flops` leave out.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from logo_attn import LocalGlobalAttention
from logo_attn.flops import SCHEMES, pooled_windows
from logo_attn.model import SelfAttention  # the baselines' attention of LOGOFormer's skeleton


class FullAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, num_prefix_tokens: int = 0) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, num_heads)

    def forward(self, x: Tensor, grid: Sequence[int]) -> Tensor:
        return x + self.attn(self.norm(x))


class SpatialAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, num_prefix_tokens: int = 0) -> None:
        super().__init__()
        self.num_prefix_tokens = num_prefix_tokens
        self.norm = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, num_heads)

    def forward(self, x: Tensor, grid: Sequence[int]) -> Tensor:
        P, (frames, height, width) = self.num_prefix_tokens, grid
        B, _, C = x.shape
        prefix = x[:, :P].repeat_interleave(frames, dim=0)  # (B*F, P, C): a copy per frame
        per_frame = with_prefix(prefix, x[:, P:].reshape(B * frames, height * width, C))
        out = self.attn(self.norm(per_frame))
        out_prefix = out[:, :P].unflatten(0, (B, frames)).mean(1)
        return x + with_prefix(out_prefix, out[:, P:].reshape(B, -1, C))


class DividedAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, num_prefix_tokens: int = 0) -> None:
        super().__init__()
        self.num_prefix_tokens = num_prefix_tokens
        self.temporal_norm = nn.LayerNorm(dim)
        self.temporal_attn = SelfAttention(dim, num_heads)
        self.spatial = SpatialAttention(dim, num_heads, num_prefix_tokens)

    def forward(self, x: Tensor, grid: Sequence[int]) -> Tensor:
        P, (frames, height, width) = self.num_prefix_tokens, grid
        B, _, C = x.shape
        x_grid = x[:, P:]
        # (B, F, HW, C) -> (B*HW, F, C): one sequence of F frames per spatial location
        series = x_grid.reshape(B, frames, height * width, C).transpose(1, 2).reshape(-1, frames, C)
        temporal = self.temporal_attn(self.temporal_norm(series))
        temporal = temporal.reshape(B, height * width, frames, C).transpose(1, 2).reshape(B, -1, C)
        return self.spatial(with_prefix(x[:, :P], x_grid + temporal), grid)


def with_prefix(prefix: Tensor, rest: Tensor) -> Tensor:
    """[prefix ; rest] along tokens, without a copy when there is no prefix."""
    return rest if prefix.shape[1] == 0 else torch.cat([prefix, rest], dim=1)


def build(scheme: str, dim: int, num_heads: int, window: Sequence[int] | None = None, num_prefix_tokens: int = 0,
          backend: str = "auto") -> nn.Module:
    """The layer of `scheme` in `logo_attn.flops.SCHEMES`; `window` and `backend` matter for "logo" only."""
    if scheme == "logo":
        return LocalGlobalAttention(dim, num_heads, window, num_prefix_tokens=num_prefix_tokens, backend=backend)
    layers = {"full": FullAttention, "spatial": SpatialAttention, "divided": DividedAttention}
    if scheme not in layers:
        raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
    return layers[scheme](dim, num_heads, num_prefix_tokens)


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
        keys = pooled_windows(grid, window) + prefix
        # local qkv + proj over grid tokens; global q and proj over all tokens, kv over pooled windows + prefix
        return (4 * tokens + 2 * (tokens + prefix) + 2 * keys) * dim * dim
    if scheme not in rows:
        raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
    return rows[scheme] * dim * dim
