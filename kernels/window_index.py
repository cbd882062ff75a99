"""Where a window's tokens live in the (B, F*H*W, ...) layout: shared by local attention and pooling.

Windows are numbered in row-major (F, H, W) order, like the reference. Inside a window the tokens
are numbered compactly over the window's own extent (a border window of 2 x 7 x 3 tokens has slots
0..41), so a border window needs no padding slots in the middle and fewer tiles at the end.

Small windows are packed: a program can own a *group* of WINDOWS_PER_GROUP consecutive windows,
each given SLOTS_PER_WINDOW (a power of two) slots of one tile, with a same-window mask in the
scores. With one window per group the slots are the window's tokens directly.
"""

import triton
import triton.language as tl


@triton.jit
def window_geometry(window, windows_h, windows_w, F, H, W, f, h, w):
    """Origin, (h, w) extent and token count of `window` (scalar or tensor); count <= 0 past the last window."""
    t0 = (window // (windows_h * windows_w)) * f
    y0 = ((window // windows_w) % windows_h) * h
    x0 = (window % windows_w) * w
    extent_h = tl.minimum(H - y0, h)
    extent_w = tl.minimum(W - x0, w)
    count = tl.minimum(F - t0, f) * extent_h * extent_w
    return t0, y0, x0, extent_h, extent_w, count


@triton.jit
def window_tokens(slot, t0, y0, x0, extent_h, extent_w, H, W):
    """Grid token index of `slot` inside a window (row-major over the window's own extent)."""
    plane = extent_h * extent_w
    rest = slot % plane
    return ((t0 + slot // plane) * H + y0 + rest // extent_w) * W + x0 + rest % extent_w


@triton.jit
def group_tokens(slots, group, windows_h, windows_w, F, H, W, f, h, w,
                 WINDOWS_PER_GROUP: tl.constexpr, SLOTS_PER_WINDOW: tl.constexpr):
    """Token index, validity and window id of `slots` of window group `group`."""
    if WINDOWS_PER_GROUP == 1:
        window = group
        slot = slots
    else:
        window = group * WINDOWS_PER_GROUP + slots // SLOTS_PER_WINDOW
        slot = slots % SLOTS_PER_WINDOW
    t0, y0, x0, extent_h, extent_w, count = window_geometry(window, windows_h, windows_w, F, H, W, f, h, w)
    tokens = window_tokens(slot, t0, y0, x0, extent_h, extent_w, H, W)
    return tokens, slot < count, window


@triton.jit
def pair_mask(q_valid, k_valid, q_win, k_win, WINDOWS_PER_GROUP: tl.constexpr):
    """(queries, keys) mask of the pairs that attend: both slots hold a token of the same window.

    A group of one window needs no window comparison, and its window id is a scalar (which newer
    Tritons, 3.9 on, refuse to index with [:, None]).
    """
    valid = q_valid[:, None] & k_valid[None, :]
    if WINDOWS_PER_GROUP > 1:
        valid = valid & (q_win[:, None] == k_win[None, :])
    return valid


@triton.jit
def only_window(valid, win, own, ONE_WINDOW: tl.constexpr):
    """`valid` restricted to the slots of window `own` of a packed group when ONE_WINDOW."""
    if ONE_WINDOW:
        valid = valid & (win == own)
    return valid
