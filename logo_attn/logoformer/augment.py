"""Clip augmentation with torch ops only (torchvision cannot be a dependency here).

A clip is a ``(T, 3, H, W)`` tensor; every frame of a clip gets the same crop and the same flip, as
Former-DFER's group transforms do. Training: random resized crop (torchvision's sampling rule:
area fraction in ``scale``, log-uniform aspect ratio in ``ratio``, 10 tries, then a centre crop) to
``size x size`` and a horizontal flip with probability 1/2. Evaluation: resize the shorter side to
``size`` and centre-crop. Resizing is bilinear with antialiasing (PIL's and torchvision's default).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "random_resized_crop_box", "train_transform", "eval_transform", "normalize"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def random_resized_crop_box(height: int, width: int, scale: Sequence[float] = (0.08, 1.0),
                            ratio: Sequence[float] = (3 / 4, 4 / 3),
                            generator: torch.Generator | None = None) -> tuple[int, int, int, int]:
    """(top, left, crop_height, crop_width) of a random crop covering a `scale` fraction of the frame."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * _uniform(scale[0], scale[1], generator)
        aspect = math.exp(_uniform(*log_ratio, generator))
        w = round(math.sqrt(target_area * aspect))
        h = round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(height - h + 1, (), generator=generator))
            left = int(torch.randint(width - w + 1, (), generator=generator))
            return top, left, h, w
    # Fallback: the largest centre crop whose aspect ratio lies in `ratio`.
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        h, w = height, round(height * max(ratio))
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


def _resize(clip: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(clip.shape[-2:]) == size:
        return clip
    return F.interpolate(clip, size=size, mode="bilinear", align_corners=False, antialias=True)


def _as_float(clip: Tensor) -> Tensor:
    if clip.dim() != 4 or clip.shape[1] != 3:
        raise ValueError(f"a clip must be (T, 3, H, W), got shape {tuple(clip.shape)}")
    return clip.float().div_(255) if clip.dtype == torch.uint8 else clip.float()


def train_transform(clip: Tensor, size: int, scale: Sequence[float] = (0.08, 1.0),
                    ratio: Sequence[float] = (3 / 4, 4 / 3), flip_p: float = 0.5,
                    generator: torch.Generator | None = None) -> Tensor:
    """Random resized crop to ``size x size`` and random horizontal flip, the same for all frames.

    ``clip``: ``(T, 3, H, W)`` uint8 (read as [0, 255]) or float; returns float32 in [0, 1] for uint8.
    """
    clip = _as_float(clip)
    top, left, h, w = random_resized_crop_box(clip.shape[-2], clip.shape[-1], scale, ratio, generator)
    clip = _resize(clip[..., top:top + h, left:left + w], (size, size))
    if float(torch.rand((), generator=generator)) < flip_p:
        clip = clip.flip(-1)
    return clip


def eval_transform(clip: Tensor, size: int) -> Tensor:
    """Resize the shorter side to ``size`` and centre-crop ``size x size``."""
    clip = _as_float(clip)
    height, width = clip.shape[-2:]
    short = min(height, width)
    resized = (round(height * size / short), round(width * size / short))
    clip = _resize(clip, resized)
    top, left = (resized[0] - size) // 2, (resized[1] - size) // 2
    return clip[..., top:top + size, left:left + size]


def normalize(clip: Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> Tensor:
    """Per-channel ``(x - mean) / std`` of a ``(T, 3, H, W)`` float clip."""
    mean_t = torch.tensor(mean, dtype=clip.dtype).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=clip.dtype).view(1, 3, 1, 1)
    return (clip - mean_t) / std_t
