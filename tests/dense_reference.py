"""Local attention written the most direct way, for tests: full attention over all N tokens with a
same-window mask and the relative-position bias built from token coordinates.

Independent of the window partition code of logo_attn.reference and of every kernel: window ids
come from the definition (coordinate t lies in window (t + (w - s) % w) // w along each axis), the
bias of pair (i, j) is table[head, t_i - t_j + f - 1, y_i - y_j + h - 1, x_i - x_j + w - 1] for a
relative-position table, dense[head, slot_i, slot_j] for a dense (heads, T, T) bias, a token's slot
being its coordinates modulo the window after the shift's offset ((t + (w - s) % w) % w per axis: its
place in its nominal window), row major. Memory is N^2, so it is for small grids only. Gradients (bias
included) come from autograd.
"""

from __future__ import annotations

import torch


def coordinates(grid):
    """(t, y, x) of every grid token, each (N,), in row-major (F, H, W) order."""
    t, y, x = torch.meshgrid(*(torch.arange(g) for g in grid), indexing="ij")
    return t.flatten(), y.flatten(), x.flatten()


def same_window_mask(grid, window, shift=(0, 0, 0)):
    """(N, N) bool: token i may attend token j iff both lie in the same window. `window` is clipped
    to the grid and `shift` is 0 on clipped axes (what the op passes its backends)."""
    mask = torch.ones((), dtype=torch.bool)
    for c, w, s in zip(coordinates(grid), window, shift):
        ids = (c + (w - s) % w) // w
        mask = mask & (ids[:, None] == ids[None, :])
    return mask


def relative_bias(table, grid):
    """(heads, N, N) bias of every pair from a (heads, 2f-1, 2h-1, 2w-1) table (Swin's convention)."""
    centre = [(n - 1) // 2 for n in table.shape[1:]]
    index = [(c[:, None] - c[None, :] + o) for c, o in zip(coordinates(grid), centre)]
    valid = [(i >= 0) & (i < n) for i, n in zip(index, table.shape[1:])]
    inside = valid[0] & valid[1] & valid[2]
    gathered = table[:, *(i.clamp(0, n - 1) for i, n in zip(index, table.shape[1:]))]
    # pairs further apart than the table reaches are never in one window: their bias is never used
    return gathered.masked_fill(~inside, 0.0)


def window_slots(grid, window, shift=(0, 0, 0)):
    """(N,) long: each token's slot in its nominal window, row-major over the (clipped) window."""
    slot = torch.zeros((), dtype=torch.long)
    for c, w, s in zip(coordinates(grid), window, shift):
        slot = slot * w + (c + (w - s) % w) % w
    return slot


def slot_pair_bias(dense, grid, window, shift=(0, 0, 0)):
    """(heads, N, N) bias of every pair from a dense (heads, T, T) slot-pair bias."""
    slot = window_slots(grid, window, shift)
    return dense[:, slot[:, None], slot[None, :]]


def dense_local_attention(q, k, v, grid, window, shift=(0, 0, 0), bias=None, scale=None):
    """softmax(q k^T * scale + bias, same-window mask) v for q/k/v (B, N, heads, d)."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    scores = torch.einsum("bihd,bjhd->bhij", q, k) * scale
    if bias is not None:
        pair_bias = slot_pair_bias(bias, grid, window, shift) if bias.dim() == 3 else relative_bias(bias, grid)
        scores = scores + pair_bias.to(scores.dtype)
    scores = scores.masked_fill(~same_window_mask(grid, window, shift), float("-inf"))
    return torch.einsum("bhij,bjhd->bihd", scores.softmax(-1), v)
