"""logo_attn/geometry.py against brute force from token coordinates: window counts, the tokens of
each window and the attended pairs, with shifts (leading and trailing partial windows) and clipping."""

import itertools

import pytest

from logo_attn import geometry
from dense_reference import same_window_mask

# grid, window (clipped), shift
CASES = [
    ((4, 6, 6), (2, 3, 3), (0, 0, 0)),
    ((5, 7, 4), (2, 3, 3), (1, 2, 0)),
    ((3, 2, 5), (3, 2, 2), (0, 0, 1)),
    ((1, 5, 5), (1, 2, 2), (0, 1, 1)),
    ((6, 9, 9), (4, 7, 7), (2, 3, 3)),
]


def brute_window_ids(grid, window, shift):
    """Each token's window as a tuple of per-axis window ids, from the definition."""
    return [tuple((c + (w - s) % w) // w for c, w, s in zip(point, window, shift))
            for point in itertools.product(*(range(g) for g in grid))]


@pytest.mark.parametrize("grid,window,shift", CASES)
def test_counts_tokens_and_pairs_match_brute_force(grid, window, shift):
    ids = brute_window_ids(grid, window, shift)
    assert geometry.window_count(grid, window, shift) == len(set(ids))
    for axis in range(3):
        assert geometry.num_windows(grid, window, shift)[axis] == len({i[axis] for i in ids})
    # window c of each axis covers exactly the coordinates whose window id is c
    for axis, (g, w, s) in enumerate(zip(grid, window, shift)):
        for c in range(geometry.axis_windows(g, w, s)):
            start, stop = geometry.axis_segment(c, g, w, s)
            assert list(range(start, stop)) == [t for t in range(g) if (t + (w - s) % w) // w == c]
    assert geometry.attended_pairs(grid, window, shift) == int(same_window_mask(grid, window, shift).sum())


def test_shift_starts_windows_at_the_cut():
    """Axis of 7 with window 3 and shift 2: cuts at 2 and 5, so windows [0,2), [2,5), [5,7)."""
    assert geometry.axis_segment_lengths(7, 3, 2) == [2, 3, 2]
    assert [geometry.axis_segment(c, 7, 3, 2) for c in range(3)] == [(0, 2), (2, 5), (5, 7)]
    assert geometry.axis_segment_lengths(7, 3, 0) == [3, 3, 1]


def test_clip_window_and_shift():
    assert geometry.clip_window((2, 9, 4), (4, 7, 7)) == (2, 7, 4)
    # a window covering the whole axis has no shift there, as in Swin
    assert geometry.clip_shift((2, 9, 4), (4, 7, 4), (3, 3, 2)) == (0, 3, 0)


def test_paper_default_pairs():
    grid, window = (5, 7, 4), (2, 3, 3)
    assert geometry.attended_pairs(grid, window) == (2 * 4 + 1) * (2 * 9 + 1) * (9 + 1)
    assert geometry.bias_table_shape((2, 7, 7)) == (3, 13, 13)
