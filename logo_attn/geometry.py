"""Window geometry of an F x H x W token grid: the one definition every part of logo_attn shares.

Torch-free on purpose (plain ints only): the reference, the ops, the FLOP formulas and the Triton
launchers all import it, and the kernels may import nothing else of the package.

Along one axis of length ``G`` with window ``w`` (already clipped to ``G``) and shift ``s``
(``0 <= s < w``), the window boundaries are the cuts ``s, s + w, s + 2w, ...``: with
``offset = (w - s) % w`` the coordinate ``t`` lies in window ``(t + offset) // w``, window ``c``
covers ``[max(0, c*w - offset), min(G, (c + 1)*w - offset))``, and there are
``ceil((G + offset) / w)`` windows. With ``s = 0`` these are the plain windows ``t // w`` (the last
one smaller when ``w`` does not divide ``G``); with ``s > 0`` a leading partial window ``[0, s)``
comes first. On a grid divisible by the window this is exactly Swin's SW-MSA (cyclic shift by
``-s`` plus its region mask) without any roll or mask. Windows are numbered in row-major (F, H, W)
order and the tokens of a grid in row-major (F, H, W) order.
"""

from __future__ import annotations

from collections.abc import Sequence

Triple = tuple[int, int, int]
NO_SHIFT: Triple = (0, 0, 0)


def clip_window(grid: Sequence[int], window: Sequence[int]) -> Triple:
    """A window larger than the grid is clipped to it, axis by axis."""
    return tuple(min(w, g) for w, g in zip(window, grid))  # no int(): torch.compile passes SymInts


def clip_shift(grid: Sequence[int], window: Sequence[int], shift: Sequence[int]) -> Triple:
    """The shift an axis actually uses: 0 where the window covers the whole axis (as Swin does).

    `window` is the window before clipping; `shift` must already satisfy 0 <= shift < window.
    """
    return tuple(0 if w >= g else s for g, w, s in zip(grid, window, shift))


def axis_offset(window: int, shift: int) -> int:
    """How far the first window starts before coordinate 0: (w - s) % w."""
    return (window - shift) % window


def axis_windows(size: int, window: int, shift: int = 0) -> int:
    """Windows along one axis, the partial ones at either end included."""
    return -(-(size + axis_offset(window, shift)) // window)


def num_windows(grid: Sequence[int], window: Sequence[int], shift: Sequence[int] = NO_SHIFT) -> Triple:
    """Windows along (F, H, W) for a clipped window and a shift."""
    return tuple(axis_windows(int(g), int(w), int(s)) for g, w, s in zip(grid, window, shift))


def window_count(grid: Sequence[int], window: Sequence[int], shift: Sequence[int] = NO_SHIFT) -> int:
    """M: the number of windows (border and leading partial windows included)."""
    nf, nh, nw = num_windows(grid, window, shift)
    return nf * nh * nw


def axis_segment(index: int, size: int, window: int, shift: int = 0) -> tuple[int, int]:
    """[start, stop) of window `index` along an axis of length `size`, clipped to the axis."""
    start = index * window - axis_offset(window, shift)
    return max(0, start), min(size, start + window)


def axis_segment_lengths(size: int, window: int, shift: int = 0) -> list[int]:
    """Lengths of every window along one axis, in order."""
    return [stop - start for start, stop in
            (axis_segment(i, size, window, shift) for i in range(axis_windows(size, window, shift)))]


def attended_pairs(grid: Sequence[int], window: Sequence[int], shift: Sequence[int] = NO_SHIFT) -> int:
    """Attended (query, key) pairs of windowed attention over one (batch, head): sum over windows of
    tokens^2. A window's token count is the product of its axis lengths, so the sum factorises over
    the axes; border and leading partial windows are counted exactly."""
    pairs = 1
    for g, w, s in zip(grid, window, shift):
        pairs *= sum(length * length for length in axis_segment_lengths(int(g), int(w), int(s)))
    return pairs


def bias_table_shape(window: Sequence[int]) -> Triple:
    """(2f-1, 2h-1, 2w-1): the relative-position offsets a window's pairs can have, per axis."""
    return tuple(2 * int(w) - 1 for w in window)
