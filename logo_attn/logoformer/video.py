"""Clips stored as video files, decoded with PyAV (``pip install "logo-attn[video]"``; its wheels bundle
FFmpeg, so no system library is needed).

A clip's frames are those of its first video stream in presentation order. `count_frames` counts
them from the container's packets, without decoding (one packet holds one frame: tested here for
H.264 in .mp4, FFV1 in .mkv and .avi, PNG in .avi); `read_frames` decodes from the start and keeps
the frames asked for, stopping at the last one, so memory holds only the sampled frames. A file
FFmpeg cannot open, one without video frames, and one whose frames stop decoding before the count
its packets promise (a truncated or damaged file) raise a `UsageError` naming the file.

Why PyAV and not torchcodec: torchcodec's wheels use the FFmpeg libraries of the system (4 to 9),
which pip cannot install, and the 0.17.0 wheel on PyPI also links CUDA 13's NVRTC, so beside the CPU
torch 2.13.0 it does not even load (tried); PyAV's wheels carry their own FFmpeg.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from .errors import UsageError
from .optional import require

# Containers of the clip datasets and of what cameras and converters write.
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv")


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


def _open(path: Path, where: str):
    av = require("av", "reading video clips")
    try:
        container = av.open(str(path))
    except av.error.EOFError:  # a container that ends before FFmpeg has found a frame to probe
        raise UsageError(f"video {path}{where} has no frames (an empty or truncated file?)") from None
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as error:
        raise UsageError(f"cannot read video {path}{where}: {_reason(error)}") from None
    if not container.streams.video:
        container.close()
        raise UsageError(f"video {path}{where} has no video stream")
    return av, container


def count_frames(path: Path, source: str = "") -> int:
    """Frames of the video at `path` (from its packets: no decoding); raises naming the file if none."""
    where = f" (listed in {source})" if source else ""
    av, container = _open(path, where)
    with container:
        try:
            count = sum(1 for packet in container.demux(container.streams.video[0]) if packet.size)
        except av.error.FFmpegError as error:
            raise UsageError(f"cannot read video {path}{where}: {_reason(error)}") from None
    if count == 0:
        raise UsageError(f"video {path}{where} has no frames (an empty or truncated file?)")
    return count


def read_frames(path: Path, indices: Sequence[int], source: str = "") -> Tensor:
    """Frames `indices` (0-based, any order, repeats allowed) of the video at `path` as ``(T, 3, H, W)``
    uint8 RGB; a frame of another size than the first one is scaled to it, as for frame folders."""
    where = f" (listed in {source})" if source else ""
    if not indices:
        raise ValueError("read_frames: indices must name at least one frame")
    wanted = set(indices)
    last = max(wanted)
    av, container = _open(path, where)
    found: dict[int, Tensor] = {}
    size = None
    decoded = 0
    with container:
        try:
            for frame in container.decode(container.streams.video[0]):
                if decoded in wanted:
                    size = size or (frame.width, frame.height)
                    rgb = frame.to_ndarray(format="rgb24", width=size[0], height=size[1])
                    found[decoded] = torch.from_numpy(rgb).permute(2, 0, 1)
                decoded += 1
                if decoded > last:
                    break
        except av.error.FFmpegError as error:
            raise UsageError(f"cannot decode video {path}{where} after {decoded} frames: {_reason(error)}") from None
    if decoded <= last:
        raise UsageError(f"video {path}{where} stops decoding after {decoded} frames, before frame {last + 1} "
                         "(a truncated or damaged file?)")
    return torch.stack([found[i] for i in indices])


def _reason(error: BaseException) -> str:
    return getattr(error, "strerror", None) or str(error) or type(error).__name__
