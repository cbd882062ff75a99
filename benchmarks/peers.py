"""What a user would write instead of logo_attn's ops: the peers every speed claim is a ratio against.

All take and return the ops' layout, ``(B, N, heads, head_dim)`` inputs of any strides and a
contiguous output, so every layout copy a user would pay is inside the timed call:

- local attention: `partition_sdpa` (pad + window partition copies + ``F.scaled_dot_product_attention``
  + un-partition), `FlexLocalAttention` (compiled FlexAttention with the block mask built once and
  cached), `masked_full_sdpa` (SDPA over all N tokens with a dense N x N window mask);
- Swin's W-MSA / SW-MSA with relative-position bias: `monai_eager_window_attention` (what MONAI's
  SwinTransformerBlock computes in training: pad, roll, partition, matmul + gathered bias + region
  mask, softmax, matmul, un-partition, roll back) and `FlexLocalAttention` with the shift and a
  score_mod that adds the bias;
- global attention: `sdpa_global` (SDPA on transposed views);
- window pooling: `avg_pool3d_pool` (permute to (B, C, F, H, W) + ``F.avg_pool3d``),
  `view_mean` (``x.view(...).mean(dim=(2, 4, 6))``, divisible grids only) and `partition_mean`
  (window partition + mean);
- the layer: `SDPALocalGlobalAttention`, `LocalGlobalAttention` with those three peers in place of the
  ops, same parameters (pooling in float32 where avg_pool3d has no kernel of the layer's dtype).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from logo_attn import LocalGlobalAttention
from logo_attn.geometry import NO_SHIFT, axis_offset, clip_window, num_windows
from logo_attn.reference import (relative_position_index, table_window, window_partition, window_token_mask,
                                 window_unpartition)

Grid = Sequence[int]


def window_ids(grid: Grid, window: Grid, device: torch.device | str | None = None, shift: Grid = NO_SHIFT) -> Tensor:
    """(N,) int64: the row-major index of the (possibly shifted) window each grid token falls in."""
    t, y, x = ((torch.arange(g, device=device) + axis_offset(w, s)) // w for g, w, s in zip(grid, window, shift))
    _, nh, nw = num_windows(grid, window, shift)
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


# Above this many tokens the block mask is built by the compiled create_block_mask, as PyTorch
# advises: the eager one evaluates the mask on all N x N pairs at once (6 GB at Swin's 25k tokens).
EAGER_BLOCK_MASK_TOKENS = 4096


class FlexLocalAttention:
    """Local attention with compiled FlexAttention: the (shifted) windows as a block mask, built on the
    first call (so that building the benchmark cases, as pytest's collection does, stays cheap) and
    reused, and an optional relative-position bias table added by a score_mod.

    `window` is clipped and `shift` zeroed on clipped axes, as the op passes them to its backends;
    `bias` is the op's (heads, 2f'-1, 2h'-1, 2w'-1) table. FlexAttention has no backward on CPU
    (PyTorch raises NotImplementedError); `has_backward` says so.
    """

    def __init__(self, grid: Grid, window: Grid, device: torch.device, shift: Grid = NO_SHIFT,
                 bias: Tensor | None = None) -> None:
        self.grid, self.window, self.shift, self.device = tuple(grid), tuple(window), tuple(shift), device
        self.has_backward = torch.device(device).type != "cpu"
        if bias is not None and not self.has_backward:
            bias = bias.detach()  # a forward that records no graph, which is all CPU FlexAttention runs
        self.score_mod = None if bias is None else _relative_position_score_mod(self.grid, bias)
        self.attend = _compiled_flex_attention()

    @functools.cached_property
    def block_mask(self):
        from torch.nn.attention.flex_attention import create_block_mask

        ids = window_ids(self.grid, self.window, self.device, self.shift)
        tokens = ids.numel()

        def same_window(b, h, q_idx, kv_idx):
            return ids[q_idx] == ids[kv_idx]

        build = create_block_mask if tokens <= EAGER_BLOCK_MASK_TOKENS else torch.compile(create_block_mask)
        return build(same_window, None, None, tokens, tokens, device=self.device)

    def __call__(self, q: Tensor, k: Tensor, v: Tensor, scale: float | None = None) -> Tensor:
        out = self.attend(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), score_mod=self.score_mod,
                          block_mask=self.block_mask, scale=scale)
        return out.transpose(1, 2).contiguous()


def _relative_position_score_mod(grid: tuple, table: Tensor):
    """A score_mod adding ``table[h, dt + f'-1, dy + h'-1, dx + w'-1]`` for the (query - key) grid
    offset (dt, dy, dx). The offsets are clamped to the table: FlexAttention evaluates the score_mod
    on every pair of a partially masked block, and pairs of different windows, masked out after it,
    can lie further apart than the table reaches."""
    coords = [c.reshape(-1) for c in torch.meshgrid(*(torch.arange(g, device=table.device) for g in grid),
                                                     indexing="ij")]
    extents = table_window(table)
    # An axis whose window is 1 wide (the frame axis of a 2-D grid) always has offset 0: it indexes the
    # table with a constant, because Inductor's CPU FlexAttention template (2.13) fails to lower a
    # score_mod that reads the all-zero coordinates of such an axis ("All the buffers in the score and
    # mask subgraph should be in kernel_group.args.input_buffers").
    wide = [e > 1 for e in extents]

    def add_bias(score, b, h, q_idx, kv_idx):
        t, y, x = ((c[q_idx] - c[kv_idx] + e - 1).clamp(0, 2 * e - 2) if w else 0
                   for c, e, w in zip(coords, extents, wide))
        return score + table[h, t, y, x]

    return add_bias


# The value MONAI's compute_mask puts between tokens of different regions: exp(-100) vanishes in the softmax.
SWIN_MASK_VALUE = -100.0


def swin_padded(grid: Grid, window: Grid) -> tuple[int, int, int]:
    """The grid zero-padded at the end of each axis to whole windows, as Swin pads it."""
    return tuple(-(-g // w) * w for g, w in zip(grid, window))


@functools.lru_cache(maxsize=16)
def _swin_region_mask(grid: tuple, window: tuple, shift: tuple, device: torch.device) -> Tensor | None:
    """(M, T, T) float32 additive mask over the windows of the padded, rolled grid: 0 between tokens
    of one region, -100 across regions; None for W-MSA on a grid the window divides (no mask).

    The regions are MONAI's compute_mask's: along each axis of padded length G', the rolled
    coordinates [0, G'-w), [G'-w, G'-s), [G'-s, G') (one region without a shift). Unlike MONAI, the
    padding tokens are a region of their own, so that no real token attends them (MONAI lets them,
    where the window does not divide the grid); that is what the op computes."""
    padded = swin_padded(grid, window)
    if not any(shift) and padded == grid:
        return None
    region = torch.zeros(padded, dtype=torch.long, device=device)
    padding = torch.zeros(padded, dtype=torch.bool, device=device)
    for axis, (g, size, w, s) in enumerate(zip(grid, padded, window, shift)):
        along = torch.zeros(size, dtype=torch.long, device=device)
        if s:
            along[size - w:size - s], along[size - s:] = 1, 2
        is_padding = torch.roll(torch.arange(size, device=device) >= g, -s)  # rolled as the tokens are
        view = [1, 1, 1]
        view[axis] = size
        region = region * 3 + along.view(view)
        padding = padding | is_padding.view(view)
    ids = window_partition((region * 2 + padding).reshape(1, -1), padded, window)[0]  # (M, T)
    same = ids[:, :, None] == ids[:, None, :]
    return torch.zeros(same.shape, device=device).masked_fill(~same, SWIN_MASK_VALUE)


@functools.lru_cache(maxsize=16)
def _swin_bias_index(window: tuple, table: tuple, device: torch.device) -> Tensor:
    """(T*T,) index of each slot pair's row in a (P, heads) table: Swin's relative_position_index."""
    return relative_position_index(window, table, device).flatten()


def monai_eager_window_attention(q: Tensor, k: Tensor, v: Tensor, grid: Grid, window: Grid, shift: Grid,
                                 bias: Tensor, scale: float | None = None) -> Tensor:
    """Swin's W-MSA (shift 0) or SW-MSA with relative-position bias, computed the way MONAI's
    SwinTransformerBlock and WindowAttention compute it in training (their eager path):

    zero-pad the grid to whole windows, roll by -shift, partition into windows, ``(q * scale) @ k^T``,
    add the bias gathered from the table per slot pair, add the region mask of shifted windows,
    softmax, ``@ v``, un-partition, roll back, crop the padding.

    Takes the op's operands: q, k, v (B, N, heads, d) of any strides, the clipped window, the shift
    zeroed on clipped axes, and the op's (heads, 2f'-1, 2h'-1, 2w'-1) table (MONAI's (P, heads)
    parameter transposed, a view); returns a contiguous (B, N, heads, d). Where the window does not
    divide the grid it masks the padding (see `_swin_region_mask`), so W-MSA on such a grid adds a
    mask as SW-MSA does. The mask and the bias index are built once and cached, which favours this
    peer: MONAI rebuilds the mask at every forward of a stage.
    """
    grid, window, shift = tuple(grid), tuple(window), tuple(shift)
    B, N, heads, d = q.shape
    scale = d ** -0.5 if scale is None else scale
    padded = swin_padded(grid, window)
    pad = []
    for g, size in zip(reversed(grid), reversed(padded)):
        pad += [0, size - g]

    def to_windows(x: Tensor) -> Tensor:  # (B, N, heads, d) -> (B*M, heads, T, d)
        x = F.pad(x.reshape(B, *grid, heads * d), [0, 0, *pad])
        if any(shift):
            x = torch.roll(x, [-s for s in shift], dims=(1, 2, 3))
        windows = window_partition(x.flatten(1, 3), padded, window)  # (B, M, T, C)
        return windows.flatten(0, 1).unflatten(-1, (heads, d)).transpose(1, 2)

    qw, kw, vw = (to_windows(t) for t in (q, k, v))
    windows, tokens = qw.shape[0] // B, qw.shape[2]
    attn = (qw * scale) @ kw.transpose(-2, -1)
    index = _swin_bias_index(window, table_window(bias), q.device)
    relative = bias.flatten(1).t()[index].reshape(tokens, tokens, heads).permute(2, 0, 1).contiguous()
    attn = attn + relative.unsqueeze(0)
    mask = _swin_region_mask(grid, window, shift, q.device)
    if mask is not None:
        attn = attn.view(B, windows, heads, tokens, tokens) + mask.unsqueeze(1).unsqueeze(0)
        attn = attn.view(-1, heads, tokens, tokens)
    attn = attn.softmax(dim=-1).to(vw.dtype)
    out = (attn @ vw).transpose(1, 2).reshape(B, windows, tokens, heads * d)
    out = window_unpartition(out, padded, window).reshape(B, *padded, heads * d)
    if any(shift):
        out = torch.roll(out, list(shift), dims=(1, 2, 3))
    return out[:, :grid[0], :grid[1], :grid[2]].reshape(B, N, heads, d).contiguous()


def sdpa_global(q: Tensor, k: Tensor, v: Tensor, scale: float | None = None) -> Tensor:
    """Global attention as SDPA on (B, heads, N, d) transposed views, back to the op's contiguous layout."""
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), scale=scale)
    return out.transpose(1, 2).contiguous()


