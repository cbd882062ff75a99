"""Train LOGO-Former (or a baseline): ``python -m logo_attn.train --dataset synthetic``.

Settings come, in increasing priority, from `TrainConfig`'s defaults, the dataset's preset
(`PRESETS`), a YAML config file (``--config configs/dfew.yaml``) and command-line flags (every field
is a flag: ``--batch-size 16`` or ``--batch_size 16``). The run directory (``--out-dir``) receives:

- ``config.yaml``: the resolved settings;
- ``log.csv``: one row per epoch with the training loss/WAR and the validation loss, UAR and WAR;
- ``last.pt`` (every epoch, for ``--resume``) and ``best.pt`` (best validation ``select_metric``);
- ``test_metrics.json`` and ``confusion_matrix.png``: the best checkpoint on the test split.

The best checkpoint is chosen on a validation split: a stratified ``val_fraction`` of the training
clips for DFEW, FERV39K and annotation lists without ``val_list`` (the test fold is only ever used
for the final report), a separately seeded split for the synthetic clips.

``rho > 0`` trains with SAM around ``optimizer`` (the paper: SGD, lr 1e-3, rho 0.05); ``rho = 0`` uses
the optimizer alone. The loss is `CompactLoss` (cross-entropy + ``reg_weight`` x the compact term).

Several processes: ``torchrun --nproc_per_node N -m logo_attn.train ...`` (DDP; NCCL on GPUs, gloo on
CPU; also multi-node with torchrun's usual flags). ``batch_size`` is the global batch, split across
processes. On GPU the forward passes run under bf16 autocast (``--amp bf16``, the default there).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset
from torch.utils.data.distributed import DistributedSampler

from . import data as clip_data
from .losses import CompactLoss
from .metrics import confusion_matrix, format_recalls, per_class_recall, plot_confusion_matrix, uar_war
from .model import ATTENTIONS, LOGOFormer
from .optim import SAM, frozen_bn_stats
from .synthetic import TurningWheel

DATASETS = ("synthetic", "dfew", "ferv39k", "list")
OPTIMIZERS = {"sgd": torch.optim.SGD, "adamw": torch.optim.AdamW}
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
    frames_dir: str = _setting(clip_data.DFEW_FRAMES_DIR, "DFEW: folder of the clip folders, under root")
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

    def check(self) -> None:
        choices = {"dataset": DATASETS, "attention": ATTENTIONS, "optimizer": tuple(OPTIMIZERS),
                   "select_metric": ("war", "uar"), "device": ("auto", "cpu", "cuda"), "amp": ("auto", "bf16", "off")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if self.dataset in ("dfew", "ferv39k") and not self.root:
            raise ValueError(f"--root is required for dataset {self.dataset!r} (the folder holding the dataset)")
        if self.dataset == "list" and not (self.train_list and self.test_list):
            raise ValueError("dataset 'list' needs --train-list and --test-list (and optionally --val-list)")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {self.epochs} and {self.batch_size}")
        if min(self.rho, self.reg_weight, self.backbone_lr_scale) < 0:
            raise ValueError(f"rho, reg_weight and backbone_lr_scale must be >= 0, got {self.rho}, "
                             f"{self.reg_weight} and {self.backbone_lr_scale}")


# Per-dataset defaults, applied before the config file and the flags.
PRESETS: dict[str, dict] = {
    # Small enough to learn in minutes on a 2-core CPU: 8 frames of 32 x 32 (a 8 x 2 x 2 token grid).
    "synthetic": dict(image_size=32, frames=8, embed_dim=64, depth=2, num_heads=4, epochs=8, batch_size=8,
                      optimizer="adamw", lr=1e-3, weight_decay=0.05, backbone_lr_scale=0.1, rho=0.0, workers=0),
    "dfew": dict(),
    "ferv39k": dict(),
    "list": dict(),
}


# --------------------------------------------------------------------------------------------------
# Configuration: defaults < preset < YAML file < flags
# --------------------------------------------------------------------------------------------------


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
        epilog="Defaults: TrainConfig, then the dataset's preset (PRESETS in logo_attn/train.py).",
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
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    with open(path) as f:
        values = yaml.safe_load(f) or {}
    if not isinstance(values, dict):
        raise ValueError(f"config file {path} must hold a mapping of settings, got {type(values).__name__}")
    return values


def make_config(overrides: dict, source: str = "settings") -> TrainConfig:
    """`TrainConfig` from defaults, the preset of the chosen dataset, then `overrides` (unknown keys raise)."""
    known = {f.name: f for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        raise ValueError(f"{source}: unknown setting(s) {', '.join(unknown)}")
    dataset = overrides.get("dataset", TrainConfig.dataset)
    if dataset not in PRESETS:
        raise ValueError(f"dataset must be one of {', '.join(DATASETS)}, got {dataset!r}")
    values = {**PRESETS[dataset], **overrides}
    for name, value in values.items():
        kind, length = _field_type(known[name])
        if length is not None and value is not None:
            if not isinstance(value, (list, tuple)) or len(value) != length:
                raise ValueError(f"{source}: {name} must be a list of {length} values, got {value!r}")
            values[name] = tuple(kind(v) for v in value)
        elif kind is float and isinstance(value, int):
            values[name] = float(value)
    config = TrainConfig(**values)
    config.check()
    return config


def parse_config(argv: Sequence[str] | None = None) -> TrainConfig:
    args = vars(build_parser().parse_args(argv))
    file_values = load_yaml(args.pop("config")) if "config" in args else {}
    return make_config({**file_values, **args}, "config")


# --------------------------------------------------------------------------------------------------
# Building blocks shared with logo_attn.evaluate
# --------------------------------------------------------------------------------------------------


def build_model(config: TrainConfig, num_classes: int) -> LOGOFormer:
    frames = config.frames if config.dataset == "synthetic" else config.segments * config.duration
    return LOGOFormer(
        num_classes=num_classes, num_frames=frames, img_size=config.image_size, embed_dim=config.embed_dim,
        depth=config.depth, num_heads=config.num_heads, attention=config.attention, window=config.window,
        pool=config.pool, backend=config.backend, head_drop=config.head_drop,
        backbone_weights=config.backbone_weights,
    )


def build_datasets(config: TrainConfig) -> tuple[Dataset, Dataset, Dataset, tuple[str, ...]]:
    """(train, val, test) datasets and the class names."""
    if config.dataset == "synthetic":
        n_train, n_val, n_test = config.synthetic_clips
        make = lambda n, seed: TurningWheel(n, num_frames=config.frames, size=config.image_size, seed=seed)  # noqa: E731
        base = 3 * config.seed
        return make(n_train, base + 1), make(n_val, base + 2), make(n_test, base + 3), TurningWheel.class_names

    class_names = clip_data.EMOTIONS
    val_records = None
    if config.dataset == "dfew":
        train_records = clip_data.read_dfew(config.root, config.fold, "train", config.frames_dir)
        test_records = clip_data.read_dfew(config.root, config.fold, "test", config.frames_dir)
    elif config.dataset == "ferv39k":
        train_records = clip_data.read_ferv39k(config.root, "train")
        test_records = clip_data.read_ferv39k(config.root, "test")
    else:
        class_names = clip_data.EMOTIONS if config.num_classes == len(clip_data.EMOTIONS) else tuple(
            f"class {i}" for i in range(config.num_classes))
        read = lambda path: clip_data.read_annotation_list(path, config.root, config.label_base, config.num_classes)  # noqa: E731
        train_records, test_records = read(config.train_list), read(config.test_list)
        val_records = read(config.val_list) if config.val_list else None
    if val_records is None:
        train_records, val_records = clip_data.split_train_val(train_records, config.val_fraction, config.seed)
    common = dict(segments=config.segments, duration=config.duration, image_size=config.image_size,
                  class_names=class_names)
    return (
        clip_data.FrameClipDataset(train_records, train=True, crop_scale=config.crop_scale, **common),
        clip_data.FrameClipDataset(val_records, train=False, **common),
        clip_data.FrameClipDataset(test_records, train=False, **common),
        class_names,
    )


class Runtime:
    """Device, autocast and the process group of this run (one process, or one of a torchrun job)."""

    def __init__(self, config: TrainConfig) -> None:
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        use_cuda = config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available())
        if use_cuda and not torch.cuda.is_available():
            raise ValueError("device 'cuda' was asked for but no CUDA device is visible")
        self.device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
        if use_cuda:
            torch.cuda.set_device(self.device)
        self.distributed = self.world_size > 1
        if self.distributed and not dist.is_initialized():
            dist.init_process_group("nccl" if use_cuda else "gloo")
        amp = config.amp if config.amp != "auto" else ("bf16" if use_cuda else "off")
        self.autocast_dtype = torch.bfloat16 if amp == "bf16" else None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def close(self) -> None:
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()


def train_step(model: nn.Module, clips: Tensor, targets: Tensor, criterion: nn.Module,
               optimizer: torch.optim.Optimizer, runtime: Runtime) -> tuple[Tensor, Tensor]:
    """One optimisation step; returns the (detached) loss and logits of the first forward pass.

    With `SAM` both passes are ordinary (DDP-synchronised) forward/backward passes, so the
    perturbation uses the global gradient (see `logo_attn.optim`); the second forward leaves the
    BatchNorm running statistics alone.
    """
    with runtime.autocast():
        logits = model(clips)
        loss = criterion(logits, targets)
    loss.backward()
    if isinstance(optimizer, SAM):
        optimizer.first_step(zero_grad=True)
        with frozen_bn_stats(model), runtime.autocast():
            criterion(model(clips), targets).backward()
        optimizer.second_step(zero_grad=True)
    else:
        optimizer.step()
        optimizer.zero_grad()
    return loss.detach(), logits.detach()


@torch.no_grad()
def predict(model: nn.Module, dataset: Dataset, batch_size: int, runtime: Runtime, workers: int,
            progress: bool, desc: str) -> tuple[Tensor, Tensor, float]:
    """(predictions, targets, mean cross-entropy) over the whole dataset, every process taking a
    disjoint share (no padding, so the metrics are exact) and the results gathered everywhere."""
    model.eval()
    shard = Subset(dataset, range(runtime.rank, len(dataset), runtime.world_size))
    loader = DataLoader(shard, batch_size=max(1, batch_size // runtime.world_size), shuffle=False,
                        num_workers=workers, pin_memory=runtime.device.type == "cuda")
    preds, targets, loss_sum = [], [], 0.0
    for clips, labels in _progress(loader, progress and runtime.is_main, desc):
        clips, labels = clips.to(runtime.device, non_blocking=True), labels.to(runtime.device)
        with runtime.autocast():
            logits = model(clips)
        loss_sum += float(nn.functional.cross_entropy(logits.float(), labels, reduction="sum"))
        preds.append(logits.argmax(dim=1).cpu())
        targets.append(labels.cpu())
    local = (torch.cat(preds) if preds else torch.empty(0, dtype=torch.long),
             torch.cat(targets) if targets else torch.empty(0, dtype=torch.long), loss_sum)
    if runtime.distributed:
        gathered = [None] * runtime.world_size
        dist.all_gather_object(gathered, local)
    else:
        gathered = [local]
    preds = torch.cat([g[0] for g in gathered])
    targets = torch.cat([g[1] for g in gathered])
    return preds, targets, sum(g[2] for g in gathered) / max(1, len(targets))


def _progress(iterable, enabled: bool, desc: str):
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, leave=False, dynamic_ncols=True, file=sys.stderr)


def _lr_factor(config: TrainConfig, epoch: float) -> float:
    """Linear warm-up over `warmup_epochs`, then cosine decay to 0 at `epochs` (per-step granularity)."""
    if epoch < config.warmup_epochs:
        return (epoch + 1e-3) / config.warmup_epochs
    span = max(1e-9, config.epochs - config.warmup_epochs)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (epoch - config.warmup_epochs) / span)))


def build_optimizer(model: LOGOFormer, config: TrainConfig) -> torch.optim.Optimizer:
    """SAM around `config.optimizer` (or the optimizer alone when rho = 0), with the CNN stem (trunk
    and 1x1 projection) in its own parameter group at ``lr * backbone_lr_scale``.

    Why the scale: trained from scratch at the transformer's rate, the stem learns to shrink the
    tokens' content long before attention has found anything to use it for, and the run stalls at
    chance (measured on the synthetic clips; docs/training.md). Each group's ``lr_scale`` multiplies
    the schedule in `_train`.
    """
    stem, rest = [], []
    for name, parameter in model.named_parameters():
        (stem if name.startswith(("backbone.", "embed.")) else rest).append(parameter)
    groups = [{"params": stem, "lr_scale": config.backbone_lr_scale}, {"params": rest, "lr_scale": 1.0}]
    kwargs = dict(lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "sgd":
        kwargs["momentum"] = config.momentum
    if config.rho > 0:
        return SAM(groups, OPTIMIZERS[config.optimizer], rho=config.rho, **kwargs)
    return OPTIMIZERS[config.optimizer](groups, **kwargs)


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def save_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, config: TrainConfig,
                    epoch: int, best: dict, class_names: Sequence[str]) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"model": _unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
                "config": dataclasses.asdict(config), "epoch": epoch, "best": best,
                "class_names": list(class_names)}, tmp)
    os.replace(tmp, path)  # never leave a half-written checkpoint behind


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    return torch.load(path, map_location="cpu", weights_only=False)


def check_same_model(saved: dict, config: TrainConfig, path: Path) -> None:
    differ = [f"{k}: checkpoint {saved[k]!r} vs now {getattr(config, k)!r}"
              for k in MODEL_FIELDS if k in saved and _plain(saved[k]) != _plain(getattr(config, k))]
    if differ:
        raise ValueError(f"{path} was trained with other model settings: " + "; ".join(differ))


def _plain(value):
    return list(value) if isinstance(value, (list, tuple)) else value


def evaluate_split(model: nn.Module, dataset: Dataset, class_names: Sequence[str], config: TrainConfig,
                   runtime: Runtime, desc: str) -> dict:
    """UAR, WAR, loss, per-class recall and confusion matrix of `model` on `dataset`."""
    preds, targets, loss = predict(model, dataset, config.batch_size, runtime, config.workers, config.progress, desc)
    matrix = confusion_matrix(preds, targets, len(class_names))
    uar, war = uar_war(preds, targets, len(class_names))
    recall = per_class_recall(matrix)
    return {"uar": uar, "war": war, "loss": loss, "clips": len(targets),
            "per_class_recall": {n: (None if math.isnan(r) else r) for n, r in zip(class_names, recall.tolist())},
            "confusion_matrix": matrix.tolist()}


def write_report(metrics: dict, class_names: Sequence[str], out_dir: Path, stem: str, title: str) -> None:
    """``<stem>_metrics.json`` and ``confusion_matrix.png`` (or ``<stem>_confusion_matrix.png``)."""
    (out_dir / f"{stem}_metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    name = "confusion_matrix.png" if stem == "test" else f"{stem}_confusion_matrix.png"
    plot_confusion_matrix(torch.tensor(metrics["confusion_matrix"]), class_names, out_dir / name, title)


def format_metrics(metrics: dict, class_names: Sequence[str], label: str) -> str:
    return (f"{label}: UAR {100 * metrics['uar']:.2f}%  WAR {100 * metrics['war']:.2f}%  "
            f"({metrics['clips']} clips)\n" + format_recalls(torch.tensor(metrics["confusion_matrix"]), class_names))


# --------------------------------------------------------------------------------------------------
# The training run
# --------------------------------------------------------------------------------------------------

LOG_FIELDS = ("epoch", "lr", "train_loss", "train_war", "val_loss", "val_uar", "val_war", "seconds")


def train(config: TrainConfig) -> dict:
    """Run training as configured; returns the test metrics of the best checkpoint (all processes)."""
    runtime = Runtime(config)
    try:
        return _train(config, runtime)
    finally:
        runtime.close()


def _train(config: TrainConfig, runtime: Runtime) -> dict:
    out_dir = Path(config.out_dir or f"runs/{config.dataset}-{config.attention}")
    if config.batch_size % runtime.world_size:
        raise ValueError(f"batch_size {config.batch_size} must be divisible by the {runtime.world_size} processes")
    torch.manual_seed(config.seed)  # the same initial weights in every process
    train_set, val_set, test_set, class_names = build_datasets(config)
    model = build_model(config, len(class_names)).to(runtime.device)
    optimizer = build_optimizer(model, config)
    start_epoch, best = 0, {"epoch": None, "val_uar": -1.0, "val_war": -1.0}
    last_path, best_path = out_dir / "last.pt", out_dir / "best.pt"
    if config.resume and last_path.is_file():
        saved = load_checkpoint(last_path)
        check_same_model(saved["config"], config, last_path)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        start_epoch, best = saved["epoch"], saved["best"]
    elif config.resume and runtime.is_main:
        print(f"--resume: no {last_path} yet, starting from scratch", file=sys.stderr)
    if runtime.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        _write_config(config, out_dir / "config.yaml")
        print(f"{config.dataset}: {len(train_set)} train / {len(val_set)} val / {len(test_set)} test clips; "
              f"model {config.attention} (grid {model.grid}), {sum(p.numel() for p in model.parameters()):,} "
              f"parameters; device {runtime.device}, {runtime.world_size} process(es); out {out_dir}", file=sys.stderr)

    ddp_model = model
    if runtime.distributed:
        ddp_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[runtime.device.index] if runtime.device.type == "cuda" else None)
    sampler = DistributedSampler(train_set, runtime.world_size, runtime.rank, shuffle=True, seed=config.seed,
                                 drop_last=True)
    loader = DataLoader(train_set, batch_size=config.batch_size // runtime.world_size, sampler=sampler,
                        num_workers=config.workers, pin_memory=runtime.device.type == "cuda", drop_last=True)
    if len(loader) == 0:
        raise ValueError(f"the training split ({len(train_set)} clips) is smaller than one batch ({config.batch_size})")
    criterion = CompactLoss(config.reg_weight)

    for epoch in range(start_epoch, config.epochs):
        started = time.time()
        sampler.set_epoch(epoch)
        if hasattr(train_set, "set_epoch"):  # synthetic clips: fresh ones every epoch
            train_set.set_epoch(epoch)
        ddp_model.train()
        loss_sum, correct, seen = torch.zeros((), device=runtime.device), torch.zeros((), device=runtime.device), 0
        steps = len(loader)
        bar = _progress(loader, config.progress and runtime.is_main, f"epoch {epoch + 1}/{config.epochs}")
        for step, (clips, targets) in enumerate(bar):
            for group in optimizer.param_groups:
                group["lr"] = config.lr * group["lr_scale"] * _lr_factor(config, epoch + step / steps)
            clips, targets = clips.to(runtime.device, non_blocking=True), targets.to(runtime.device, non_blocking=True)
            loss, logits = train_step(ddp_model, clips, targets, criterion, optimizer, runtime)
            loss_sum += loss.float() * len(targets)
            correct += (logits.argmax(dim=1) == targets).sum()
            seen += len(targets)
            if hasattr(bar, "set_postfix") and step % 10 == 0:
                bar.set_postfix(loss=f"{float(loss):.3f}")
        totals = torch.stack([loss_sum, correct.float(), torch.tensor(float(seen), device=runtime.device)])
        if runtime.distributed:
            dist.all_reduce(totals)
        val = evaluate_split(model, val_set, class_names, config, runtime, "val")
        row = {"epoch": epoch + 1, "lr": optimizer.param_groups[-1]["lr"],
               "train_loss": float(totals[0] / totals[2]), "train_war": float(totals[1] / totals[2]),
               "val_loss": val["loss"], "val_uar": val["uar"], "val_war": val["war"],
               "seconds": time.time() - started}
        improved = val[config.select_metric] > best[f"val_{config.select_metric}"]
        if improved:
            best = {"epoch": epoch + 1, "val_uar": val["uar"], "val_war": val["war"]}
        if runtime.is_main:
            _append_log(out_dir / "log.csv", row)
            if improved:
                save_checkpoint(best_path, model, optimizer, config, epoch + 1, best, class_names)
            save_checkpoint(last_path, model, optimizer, config, epoch + 1, best, class_names)
            print(f"epoch {epoch + 1}/{config.epochs}: train loss {row['train_loss']:.4f} WAR "
                  f"{100 * row['train_war']:.1f}% | val loss {val['loss']:.4f} UAR {100 * val['uar']:.2f}% "
                  f"WAR {100 * val['war']:.2f}%{' (best)' if improved else ''} | {row['seconds']:.0f}s",
                  file=sys.stderr)
        runtime.barrier()

    # final report: the best checkpoint (chosen on validation) on the test split
    model.load_state_dict(load_checkpoint(best_path)["model"])
    test = evaluate_split(model, test_set, class_names, config, runtime, "test")
    test["best_epoch"] = best["epoch"]
    if runtime.is_main:
        write_report(test, class_names, out_dir, "test", f"{config.dataset} test, {config.attention}")
        print(format_metrics(test, class_names, f"test (best epoch {best['epoch']})"), file=sys.stderr)
    runtime.barrier()
    return test


def _write_config(config: TrainConfig, path: Path) -> None:
    import yaml

    values = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(config).items()}
    path.write_text(yaml.safe_dump(values, sort_keys=False))


def _append_log(path: Path, row: dict) -> None:
    new = not path.is_file()
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=LOG_FIELDS)
        if new:
            writer.writeheader()
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


def main(argv: Sequence[str] | None = None) -> None:
    train(parse_config(argv))


if __name__ == "__main__":
    main()
