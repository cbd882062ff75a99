"""The attention schemes LOGO attention is compared with (the paper's Fig. 1), as drop-in layers.

Every layer here, like `logo_attn.LocalGlobalAttention`, maps ``x`` of shape ``(B, P + F*H*W, dim)``
(P prefix tokens such as CLS, then the grid tokens in row-major (F, H, W) order) to the same shape
given ``grid = (F, H, W)``: pre-norm attention plus its residual, no MLP (the MLP costs the same in
every scheme; `logo_attn.layers.Block` adds it). They are the layers the LOGOFormer baselines train
and the layers the cost benchmark times, so "divided" means one thing everywhere.

- `FullAttention`: joint space-time attention of all P + N tokens (ViT's MSA).
- `SpatialAttention`: attention inside each frame; the prefix tokens are copied into every frame
  and their outputs averaged over frames (TimeSformer's treatment of CLS in spatial attention).
- `DividedAttention`: TimeSformer's divided space-time attention: temporal attention of each
  spatial location over its F frames (prefix tokens skip it), then `SpatialAttention`.
  TimeSformer's extra ``temporal_fc`` projection is left out (it costs N * dim^2 MACs and changes no
  attended pair).

All of them use ``F.scaled_dot_product_attention`` (`SelfAttention`), the PyTorch a user would write.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .checks import as_grid, check_heads, check_prefix_tokens

__all__ = ["SelfAttention", "FullAttention", "SpatialAttention", "DividedAttention", "with_prefix"]


class SelfAttention(nn.Module):
    """Multi-head softmax self-attention over the tokens of each sequence: (B, L, dim) -> (B, L, dim)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = False, attn_drop: float = 0.0) -> None:
        super().__init__()
        self.num_heads = check_heads(dim, num_heads)
        self.attn_drop = attn_drop
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        B, L, D = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.num_heads, D // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        return self.proj(out.transpose(1, 2).reshape(B, L, D))


def with_prefix(prefix: Tensor, rest: Tensor) -> Tensor:
    """[prefix ; rest] along tokens, without a copy when there is no prefix."""
    return rest if prefix.shape[1] == 0 else torch.cat([prefix, rest], dim=1)


class _Baseline(nn.Module):
    """Shared constructor arguments (timm's names) and the (x, grid) check of every baseline layer."""

    def __init__(self, dim: int, num_heads: int = 8, num_prefix_tokens: int = 0, qkv_bias: bool = False,
                 attn_drop: float = 0.0, proj_drop: float = 0.0) -> None:
        super().__init__()
        check_heads(dim, num_heads)
        self.dim = dim
        self.num_prefix_tokens = check_prefix_tokens(num_prefix_tokens)
        self.drop = nn.Dropout(proj_drop)

    def _grid(self, x: Tensor, grid: Sequence[int]) -> tuple[int, int, int]:
        grid = as_grid(grid)
        expected = self.num_prefix_tokens + grid[0] * grid[1] * grid[2]
        if x.dim() != 3 or x.shape[1] != expected or x.shape[2] != self.dim:
            raise ValueError(
                f"{type(self).__name__}: x must be (B, num_prefix_tokens + F*H*W, dim) = (B, {expected}, {self.dim}) "
                f"for grid {grid}, got shape {tuple(x.shape)}"
            )
        return grid


class _PreNormAttention(_Baseline):
    """A baseline made of one pre-norm `SelfAttention`: ``norm`` then ``attn``."""

    def __init__(self, dim: int, num_heads: int = 8, num_prefix_tokens: int = 0, qkv_bias: bool = False,
                 attn_drop: float = 0.0, proj_drop: float = 0.0) -> None:
        super().__init__(dim, num_heads, num_prefix_tokens, qkv_bias, attn_drop, proj_drop)
        self.norm = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, num_heads, qkv_bias, attn_drop)


class FullAttention(_PreNormAttention):
    """Joint space-time attention: every token (prefix included) attends every token."""

    def forward(self, x: Tensor, grid: Sequence[int]) -> Tensor:
        self._grid(x, grid)
        return x + self.drop(self.attn(self.norm(x)))


class SpatialAttention(_PreNormAttention):
    """Attention among the H*W tokens of each frame; prefix tokens join every frame (one copy each)
    and their outputs are averaged over the frames."""

    def forward(self, x: Tensor, grid: Sequence[int]) -> Tensor:
        P, (frames, height, width) = self.num_prefix_tokens, self._grid(x, grid)
        B, _, C = x.shape
        prefix = x[:, :P].repeat_interleave(frames, dim=0)  # (B*F, P, C): a copy per frame
        per_frame = with_prefix(prefix, x[:, P:].reshape(B * frames, height * width, C))
        out = self.drop(self.attn(self.norm(per_frame)))
        out_prefix = out[:, :P].unflatten(0, (B, frames)).mean(1)
        return x + with_prefix(out_prefix, out[:, P:].reshape(B, frames * height * width, C))


class DividedAttention(_Baseline):
    """TimeSformer's divided space-time attention: temporal attention of each spatial location over
    the F frames (prefix tokens skip it), then `SpatialAttention`; each with its residual."""

    def __init__(self, dim: int, num_heads: int = 8, num_prefix_tokens: int = 0, qkv_bias: bool = False,
                 attn_drop: float = 0.0, proj_drop: float = 0.0) -> None:
        super().__init__(dim, num_heads, num_prefix_tokens, qkv_bias, attn_drop, proj_drop)
        self.temporal_norm = nn.LayerNorm(dim)
        self.temporal_attn = SelfAttention(dim, num_heads, qkv_bias, attn_drop)
        self.spatial = SpatialAttention(dim, num_heads, num_prefix_tokens, qkv_bias, attn_drop, proj_drop)

    def forward(self, x: Tensor, grid: Sequence[int]) -> Tensor:
        P, (frames, height, width) = self.num_prefix_tokens, self._grid(x, grid)
        B, _, C = x.shape
        x_grid = x[:, P:]
        # (B, F, HW, C) -> (B*HW, F, C): one sequence of F frames per spatial location (no -1: B may be 0)
        series = x_grid.reshape(B, frames, height * width, C).transpose(1, 2).reshape(B * height * width, frames, C)
        temporal = self.drop(self.temporal_attn(self.temporal_norm(series)))
        temporal = temporal.reshape(B, height * width, frames, C).transpose(1, 2).reshape(B, frames * height * width, C)
        return self.spatial(with_prefix(x[:, :P], x_grid + temporal), grid)
