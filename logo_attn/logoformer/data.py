"""Clip datasets on disk (DFEW, FERV39K, annotation lists) with Former-DFER's frame sampling.

A clip is a folder of frame images (``.jpg``, ``.jpeg``, ``.png``, ``.bmp``, read in natural order:
``frame_2`` before ``frame_10``; needs Pillow, the ``train`` extra) or a video file (``.mp4``, ``.avi``,
``.mkv``... of `video.VIDEO_SUFFIXES`, its frames in presentation order; needs PyAV, the ``video``
extra). Either way a clip yields ``segments * duration`` frames (8 x 2 = 16 by
default) as Former-DFER samples them: the clip is cut into ``segments`` equal parts and from each part
``duration`` consecutive frames are taken, starting at a random offset for training and at the part's
centre for evaluation. A clip too short for that is read from its start (a random frame when
training) and loops around. Frames go through `logo_attn.augment` and ImageNet normalisation, giving
``(segments * duration, 3, image_size, image_size)`` float32.

Layouts:

- DFEW: ``<root>/EmoLabel_DataSplit/{train,test}(single-labeled)/set_<fold>.csv`` with a header
  ``video_name,label`` (labels 1-7: happy, sad, neutral, angry, surprise, disgust, fear); clip
  ``video_name`` is ``<root>/<frames_dir>/<video_name zero-padded to 5 digits>`` (or unpadded): a
  frame folder, or that name plus a video suffix. ``frames_dir`` defaults to ``Clip/clip_224x224``
  (the face-aligned frames the paper trains on); ``Clip/original`` holds DFEW's ``.mp4`` clips.
- FERV39K: ``<root>/4_setups/All_scenes/{train,test}_All.csv``, one ``<scene>/<emotion>/<clip> <Emotion>``
  per line (a header line is skipped); the clip is ``<root>/<frames_dir>/<scene>/<emotion>/<clip>``,
  a frame folder or that name plus a video suffix. ``frames_dir`` defaults to ``2_ClipsforFaceCrop``
  (face crops); ``0_7_LabelClips`` holds FERV39K's ``.mp4`` clips.
- Annotation list (the common DFER format): one ``path num_frames label`` per line, ``path`` (a
  frame folder or a video file) absolute or relative to ``root``, labels counted from ``label_base``
  (1 by default, as in the DFEW split files). ``num_frames`` is informational: the clip's actual
  frames are used.

Broken data raise errors that name the file: a missing split file or clip, an empty clip, an
unreadable frame or video, or a label out of range (with the annotation file and line).
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset

from . import augment, video
from .errors import UsageError
from .optional import require

__all__ = [
    "EMOTIONS",
    "ClipRecord",
    "FrameClipDataset",
    "list_frames",
    "load_frames",
    "read_annotation_list",
    "read_dfew",
    "read_ferv39k",
    "sample_indices",
    "split_train_val",
]

# Class order of DFEW's labels 1..7; FERV39K's emotion names map onto the same indices.
EMOTIONS = ("happy", "sad", "neutral", "angry", "surprise", "disgust", "fear")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
DFEW_FRAMES_DIR = "Clip/clip_224x224"
FERV39K_FRAMES_DIR = "2_ClipsforFaceCrop"


@dataclass(frozen=True)
class ClipRecord:
    """One clip: its frame folder or video file, class index (from 0) and where it was listed ("file:line")."""

    path: Path
    label: int
    source: str


# --------------------------------------------------------------------------------------------------
# Frames
# --------------------------------------------------------------------------------------------------


def _natural_key(name: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def list_frames(folder: str | Path, source: str = "") -> list[Path]:
    """Image files of a clip folder in natural order; raises naming the folder (and `source`) if none."""
    folder = Path(folder)
    where = f" (listed in {source})" if source else ""
    if not folder.is_dir():
        raise FileNotFoundError(f"clip folder {folder} does not exist{where}")
    names = [e.name for e in os.scandir(folder) if e.is_file() and e.name.lower().endswith(IMAGE_SUFFIXES)]
    if not names:
        raise UsageError(f"clip folder {folder} has no frames ({', '.join(IMAGE_SUFFIXES)} files){where}")
    return [folder / name for name in sorted(names, key=_natural_key)]


def load_frames(paths: Sequence[Path]) -> Tensor:
    """Read frames as ``(T, 3, H, W)`` uint8 RGB; frames of another size than the first are resized to it."""
    require("PIL", "reading frame images")
    from PIL import Image, UnidentifiedImageError

    frames = []
    for path in paths:
        try:
            with Image.open(path) as image:
                image = image.convert("RGB")
                if frames and image.size != frames[0].size:
                    image = image.resize(frames[0].size, Image.BILINEAR)
                frames.append(image)
        except (UnidentifiedImageError, OSError) as error:
            raise UsageError(f"cannot read frame {path}: {error}") from None
    width, height = frames[0].size
    data = torch.stack([torch.frombuffer(bytearray(f.tobytes()), dtype=torch.uint8) for f in frames])
    return data.view(len(frames), height, width, 3).permute(0, 3, 1, 2)


def sample_indices(num_frames: int, segments: int = 8, duration: int = 2, train: bool = False,
                   generator: torch.Generator | None = None) -> list[int]:
    """Frame indices of one clip by Former-DFER's rule: `segments` parts, `duration` consecutive frames each.

    With ``span = num_frames - duration + 1`` possible starts: if ``span >= segments``, part k covers
    starts ``[k*span/segments, (k+1)*span/segments)`` and training draws a start uniformly among its
    first ``span // segments`` (Former-DFER's offsets), evaluation takes its centre. Otherwise the clip
    is too short: ``segments * duration`` frames are read in order from frame 0 (a random frame when
    training), looping past the end.
    """
    if num_frames < 1 or segments < 1 or duration < 1:
        raise UsageError(f"num_frames, segments and duration must be >= 1, got {num_frames}, {segments}, {duration}")
    span = num_frames - duration + 1
    if span >= segments:
        if train:
            part = span // segments
            starts = [k * part + int(torch.randint(part, (), generator=generator)) for k in range(segments)]
        else:
            tick = span / segments
            starts = [int(tick / 2 + tick * k) for k in range(segments)]
        return [start + i for start in starts for i in range(duration)]
    first = int(torch.randint(num_frames, (), generator=generator)) if train else 0
    return [(first + i) % num_frames for i in range(segments * duration)]


# --------------------------------------------------------------------------------------------------
# Annotation readers -> lists of ClipRecord
# --------------------------------------------------------------------------------------------------


def _require_file(path: Path, what: str) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")


def _is_clip(path: Path) -> bool:
    return path.is_dir() or (path.is_file() and video.is_video(path))


def _find_clip(folder: Path, names: Sequence[str], source: str) -> Path:
    """The first of `names` under `folder` that is a frame folder or, with a video suffix, a video file."""
    for name in names:
        for path in [folder / name] + [folder / (name + suffix) for suffix in video.VIDEO_SUFFIXES]:
            if _is_clip(path):
                return path
    raise FileNotFoundError(f"clip {folder / names[0]} does not exist (listed in {source}): no frame folder and no "
                            f"{'/'.join(video.VIDEO_SUFFIXES)} video of that name")


def _check_clip(path: Path, source: str) -> None:
    if _is_clip(path):
        return
    if not path.exists():
        raise FileNotFoundError(f"clip {path} does not exist (listed in {source})")
    raise UsageError(f"clip {path} (listed in {source}) is neither a frame folder nor a video file "
                     f"({', '.join(video.VIDEO_SUFFIXES)})")


def _class_index(value: str, source: str, base: int, num_classes: int) -> int:
    try:
        label = int(value)
    except ValueError:
        raise UsageError(f"{source}: label {value!r} is not an integer") from None
    if not base <= label < base + num_classes:
        raise UsageError(
            f"{source}: label {label} is outside {base}..{base + num_classes - 1} "
            f"(labels are counted from label_base={base})"
        )
    return label - base


def read_dfew(root: str | Path, fold: int, split: str, frames_dir: str | None = None) -> list[ClipRecord]:
    """Clips of DFEW fold `fold` (1-5), split "train" or "test"; `frames_dir` under `root` holds the clips
    (default ``Clip/clip_224x224``)."""
    if fold not in range(1, 6):
        raise UsageError(f"DFEW fold must be 1..5, got {fold}")
    if split not in ("train", "test"):
        raise UsageError(f"DFEW split must be 'train' or 'test', got {split!r}")
    root = Path(root)
    csv_path = root / "EmoLabel_DataSplit" / f"{split}(single-labeled)" / f"set_{fold}.csv"
    _require_file(csv_path, "DFEW split file")
    clips_dir = root / (frames_dir or DFEW_FRAMES_DIR)
    if not clips_dir.is_dir():
        raise FileNotFoundError(f"DFEW clips folder {clips_dir} does not exist (set frames_dir to where the clips "
                                "are, e.g. Clip/original for DFEW's .mp4 clips)")
    records = []
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or [h.strip().lower() for h in header[:2]] != ["video_name", "label"]:
            raise UsageError(f"{csv_path}: expected the header 'video_name,label', got {header}")
        for line, row in enumerate(reader, start=2):
            if not row or not "".join(row).strip():
                continue
            source = f"{csv_path}:{line}"
            if len(row) < 2:
                raise UsageError(f"{source}: expected 'video_name,label', got {row}")
            name = row[0].strip()
            label = _class_index(row[1].strip(), source, 1, len(EMOTIONS))
            names = [name.zfill(5), name] if name.isdigit() else [name]
            records.append(ClipRecord(_find_clip(clips_dir, names, source), label, source))
    return records


def read_ferv39k(root: str | Path, split: str, frames_dir: str | None = None) -> list[ClipRecord]:
    """Clips of FERV39K's all-scenes setup, split "train" or "test"; `frames_dir` under `root` holds the
    clips (default ``2_ClipsforFaceCrop``)."""
    if split not in ("train", "test"):
        raise UsageError(f"FERV39K split must be 'train' or 'test', got {split!r}")
    root = Path(root)
    list_path = root / "4_setups" / "All_scenes" / f"{split}_All.csv"
    _require_file(list_path, "FERV39K split file")
    clips_dir = root / (frames_dir or FERV39K_FRAMES_DIR)
    records = []
    with open(list_path, encoding="utf-8-sig") as f:
        for line, text in enumerate(f, start=1):
            fields = text.replace(",", " ").split()
            if not fields:
                continue
            source = f"{list_path}:{line}"
            name = fields[-1].lower() if len(fields) >= 2 else ""
            if name not in EMOTIONS:
                if line == 1:  # a header line
                    continue
                raise UsageError(f"{source}: expected '<scene>/<emotion>/<clip> <Emotion>' with an emotion in "
                                 f"{', '.join(e.capitalize() for e in EMOTIONS)}, got {text.strip()!r}")
            records.append(ClipRecord(_find_clip(clips_dir, [fields[0]], source), EMOTIONS.index(name), source))
    return records


def read_annotation_list(list_file: str | Path, root: str | Path | None = None, label_base: int = 1,
                         num_classes: int = len(EMOTIONS)) -> list[ClipRecord]:
    """Clips of a ``path num_frames label`` list; relative paths are taken from `root` (default: the list's folder)."""
    list_file = Path(list_file)
    _require_file(list_file, "annotation list")
    base_dir = Path(root) if root is not None else list_file.parent
    records = []
    with open(list_file, encoding="utf-8") as f:
        for line, text in enumerate(f, start=1):
            fields = text.split()
            if not fields:
                continue
            source = f"{list_file}:{line}"
            if len(fields) != 3:
                raise UsageError(f"{source}: expected 'path num_frames label', got {text.strip()!r}")
            label = _class_index(fields[2], source, label_base, num_classes)
            _check_clip(base_dir / fields[0], source)
            records.append(ClipRecord(base_dir / fields[0], label, source))
    if not records:
        raise UsageError(f"annotation list {list_file} lists no clips")
    return records


def split_train_val(records: Sequence[ClipRecord], val_fraction: float, seed: int = 0
                    ) -> tuple[list[ClipRecord], list[ClipRecord]]:
    """Stratified split of training clips into (train, val): `val_fraction` of each class, at least one
    clip per class that has two or more, chosen by `seed`. The test fold is never touched."""
    if not 0 < val_fraction < 1:
        raise UsageError(f"val_fraction must be in (0, 1), got {val_fraction}")
    generator = torch.Generator().manual_seed(seed)
    by_class: dict[int, list[int]] = {}
    for i, record in enumerate(records):
        by_class.setdefault(record.label, []).append(i)
    val = set()
    for label in sorted(by_class):
        members = by_class[label]
        count = min(len(members) - 1, max(1, round(val_fraction * len(members))))
        order = torch.randperm(len(members), generator=generator)[:count].tolist()
        val.update(members[i] for i in order)
    return ([r for i, r in enumerate(records) if i not in val], [r for i, r in enumerate(records) if i in val])


# --------------------------------------------------------------------------------------------------
# The dataset
# --------------------------------------------------------------------------------------------------


class FrameClipDataset(Dataset):
    """Clips from frame folders or video files: ``(segments * duration, 3, image_size, image_size)``
    float32 and a label. The decoders the clips need (Pillow, PyAV) are checked here, before any
    DataLoader worker starts.

    Args:
        records: the clips (from `read_dfew`, `read_ferv39k`, `read_annotation_list`).
        train: random offsets + random resized crop + flip; otherwise centre offsets + resize/centre crop.
        segments, duration: Former-DFER sampling (8 x 2).
        image_size: output height and width (112).
        crop_scale: area fraction range of the training crop.
        class_names: names of the label indices.
    """

    def __init__(self, records: Sequence[ClipRecord], train: bool, segments: int = 8, duration: int = 2,
                 image_size: int = 112, crop_scale: Sequence[float] = (0.08, 1.0),
                 class_names: Sequence[str] = EMOTIONS) -> None:
        if not records:
            raise UsageError("FrameClipDataset got no clips")
        self.records = list(records)
        self.train, self.segments, self.duration = train, segments, duration
        self.image_size, self.crop_scale = image_size, tuple(crop_scale)
        self.class_names = tuple(class_names)
        self.num_classes = len(self.class_names)
        self.labels = [r.label for r in self.records]
        bad = [r for r in self.records if not 0 <= r.label < self.num_classes]
        if bad:
            raise UsageError(f"{bad[0].source}: label index {bad[0].label} outside 0..{self.num_classes - 1}")
        videos = [r for r in self.records if video.is_video(r.path)]
        if videos:
            require("av", f"reading video clips such as {videos[0].path}")
        if len(videos) < len(self.records):
            folder = next(r for r in self.records if not video.is_video(r.path))
            require("PIL", f"reading frame images such as those in {folder.path}")

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        record = self.records[index]
        if video.is_video(record.path):
            indices = sample_indices(video.count_frames(record.path, record.source), self.segments, self.duration,
                                     self.train)
            clip = video.read_frames(record.path, indices, record.source)
        else:
            frames = list_frames(record.path, record.source)
            indices = sample_indices(len(frames), self.segments, self.duration, self.train)
            clip = load_frames([frames[i] for i in indices])
        if self.train:
            clip = augment.train_transform(clip, self.image_size, self.crop_scale)
        else:
            clip = augment.eval_transform(clip, self.image_size)
        return augment.normalize(clip), record.label
