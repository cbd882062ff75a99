"""Synthetic clips whose class can only be told from the order of the frames: a turning colour wheel.

Each frame shows a wheel of four coloured quadrants (red, green, blue, yellow, clockwise from the
top left) on noise. From frame to frame the wheel turns by a quarter turn. Four classes:

    0 clockwise                        1 counter-clockwise
    2 clockwise, then back             3 counter-clockwise, then back
      (forward for the first half of the clip, backward for the second half)

The starting orientation is random, so each frame's orientation is uniform over the four whatever
the class, and every clip shows every orientation exactly ``num_frames / 4`` times: a single frame,
or the unordered set of frames, says nothing about the class. A model that ignores time
(``attention="spatial"``: attention within frames, then a temporal mean) stays at chance (25%); a model
that relates frames can reach 100%. At 32 x 32 pixels the ResNet trunk makes a 2 x 2 token grid per
frame, one token per quadrant, so the turn shows as each token's colour changing in a fixed cyclic
order (red -> yellow -> blue -> green under a clockwise turn, the reverse under a counter-clockwise one).

Clips are a pure function of (seed, epoch, index), so a split is reproducible and splits with
different seeds are independent draws.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import Dataset

__all__ = ["TurningWheel"]

# RGB of the wheel's colours, in clockwise order from the top-left quadrant at orientation 0.
COLOURS = torch.tensor([[1.0, 0.1, 0.1], [0.1, 1.0, 0.1], [0.1, 0.1, 1.0], [1.0, 1.0, 0.1]])
# (row, column) of the quadrants in clockwise order.
QUADRANTS = ((0, 0), (0, 1), (1, 1), (1, 0))


class TurningWheel(Dataset):
    """``length`` clips, each ``(num_frames, 3, size, size)`` float32, and the class (0-3).

    Args:
        length: clips in the split.
        num_frames: frames per clip, a multiple of 8 (so both halves of the "then back" classes make
            whole turns and every orientation is shown equally often).
        size: frame height and width in pixels (even).
        jitter: the wheel's centre moves by up to this many pixels, independently in every frame.
        noise: standard deviation of the Gaussian noise, independent per pixel and frame.
        seed: split seed; clip ``i`` of epoch ``e`` (see `set_epoch`) comes from a generator seeded with
            ``(seed * 1_000_003 + e) * 1_000_003 + i``.
    """

    class_names = ("cw", "ccw", "cw-back", "ccw-back")
    num_classes = 4

    def __init__(self, length: int, num_frames: int = 8, size: int = 32, jitter: int = 0,
                 noise: float = 0.1, seed: int = 0) -> None:
        if length < 1:
            raise ValueError(f"length must be >= 1, got {length}")
        if num_frames < 8 or num_frames % 8:
            raise ValueError(f"num_frames must be a positive multiple of 8, got {num_frames}")
        if size < 4 or size % 2:
            raise ValueError(f"size must be even and >= 4, got {size}")
        if not 0 <= jitter < size // 4:
            raise ValueError(f"jitter must be in [0, size // 4 = {size // 4}), got {jitter}")
        self.length, self.num_frames, self.size, self.jitter, self.noise, self.seed = (
            length, num_frames, size, jitter, noise, seed)
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Draw another set of clips (the training loop calls this every epoch, so the model never sees a
        clip twice and cannot memorise the noise); epoch 0 is the set the dataset starts with."""
        self.epoch = epoch
        self.labels = [int(torch.randint(4, (), generator=self._generator(i))) for i in range(self.length)]

    def __len__(self) -> int:
        return self.length

    def _generator(self, index: int) -> torch.Generator:
        return torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) * 1_000_003 + index)

    def orientations(self, label: int, start: int) -> list[int]:
        """Orientation (quarter turns clockwise, 0-3) of the wheel in each frame."""
        T, half = self.num_frames, self.num_frames // 2
        turns = [t if t < half else T - 2 - t for t in range(T)] if label >= 2 else list(range(T))
        sign = 1 if label % 2 == 0 else -1
        return [(start + sign * k) % 4 for k in turns]

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} clips")
        g = self._generator(index)
        label = int(torch.randint(4, (), generator=g))  # the draw that made self.labels[index]
        start = int(torch.randint(4, (), generator=g))
        T, S, half = self.num_frames, self.size, self.size // 2
        shifts = torch.randint(-self.jitter, self.jitter + 1, (T, 2), generator=g).tolist()
        clip = self.noise * torch.randn(T, 3, S, S, generator=g)
        for t, orientation in enumerate(self.orientations(label, start)):
            cy, cx = half + shifts[t][0], half + shifts[t][1]  # the wheel's centre in this frame
            for q, (row, col) in enumerate(QUADRANTS):
                rows = slice(0, cy) if row == 0 else slice(cy, S)
                cols = slice(0, cx) if col == 0 else slice(cx, S)
                # turning clockwise by one quarter moves the colour of quadrant q to quadrant q + 1
                clip[t, :, rows, cols] += COLOURS[(q - orientation) % 4][:, None, None]
        return clip, label
