"""Where the frames of a time-sharded grid live: torch-free arithmetic on frame ranges.

A grid of F frames cut along time into windows of f frames is split over R ranks at window
boundaries: rank r owns the frames ``[start_r, stop_r)``, every cut a multiple of f. Every rank
owns at least one whole window, and the trailing partial window (``F % f`` frames) belongs to the
last rank, so a trailing partial window too small to be a rank of its own joins the rank before it.

Shifted windows (temporal shift ``s``, cuts at ``s, s + f, ...``) straddle the cuts by ``s``
frames. Around a shifted block each rank hands its first ``s`` frames to the previous rank, so
rank r computes on its *shifted domain* ``[start_r + s, stop_r + s)`` (rank 0 from 0, the last rank
up to F): every shifted window lies inside exactly one domain. Inside its domain a rank runs the
unchanged op with its *local shift*: ``s`` on rank 0 (its domain starts at frame 0, before the
first cut), 0 elsewhere (a domain other than rank 0's starts on a cut).
"""

from __future__ import annotations

from collections.abc import Sequence

Range = tuple[int, int]


def split_frames(frames: int, window: int, ranks: int) -> list[Range]:
    """Frame ranges of `ranks` ranks over `frames` frames with windows of `window` frames: the
    whole windows spread as evenly as possible (the first ranks take one more), the trailing partial
    window with the last rank."""
    whole = frames // window
    if ranks < 1 or whole < ranks:
        raise ValueError(f"time sharding: {frames} frames hold {whole} whole window(s) of {window} frames, fewer than "
                         f"the {ranks} ranks; every rank needs at least one whole window (fewer ranks or a smaller "
                         "temporal window)")
    base, extra = divmod(whole, ranks)
    counts = [(base + (r < extra)) * window for r in range(ranks)]
    counts[-1] += frames % window
    return ranges_of(counts)


def ranges_of(counts: Sequence[int]) -> list[Range]:
    """Consecutive [start, stop) ranges of the given lengths, starting at 0."""
    ranges, start = [], 0
    for count in counts:
        ranges.append((start, start + count))
        start += count
    return ranges


def check_frames(counts: Sequence[int], frames: int, window: int) -> list[Range]:
    """The ranges of explicitly given per-rank frame counts, refused unless they sum to `frames`,
    every cut lies on a window boundary and every rank owns at least one whole window."""
    counts = [int(c) for c in counts]
    if sum(counts) != frames:
        raise ValueError(f"time sharding: frames {counts} sum to {sum(counts)}, but the grid has {frames} frames")
    for rank, count in enumerate(counts):
        last = rank == len(counts) - 1
        if count < window or (not last and count % window):
            raise ValueError(
                f"time sharding: rank {rank} would own {count} frames; with windows of {window} frames every rank "
                f"needs at least one whole window and every cut must be a multiple of {window} (frames {counts})")
    return ranges_of(counts)


def shifted_domain(ranges: Sequence[Range], rank: int, shift: int) -> Range:
    """[start, stop) of the frames `rank` computes on around a block with temporal shift `shift`."""
    start, stop = ranges[rank]
    last = len(ranges) - 1
    return (start + shift if rank else 0), (stop + shift if rank < last else stop)


def local_shift(rank: int, shift: int) -> int:
    """The temporal shift of the op a rank runs on its shifted domain."""
    return shift if rank == 0 else 0


def window_range(frame_range: Range, window: int) -> Range:
    """[first, stop) of the (unshifted) temporal windows inside a frame range that starts on a cut."""
    start, stop = frame_range
    return start // window, -(-stop // window)
