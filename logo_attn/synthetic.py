"""Synthetic clips whose class can only be told from the order of the frames.

A square circles around the centre of the frame, visiting its four quadrants in turn (top-left,
top-right, bottom-right, bottom-left for clockwise), on a noisy background. Four classes:

    0 clockwise, fast (a quarter turn every frame)       1 counter-clockwise, fast
    2 clockwise, slow (a quarter turn every two frames)  3 counter-clockwise, slow

The starting quadrant, the phase of the slow turns, the square's colour and a small per-frame jitter
are random. With ``num_frames`` a multiple of 4, every clip of every class shows the square exactly
``num_frames / 4`` times in each quadrant, so a single frame, and even the unordered set of frames,
has the same distribution whatever the class: a model that ignores time (``attention="spatial"``:
attention within frames, then a temporal mean) is at chance (25%), and one that compares frames
can reach 100%. At the default 32 x 32 pixels the ResNet trunk makes a 2 x 2 token grid per frame,
one token per quadrant, so the motion shows at the level of tokens.

Clips are a pure function of (seed, index): a split is reproducible, and splits with different
seeds are independent draws.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import Dataset

__all__ = ["CirclingSquare"]

# Quadrants in clockwise order: (row, column) of the quadrant.
_QUADRANTS = ((0, 0), (0, 1), (1, 1), (1, 0))


class CirclingSquare(Dataset):
    """``length`` clips, each ``(num_frames, 3, size, size)`` float32, and the class (0-3).

    Args:
        length: clips in the split.
        num_frames: frames per clip, a multiple of 4 (so every quadrant is shown equally often).
        size: frame height and width in pixels (even).
        square: side of the square in pixels, at most ``size // 2``.
        jitter: the square's centre moves by up to this many pixels around its quadrant's centre,
            independently in every frame.
        noise: standard deviation of the Gaussian background noise, independent per pixel and frame.
        seed: split seed; clip ``i`` comes from the generator seeded with ``seed * 1_000_003 + i``.
    """

    class_names = ("cw-fast", "ccw-fast", "cw-slow", "ccw-slow")
    num_classes = 4

    def __init__(self, length: int, num_frames: int = 8, size: int = 32, square: int = 8, jitter: int = 2,
                 noise: float = 0.3, seed: int = 0) -> None:
        if length < 1:
            raise ValueError(f"length must be >= 1, got {length}")
        if num_frames < 4 or num_frames % 4:
            raise ValueError(f"num_frames must be a positive multiple of 4, got {num_frames}")
        if size < 4 or size % 2:
            raise ValueError(f"size must be even and >= 4, got {size}")
        if not 1 <= square <= size // 2:
            raise ValueError(f"square must be in [1, size // 2 = {size // 2}], got {square}")
        if not 0 <= jitter <= (size // 2 - square) // 2:
            raise ValueError(f"jitter must be in [0, {(size // 2 - square) // 2}] so the square stays in its quadrant, got {jitter}")
        self.length, self.num_frames, self.size = length, num_frames, size
        self.square, self.jitter, self.noise, self.seed = square, jitter, noise, seed
        self.labels = [int(torch.randint(4, (), generator=self._generator(i))) for i in range(length)]

    def __len__(self) -> int:
        return self.length

    def _generator(self, index: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 1_000_003 + index)

    def quadrant_sequence(self, label: int, start: int, phase: int) -> list[int]:
        """Clockwise quadrant index (0-3) of the square in each frame."""
        direction = 1 if label % 2 == 0 else -1
        hold = 1 if label < 2 else 2  # frames per quadrant
        return [(start + direction * ((t + phase) // hold)) % 4 for t in range(self.num_frames)]

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} clips")
        g = self._generator(index)
        label = int(torch.randint(4, (), generator=g))  # the draw that made self.labels[index]
        start = int(torch.randint(4, (), generator=g))
        phase = int(torch.randint(2, (), generator=g))
        color = 0.75 + 0.5 * torch.rand(3, 1, 1, generator=g)
        T, S, half = self.num_frames, self.size, self.size // 2
        shifts = torch.randint(-self.jitter, self.jitter + 1, (T, 2), generator=g).tolist()
        clip = self.noise * torch.randn(T, 3, S, S, generator=g)
        corner = (half - self.square) // 2  # square's offset inside its quadrant when centred
        for t, q in enumerate(self.quadrant_sequence(label, start, phase)):
            row, col = _QUADRANTS[q]
            top = row * half + corner + shifts[t][0]
            left = col * half + corner + shifts[t][1]
            clip[t, :, top:top + self.square, left:left + self.square] += color
        return clip, label
