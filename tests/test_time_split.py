"""The frame split of context parallelism, without processes: for many (F, f, s_f, ranks) every
temporal window, shifted ones too, lies in exactly one rank's domain and is one of that rank's own
windows there, and the ranks' pooled windows concatenate to the one-process pooled order."""

import itertools

import pytest

from logo_attn.distributed import split
from logo_attn.geometry import axis_segment, axis_windows, num_windows

CASES = [(frames, f, ranks) for f in (1, 2, 3, 4) for ranks in (1, 2, 3, 4, 5) for frames in range(ranks * f, ranks * f + 2 * f + 2)]


def windows(size: int, window: int, shift: int) -> list[tuple[int, int]]:
    return [axis_segment(i, size, window, shift) for i in range(axis_windows(size, window, shift))]


@pytest.mark.parametrize("frames, f, ranks", CASES)
def test_split_partitions_the_frames_at_window_cuts(frames, f, ranks):
    ranges = split.split_frames(frames, f, ranks)
    assert len(ranges) == ranks and ranges[0][0] == 0 and ranges[-1][1] == frames
    for (a, b), (c, _) in zip(ranges, ranges[1:]):
        assert b == c and b % f == 0
    lengths = [b - a for a, b in ranges]
    assert min(lengths) >= f  # every rank a whole window; the partial one joined the last rank
    assert max(lengths[:-1] or [0]) - min(lengths[:-1] or [0]) <= f  # whole windows spread evenly


@pytest.mark.parametrize("frames, f, ranks", CASES)
def test_every_window_lies_in_exactly_one_domain(frames, f, ranks):
    ranges = split.split_frames(frames, f, ranks)
    for shift in range(f):
        domains = [split.shifted_domain(ranges, r, shift) for r in range(ranks)]
        assert [d[0] for d in domains[1:]] == [d[1] for d in domains[:-1]]  # the domains tile [0, F)
        assert domains[0][0] == 0 and domains[-1][1] == frames
        # the windows each rank computes: the op's windows on its domain with its local shift
        local = []
        for r, (start, stop) in enumerate(domains):
            local += [(start + a, start + b) for a, b in windows(stop - start, min(f, stop - start),
                                                                 split.local_shift(r, shift) if stop - start > f else 0)]
        global_windows = windows(frames, f, shift if frames > f else 0)
        assert sorted(local) == global_windows  # same members, each window once
        for lo, hi in global_windows:
            assert sum(start <= lo and hi <= stop for start, stop in domains) == 1


@pytest.mark.parametrize("frames, f, ranks", CASES)
def test_pooled_windows_concatenate_to_the_global_order(frames, f, ranks):
    ranges = split.split_frames(frames, f, ranks)
    height, width, window = 5, 3, (f, 2, 2)
    nf, nh, nw = num_windows((frames, height, width), window)
    order = []
    for start, stop in ranges:
        first, last = split.window_range((start, stop), f)
        local_nf = num_windows((stop - start, height, width), window)[0]
        assert last - first == local_nf
        for t, y, x in itertools.product(range(local_nf), range(nh), range(nw)):
            order.append(((first + t) * nh + y) * nw + x)  # a rank's local window index, globally
    assert order == list(range(nf * nh * nw))


def test_split_refusals():
    with pytest.raises(ValueError, match="every rank needs at least one whole window"):
        split.split_frames(5, 2, 3)
    with pytest.raises(ValueError, match="cut must be a multiple of 2"):
        split.check_frames([3, 5], 8, 2)
    with pytest.raises(ValueError, match="sum to 7"):
        split.check_frames([4, 3], 8, 2)
    with pytest.raises(ValueError, match="rank 1 would own 1 frames"):
        split.check_frames([6, 1], 7, 2)
    assert split.check_frames([4, 3], 7, 2) == [(0, 4), (4, 7)]
