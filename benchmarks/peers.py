"""What a user would write instead of logo_attn's ops: the peers every speed claim is a ratio against.

All take and return the ops' layout, ``(B, N, heads, head_dim)`` inputs of any strides and a
contiguous output, so every layout copy a user would pay is inside the timed call:

- local attention: `partition_sdpa` (pad + window partition copies + ``F.scaled_dot_product_attention``
  + un-partition), `FlexLocalAttention` (compiled FlexAttention with the block mask built once and
  cached), `masked_full_sdpa` (SDPA over all N tokens with a dense N x N window mask);
- global attention: `sdpa_global` (SDPA on transposed views);
- window pooling: `avg_pool3d_pool` (permute to (B, C, F, H, W) + ``F.avg_pool3d``) and
  `partition_mean` (window partition + mean);
- the layer: `SDPALocalGlobalAttention`, `LocalGlobalAttention` with those three peers in place of the
  ops, same parameters.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from logo_attn import LocalGlobalAttention
from logo_attn.geometry import clip_window
from logo_attn.reference import window_partition, window_token_mask, window_unpartition

Grid = Sequence[int]


def window_ids(grid: Grid, window: Grid, device: torch.device | str | None = None) -> Tensor:
    """(N,) int64: the row-major index of the window each grid token falls in."""
    (Fg, Hg, Wg), (f, h, w) = grid, window
    t = torch.arange(Fg, device=device) // f
    y = torch.arange(Hg, device=device) // h
    x = torch.arange(Wg, device=device) // w
    nh, nw = -(-Hg // h), -(-Wg // w)
    return ((t[:, None, None] * nh + y[None, :, None]) * nw + x[None, None, :]).reshape(-1)


@functools.lru_cache(maxsize=16)
def _padding_key_mask(grid: tuple, window: tuple, device: torch.device) -> Tensor | None:
    """(M, 1, 1, T) bool over partitioned keys, True for real tokens; None when the window divides the grid."""
    if all(g % w == 0 for g, w in zip(grid, window)):
        return None
    return window_token_mask(grid, window, device)[:, None, None, :]


def partition_sdpa(q: Tensor, k: Tensor, v: Tensor, grid: Grid, window: Grid, scale: float | None = None) -> Tensor:
    """Local attention as zero-pad + window partition + SDPA (+ a key mask for border windows) + un-partition."""
    grid, window = tuple(grid), tuple(window)
    B, _, heads, d = q.shape
    # (B, N, heads, d) -> (B, M, T, heads, d) -> (B*M, heads, T, d): the partition copies
    qw, kw, vw = (window_partition(t, grid, window).transpose(2, 3).flatten(0, 1) for t in (q, k, v))
    mask = _padding_key_mask(grid, window, q.device)
    if mask is not None:
        mask = mask.unsqueeze(0).expand(B, -1, -1, -1, -1).flatten(0, 1)  # (B*M, 1, 1, T)
    out = F.scaled_dot_product_attention(qw, kw, vw, attn_mask=mask, scale=scale)
    out = out.unflatten(0, (B, -1)).transpose(2, 3)  # (B, M, T, heads, d)
    return window_unpartition(out, grid, window)


@functools.lru_cache(maxsize=16)
def _same_window_mask(grid: tuple, window: tuple, device: torch.device) -> Tensor:
    ids = window_ids(grid, window, device)
    return ids[:, None] == ids[None, :]


def masked_full_sdpa(q: Tensor, k: Tensor, v: Tensor, grid: Grid, window: Grid, scale: float | None = None) -> Tensor:
    """Local attention as full attention over all N tokens with a dense N x N same-window mask (cached)."""
    mask = _same_window_mask(tuple(grid), tuple(window), q.device)
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask,
                                         scale=scale)
    return out.transpose(1, 2).contiguous()


@functools.cache
def _compiled_flex_attention():
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


class FlexLocalAttention:
    """Local attention with compiled FlexAttention; the block mask is built on the first call (so that
    building the benchmark cases, as pytest's collection does, stays cheap) and reused.

    FlexAttention has no backward on CPU (PyTorch raises NotImplementedError); `has_backward` says so.
    """

    def __init__(self, grid: Grid, window: Grid, device: torch.device) -> None:
        self.grid, self.window, self.device = tuple(grid), tuple(window), device
        self.has_backward = torch.device(device).type != "cpu"
        self.attend = _compiled_flex_attention()

    @functools.cached_property
    def block_mask(self):
        from torch.nn.attention.flex_attention import create_block_mask

        ids = window_ids(self.grid, self.window, self.device)
        tokens = ids.numel()

        def same_window(b, h, q_idx, kv_idx):
            return ids[q_idx] == ids[kv_idx]

        return create_block_mask(same_window, None, None, tokens, tokens, device=self.device)

    def __call__(self, q: Tensor, k: Tensor, v: Tensor, scale: float | None = None) -> Tensor:
        out = self.attend(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), block_mask=self.block_mask,
                          scale=scale)
        return out.transpose(1, 2).contiguous()


def sdpa_global(q: Tensor, k: Tensor, v: Tensor, scale: float | None = None) -> Tensor:
    """Global attention as SDPA on (B, heads, N, d) transposed views, back to the op's contiguous layout."""
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), scale=scale)
    return out.transpose(1, 2).contiguous()


def avg_pool3d_pool(x: Tensor, grid: Grid, window: Grid) -> Tensor:
    """Window mean as (B, N, C) -> (B, C, F, H, W) copy + avg_pool3d; border windows average their own tokens."""
    B, _, C = x.shape
    volume = x.transpose(1, 2).reshape(B, C, *grid)
    pooled = F.avg_pool3d(volume, tuple(window), tuple(window), ceil_mode=True, count_include_pad=False)
    return pooled.flatten(2).transpose(1, 2).contiguous()


def partition_mean(x: Tensor, grid: Grid, window: Grid) -> Tensor:
    """Window mean as zero-padded window partition, sum over each window, divided by its real token count."""
    grid, window = tuple(grid), tuple(window)
    counts = window_token_mask(grid, window, x.device).sum(-1, keepdim=True)  # (M, 1)
    return window_partition(x, grid, window).sum(2) / counts.to(x.dtype)


class SDPALocalGlobalAttention(LocalGlobalAttention):
    """`LocalGlobalAttention` with the ops replaced by the peers: partition + SDPA, avg_pool3d, SDPA.

    Same parameters and maths, so a state dict moves between the two and their outputs must agree.
    """

    def _local(self, q: Tensor, k: Tensor, v: Tensor, grid: tuple[int, int, int]) -> Tensor:
        return partition_sdpa(q, k, v, grid, clip_window(grid, self.window))

    def _global(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        return sdpa_global(q, k, v)

    def _pool(self, y_grid: Tensor, grid: tuple[int, int, int]) -> Tensor:
        if self.pool_conv is not None:
            return super()._pool(y_grid, grid)
        return avg_pool3d_pool(y_grid, grid, clip_window(grid, self.window))
