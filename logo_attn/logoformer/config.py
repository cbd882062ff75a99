"""A training run's settings: `TrainConfig`, its command-line flags and YAML files.

Settings come, in increasing priority, from `TrainConfig`'s defaults, the dataset's preset
(`PRESETS`), a YAML config file (``--config configs/dfew.yaml``) and command-line flags (every field
is a flag: ``--batch-size 16`` or ``--batch_size 16``).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path

from . import data as clip_data
from .errors import UsageError
from .model import ATTENTIONS
from .optional import require

DATASETS = ("synthetic", "dfew", "ferv39k", "list")
OPTIMIZERS = ("sgd", "adamw")
# Fields that define the network: a resumed or evaluated checkpoint must agree on them.
MODEL_FIELDS = ("attention", "embed_dim", "depth", "num_heads", "window", "pool", "frames", "image_size")


def _setting(default, help: str = ""):
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass
class TrainConfig:
    """Every setting of a run (each one is also a command-line flag)."""

    # data
    dataset: str = _setting("synthetic", "synthetic, dfew, ferv39k or list (annotation lists)")
    root: str | None = _setting(None, "dataset folder (DFEW, FERV39K); base of relative paths in lists")
    fold: int = _setting(1, "DFEW fold, 1-5")
    frames_dir: str | None = _setting(None, f"DFEW, FERV39K: folder of the clips (frame folders or videos) under "
                                            f"root; default {clip_data.DFEW_FRAMES_DIR} or "
                                            f"{clip_data.FERV39K_FRAMES_DIR}")
    train_list: str | None = _setting(None, "list: training annotation list ('path num_frames label' lines)")
    val_list: str | None = _setting(None, "list: validation list (default: val_fraction of the training list)")
    test_list: str | None = _setting(None, "list: test list")
    label_base: int = _setting(1, "list: label value of the first class")
    num_classes: int = _setting(7, "list: number of classes (DFEW/FERV39K: 7, synthetic: 4)")
    val_fraction: float = _setting(0.1, "validation share of the training clips (stratified) when no list gives one")
    segments: int = _setting(8, "frame sampling: segments per clip")
    duration: int = _setting(2, "frame sampling: consecutive frames per segment")
    image_size: int = _setting(112, "frame height and width fed to the model")
    crop_scale: tuple[float, float] = _setting((0.08, 1.0), "area range of the training random resized crop")
    frames: int = _setting(8, "synthetic: frames per clip (real data: segments x duration)")
    synthetic_clips: tuple[int, int, int] = _setting((2048, 512, 1024), "synthetic: train, val, test clips")
    # model
    attention: str = _setting("logo", "logo, full, divided (TimeSformer) or spatial")
    backend: str = _setting("auto", "op backend of the LOGO blocks: auto, triton, cuda, cpu, torch")
    embed_dim: int = _setting(256, "transformer width")
    depth: int = _setting(4, "transformer blocks")
    num_heads: int = _setting(8, "attention heads")
    window: tuple[int, int, int] = _setting((2, 7, 7), "LOGO local window (frames, height, width) in tokens")
    pool: str = _setting("avg", "LOGO window pooling: avg or conv")
    head_drop: float = _setting(0.0, "dropout before the classifier")
    backbone_weights: str | None = _setting(None, "local ResNet-18 checkpoint (torchvision or MS-Celeb-1M)")
    # optimisation
    epochs: int = _setting(100, "training epochs")
    batch_size: int = _setting(32, "global batch, split over the processes")
    optimizer: str = _setting("sgd", "sgd or adamw (wrapped in SAM when rho > 0)")
    lr: float = _setting(1e-3, "peak learning rate")
    momentum: float = _setting(0.9, "SGD momentum")
    weight_decay: float = _setting(1e-4, "weight decay")
    backbone_lr_scale: float = _setting(1.0, "learning-rate factor of the ResNet trunk and the 1x1 projection")
    rho: float = _setting(0.05, "SAM neighbourhood radius; 0 trains without SAM")
    reg_weight: float = _setting(1.0, "weight of the compact loss term")
    warmup_epochs: int = _setting(0, "linear warm-up epochs before the cosine decay")
    select_metric: str = _setting("war", "validation metric choosing best.pt: war or uar")
    # run
    out_dir: str | None = _setting(None, "run folder (default runs/<dataset>-<attention>)")
    resume: bool = _setting(False, "continue from <out_dir>/last.pt if it exists")
    seed: int = _setting(0, "seed of weights, data order and synthetic clips")
    workers: int = _setting(4, "data loading processes")
    device: str = _setting("auto", "auto, cpu or cuda")
    amp: str = _setting("auto", "autocast: auto (bf16 on CUDA, off on CPU), bf16 or off")
    progress: bool = _setting(True, "progress bars")
    context_parallel: int = _setting(1, "ranks per clip: each clip's frames split over K ranks (LOGO attention; "
                                        "the processes form world/K clip groups)")

    def check(self) -> None:
        choices = {"dataset": DATASETS, "attention": ATTENTIONS, "optimizer": OPTIMIZERS,
                   "select_metric": ("war", "uar"), "device": ("auto", "cpu", "cuda"), "amp": ("auto", "bf16", "off")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise UsageError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if self.dataset in ("dfew", "ferv39k") and not self.root:
            raise UsageError(f"--root is required for dataset {self.dataset!r} (the folder holding the dataset)")
        if self.dataset == "list" and not (self.train_list and self.test_list):
            raise UsageError("dataset 'list' needs --train-list and --test-list (and optionally --val-list)")
        for name in ("epochs", "batch_size", "depth", "num_heads", "embed_dim", "segments", "duration", "image_size",
                     "frames", "num_classes"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name} must be >= 1, got {getattr(self, name)}")
        if min(*self.window, *self.synthetic_clips) < 1:
            raise UsageError(f"window and synthetic_clips entries must be >= 1, got {self.window} and "
                             f"{self.synthetic_clips}")
        if min(self.rho, self.reg_weight, self.backbone_lr_scale, self.lr, self.warmup_epochs, self.workers) < 0:
            raise UsageError(f"rho, reg_weight, backbone_lr_scale, lr, warmup_epochs and workers must be >= 0, got "
                             f"{self.rho}, {self.reg_weight}, {self.backbone_lr_scale}, {self.lr}, "
                             f"{self.warmup_epochs} and {self.workers}")
        if self.context_parallel < 1:
            raise UsageError(f"context_parallel must be >= 1, got {self.context_parallel}")
        if self.context_parallel > 1 and self.attention != "logo":
            raise UsageError(f"context_parallel {self.context_parallel} needs attention 'logo', not {self.attention!r}")
        if self.embed_dim % self.num_heads:
            raise UsageError(f"embed_dim ({self.embed_dim}) must be divisible by num_heads ({self.num_heads})")


# Per-dataset defaults, applied before the config file and the flags (the real datasets use TrainConfig's).
PRESETS: dict[str, dict] = {
    # Small enough to learn in minutes on a 2-core CPU: 8 frames of 32 x 32 (a 8 x 2 x 2 token grid).
    "synthetic": dict(image_size=32, frames=8, embed_dim=64, depth=2, num_heads=4, epochs=8, batch_size=8,
                      optimizer="adamw", lr=1e-3, weight_decay=0.05, backbone_lr_scale=0.1, rho=0.0, workers=0),
}


def _field_type(field: dataclasses.Field) -> tuple[type, int | None]:
    """(element type, tuple length or None) of a config field, from its default value."""
    default = field.default
    if isinstance(default, tuple):
        return type(default[0]), len(default)
    if default is None:
        return str, None
    return type(default), None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m logo_attn.train", description=__doc__.split("\n\n")[0],
        argument_default=argparse.SUPPRESS,
        epilog="Defaults: TrainConfig, then the dataset's preset (PRESETS in logo_attn/logoformer/config.py).",
    )
    parser.add_argument("--config", help="YAML file of settings (flags override it)")
    for field in dataclasses.fields(TrainConfig):
        kind, length = _field_type(field)
        names = [f"--{field.name.replace('_', '-')}"] + ([f"--{field.name}"] if "_" in field.name else [])
        if field.name == "batch_size":
            names.append("--batch")
        if kind is bool:
            parser.add_argument(*names, dest=field.name, action=argparse.BooleanOptionalAction,
                                help=field.metadata["help"])
        else:
            parser.add_argument(*names, dest=field.name, type=kind, nargs=length, help=field.metadata["help"],
                                metavar=field.name.upper())
    return parser


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"config file {path} does not exist" + (" (it is a directory)" if path.is_dir() else ""))
    yaml = require("yaml", f"reading the config file {path}")
    try:
        with open(path) as f:
            values = yaml.safe_load(f) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise UsageError(f"config file {path} is not valid YAML: {error}") from None
    if not isinstance(values, dict):
        raise UsageError(f"config file {path} must hold a mapping of settings, got {type(values).__name__}")
    return values


_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def _coerce(value: object, kind: type, what: str) -> object:
    """`value` as `kind` (int, float, bool or str), from YAML's or a flag's spelling of it; refuses what
    would only be guessed (a fractional int, a word for a number, a list for a string)."""
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise UsageError(f"{what} must be true or false (yes/no, on/off, 1/0), got {value!r}")
    if kind in (int, float):
        if not isinstance(value, bool):
            try:
                number = float(value) if isinstance(value, str) else value
                if isinstance(number, (int, float)) and math.isfinite(number):
                    if kind is float:
                        return float(number)
                    if float(number).is_integer():
                        return int(number)
            except ValueError:
                pass
        name = "an integer" if kind is int else "a number"
        raise UsageError(f"{what} must be {name}, got {value!r}")
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    raise UsageError(f"{what} must be a string, got {value!r}")


def make_config(overrides: dict, source: str = "settings") -> TrainConfig:
    """`TrainConfig` from defaults, the preset of the chosen dataset, then `overrides`: every value
    coerced to its field's type or refused naming the field (YAML 1.1 reads ``1e-3`` as a string)."""
    known = {f.name: f for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        raise UsageError(f"{source}: unknown setting(s) {', '.join(unknown)}")
    dataset = overrides.get("dataset", TrainConfig.dataset)
    if dataset not in DATASETS:
        raise UsageError(f"dataset must be one of {', '.join(DATASETS)}, got {dataset!r}")
    values = {**PRESETS.get(dataset, {}), **overrides}
    for name, value in values.items():
        kind, length = _field_type(known[name])
        what = f"{source}: {name}"
        if value is None:
            if known[name].default is not None:
                raise UsageError(f"{what} must be set, got nothing")
        elif length is not None:
            if not isinstance(value, (list, tuple)) or len(value) != length:
                raise UsageError(f"{what} must be a list of {length} values, got {value!r}")
            values[name] = tuple(_coerce(v, kind, what) for v in value)
        else:
            values[name] = _coerce(value, kind, what)
    config = TrainConfig(**values)
    config.check()
    return config


def parse_config(argv: Sequence[str] | None = None) -> TrainConfig:
    args = vars(build_parser().parse_args(argv))
    file_values = load_yaml(args.pop("config")) if "config" in args else {}
    return make_config({**file_values, **args}, "config")
