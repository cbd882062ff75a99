"""Where a window's tokens live in the (B, F*H*W, ...) layout: shared by local attention and pooling.

Windows are numbered in row-major (F, H, W) order, like the reference. Along an axis of length G
with window w and offset o = (w - shift) % w, window c covers [max(0, c*w - o), min(G, (c+1)*w - o))
(logo_attn/geometry.py): with a shift, a leading partial window comes first and the border windows
are clipped. Inside a window the tokens are numbered compactly over the window's own extent (a
border window of 2 x 7 x 3 tokens has slots 0..41), so a clipped window needs no padding slots in
the middle and fewer tiles at the end.

Small windows are packed: a program can own a *group* of WINDOWS_PER_GROUP consecutive windows,
each given SLOTS_PER_WINDOW (a power of two) slots of one tile, with a same-window mask in the
scores. With one window per group the slots are the window's tokens directly.
"""

import triton
import triton.language as tl


@triton.jit
def _axis_segment(cell, size, window, offset):
    """Start and length of window `cell` along one axis (length <= 0 past the last window)."""
    start = cell * window - offset
    lo = tl.maximum(start, 0)
    return lo, tl.minimum(start + window, size) - lo


@triton.jit
def window_geometry(window, windows_h, windows_w, F, H, W, f, h, w, off_t, off_y, off_x):
    """Origin, (h, w) extent and token count of `window` (scalar or tensor); count <= 0 past the last window."""
    t0, extent_t = _axis_segment(window // (windows_h * windows_w), F, f, off_t)
    y0, extent_h = _axis_segment((window // windows_w) % windows_h, H, h, off_y)
    x0, extent_w = _axis_segment(window % windows_w, W, w, off_x)
    return t0, y0, x0, extent_h, extent_w, extent_t * extent_h * extent_w


@triton.jit
def bias_offset(window, t, y, x, windows_h, windows_w, off_t, off_y, off_x, stride_bt, stride_by, stride_bx):
    """A slot's bias coordinate: its (t, y, x) relative to the window's origin shifted by the part of
    the nominal window that lies before the grid (the shift's offset, for a leading partial window
    only), times the bias's strides. Differences of these are a pair's offset (a table's entry);
    with strides (h*w, w, 1) the value is the slot's index in a dense (heads, T, T) bias."""
    lead_t = tl.where(window // (windows_h * windows_w) == 0, off_t, 0)
    lead_y = tl.where((window // windows_w) % windows_h == 0, off_y, 0)
    lead_x = tl.where(window % windows_w == 0, off_x, 0)
    return (t + lead_t) * stride_bt + (y + lead_y) * stride_by + (x + lead_x) * stride_bx


@triton.jit
def slot_coordinates(slot, extent_h, extent_w):
    """(t, y, x) of `slot` relative to its window's origin (row-major over the window's own extent)."""
    plane = extent_h * extent_w
    rest = slot % plane
    return slot // plane, rest // extent_w, rest % extent_w


@triton.jit
def window_tokens(slot, t0, y0, x0, extent_h, extent_w, H, W):
    """Grid token index of `slot` inside a window."""
    t, y, x = slot_coordinates(slot, extent_h, extent_w)
    return ((t0 + t) * H + y0 + y) * W + x0 + x


@triton.jit
def group_tokens(slots, group, windows_h, windows_w, F, H, W, f, h, w, off_t, off_y, off_x,
                 stride_bt, stride_by, stride_bx, WINDOWS_PER_GROUP: tl.constexpr, SLOTS_PER_WINDOW: tl.constexpr):
    """Token index, validity, window id and bias-table offset of `slots` of window group `group`.

    The bias offset is `bias_offset`: a pair's table entry is the centre plus (query offset - key
    offset), as Δ = query - key is the same in window and grid coordinates; a dense bias's slot.
    """
    if WINDOWS_PER_GROUP == 1:
        window = group
        slot = slots
    else:
        window = group * WINDOWS_PER_GROUP + slots // SLOTS_PER_WINDOW
        slot = slots % SLOTS_PER_WINDOW
    t0, y0, x0, extent_h, extent_w, count = window_geometry(window, windows_h, windows_w, F, H, W, f, h, w,
                                                            off_t, off_y, off_x)
    t, y, x = slot_coordinates(slot, extent_h, extent_w)
    tokens = ((t0 + t) * H + y0 + y) * W + x0 + x
    rel = bias_offset(window, t, y, x, windows_h, windows_w, off_t, off_y, off_x, stride_bt, stride_by, stride_bx)
    return tokens, slot < count, window, rel


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