@functools.cache
def avg_pool3d_problem(device_type: str, dtype: torch.dtype) -> str | None:
    """Why F.avg_pool3d has no kernel for `dtype` on this device type (PyTorch 2.13 has no bfloat16 one
    on CPU), or None: asked of PyTorch once, on one element."""
    try:
        F.avg_pool3d(torch.ones(1, 1, 1, 1, 1, device=device_type, dtype=dtype), 1)
    except (NotImplementedError, RuntimeError) as error:
        return f"F.avg_pool3d has no {str(dtype).removeprefix('torch.')} kernel on {device_type} ({type(error).__name__})"
    return None


def avg_pool3d_pool(x: Tensor, grid: Grid, window: Grid) -> Tensor:
    """Window mean as (B, N, C) -> (B, C, F, H, W) copy + avg_pool3d; border windows average their own
    tokens. Raises where avg_pool3d has no kernel for x's dtype (`avg_pool3d_problem`)."""
    B, _, C = x.shape
    volume = x.transpose(1, 2).reshape(B, C, *grid)
    pooled = F.avg_pool3d(volume, tuple(window), tuple(window), ceil_mode=True, count_include_pad=False)
    return pooled.flatten(2).transpose(1, 2).contiguous()


def view_mean(x: Tensor, grid: Grid, window: Grid) -> Tensor:
    """Window mean as a user writes it when the window divides the grid: a view that splits every axis
    into (windows, window) and a mean over the three window axes. ValueError otherwise."""
    (F_, H, W), (f, h, w) = tuple(grid), tuple(window)
    if F_ % f or H % h or W % w:
        raise ValueError(f"view_mean needs a window that divides the grid, got grid {grid} and window {window}")
    B, _, C = x.shape
    blocks = x.view(B, F_ // f, f, H // h, h, W // w, w, C).mean(dim=(2, 4, 6))
    return blocks.reshape(B, -1, C)


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
        window = clip_window(grid, self.window)
        if avg_pool3d_problem(y_grid.device.type, y_grid.dtype):
            # what a user's layer must do there: pool in float32 (the casts are in the timed call)
            return avg_pool3d_pool(y_grid.float(), grid, window).to(y_grid.dtype)
        return avg_pool3d_pool(y_grid, grid, window)
