"""Train LOGO-Former (or a baseline): ``python -m logo_attn.train --dataset synthetic``.

Settings come, in increasing priority, from `TrainConfig`'s defaults, the dataset's preset
(`config.PRESETS`), a YAML config file (``--config configs/dfew.yaml``) and command-line flags (every field
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
processes. ``--context-parallel K`` splits each clip's frames over K ranks instead
(`logo_attn.distributed.TimeSharding`; the N processes form N/K clip groups, the batch is split
across the groups, DDP still spans all N; evaluation runs unsharded, each rank a share of the clips). On GPU the forward passes run under bf16 autocast (``--amp bf16``, the default there).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from ..distributed import TimeSharding
from . import data as clip_data
from .checkpoints import check_same_model, load_checkpoint, load_optimizer_state, load_weights, save_checkpoint
from .config import TrainConfig, parse_config
from .distributed import Runtime
from .errors import UsageError, run_command
from .loop import build_optimizer, lr_factor, progress_bar, train_step
from .losses import CompactLoss
from .model import LOGOFormer
from .reports import append_log, evaluate_split, format_metrics, write_config, write_report
from .synthetic import TurningWheel


def build_model(config: TrainConfig, num_classes: int) -> LOGOFormer:
    frames = config.frames if config.dataset == "synthetic" else config.segments * config.duration
    return LOGOFormer(
        num_classes=num_classes, num_frames=frames, img_size=config.image_size, embed_dim=config.embed_dim,
        depth=config.depth, num_heads=config.num_heads, attention=config.attention, window=config.window,
        pool=config.pool, backend=config.backend, head_drop=config.head_drop,
        backbone_weights=config.backbone_weights,
    )


def context_sharding(model: LOGOFormer, config: TrainConfig, runtime: Runtime) -> TimeSharding | None:
    """The time sharding of the model's grid over this rank's clip group (``--context-parallel K``),
    or None. On CUDA the trunk's BatchNorm becomes SyncBatchNorm over the group, so that it
    normalises over the whole clip's frames as one process would; PyTorch's SyncBatchNorm does not
    run on CPU, where each rank's BatchNorm sees only its own frames (`_batchnorm_note`)."""
    if runtime.context_size == 1:
        return None
    try:
        cp = TimeSharding(runtime.context_group, model.grid, model.blocks[0].attn.window)
    except ValueError as error:
        raise UsageError(f"--context-parallel {runtime.context_size}: {error}") from None
    if runtime.device.type == "cuda":
        model.backbone = nn.SyncBatchNorm.convert_sync_batchnorm(model.backbone, process_group=runtime.context_group)
    return cp


def _batchnorm_note(runtime: Runtime) -> str:
    if runtime.device.type == "cuda":
        return "synchronised over each clip group (SyncBatchNorm)"
    return "per rank: on CPU each rank normalises over its own frames only (SyncBatchNorm needs a GPU)"


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
        train_records = clip_data.read_ferv39k(config.root, "train", config.frames_dir)
        test_records = clip_data.read_ferv39k(config.root, "test", config.frames_dir)
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


def train(config: TrainConfig) -> dict:
    """Run training as configured; returns the test metrics of the best checkpoint (all processes)."""
    runtime = Runtime(config)
    try:
        return _train(config, runtime)
    finally:
        runtime.close()


def _train(config: TrainConfig, runtime: Runtime) -> dict:
    out_dir = Path(config.out_dir or f"runs/{config.dataset}-{config.attention}")
    if config.batch_size % runtime.data_size:
        raise UsageError(f"batch_size {config.batch_size} must be divisible by the {runtime.data_size} clip group(s) "
                         f"({runtime.world_size} processes, {runtime.context_size} per clip)")
    torch.manual_seed(config.seed)  # the same initial weights in every process
    train_set, val_set, test_set, class_names = build_datasets(config)
    model = build_model(config, len(class_names)).to(runtime.device)
    cp = context_sharding(model, config, runtime)
    optimizer = build_optimizer(model, config)
    start_epoch, best = 0, {"epoch": None, "val_uar": -1.0, "val_war": -1.0}
    last_path, best_path = out_dir / "last.pt", out_dir / "best.pt"
    if config.resume and os.path.lexists(last_path):  # a folder, FIFO or dangling link there is an error too
        saved = load_checkpoint(last_path)
        check_same_model(saved["config"], config, last_path)
        load_weights(model, saved, last_path)
        load_optimizer_state(optimizer, saved, last_path)
        start_epoch, best = saved["epoch"], saved["best"]
    elif config.resume and runtime.is_main:
        print(f"--resume: no {last_path} yet, starting from scratch", file=sys.stderr)
    if runtime.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_config(config, out_dir / "config.yaml")
        print(f"{config.dataset}: {len(train_set)} train / {len(val_set)} val / {len(test_set)} test clips; "
              f"model {config.attention} (grid {model.grid}), {sum(p.numel() for p in model.parameters()):,} "
              f"parameters; device {runtime.device}, {runtime.world_size} process(es); out {out_dir}", file=sys.stderr)
        if cp is not None:
            print(f"context parallel: {runtime.data_size} clip group(s) of {runtime.context_size} ranks, frames "
                  f"{cp.frames} of each clip; BatchNorm {_batchnorm_note(runtime)}", file=sys.stderr)

    ddp_model = model
    if runtime.distributed:
        ddp_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[runtime.device.index] if runtime.device.type == "cuda" else None)
    # a clip group's ranks load the same clips (each keeps its frames); the groups split the data
    sampler = DistributedSampler(train_set, runtime.data_size, runtime.data_rank, shuffle=True, seed=config.seed,
                                 drop_last=True)
    loader = DataLoader(train_set, batch_size=config.batch_size // runtime.data_size, sampler=sampler,
                        num_workers=config.workers, pin_memory=runtime.device.type == "cuda", drop_last=True)
    if len(loader) == 0:
        raise UsageError(f"the training split ({len(train_set)} clips) is smaller than one batch ({config.batch_size}): "
                         "lower --batch-size")
    criterion = CompactLoss(config.reg_weight)

    for epoch in range(start_epoch, config.epochs):
        started = time.time()
        sampler.set_epoch(epoch)
        if hasattr(train_set, "set_epoch"):  # synthetic clips: fresh ones every epoch
            train_set.set_epoch(epoch)
        ddp_model.train()
        loss_sum, correct, seen = torch.zeros((), device=runtime.device), torch.zeros((), device=runtime.device), 0
        steps = len(loader)
        bar = progress_bar(loader, config.progress and runtime.is_main, f"epoch {epoch + 1}/{config.epochs}")
        for step, (clips, targets) in enumerate(bar):
            for group in optimizer.param_groups:
                group["lr"] = config.lr * group["lr_scale"] * lr_factor(config, epoch + step / steps)
            clips, targets = clips.to(runtime.device, non_blocking=True), targets.to(runtime.device, non_blocking=True)
            if cp is not None:
                clips = cp.shard_frames(clips)
            loss, logits = train_step(ddp_model, clips, targets, criterion, optimizer, runtime, cp)
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
            append_log(out_dir / "log.csv", row)
            if improved:
                save_checkpoint(best_path, model, optimizer, config, epoch + 1, best, class_names)
            save_checkpoint(last_path, model, optimizer, config, epoch + 1, best, class_names)
            print(f"epoch {epoch + 1}/{config.epochs}: train loss {row['train_loss']:.4f} WAR "
                  f"{100 * row['train_war']:.1f}% | val loss {val['loss']:.4f} UAR {100 * val['uar']:.2f}% "
                  f"WAR {100 * val['war']:.2f}%{' (best)' if improved else ''} | {row['seconds']:.0f}s",
                  file=sys.stderr)
        runtime.barrier()

    # final report: the best checkpoint (chosen on validation) on the test split
    load_weights(model, load_checkpoint(best_path), best_path)
    test = evaluate_split(model, test_set, class_names, config, runtime, "test")
    test["best_epoch"] = best["epoch"]
    if runtime.is_main:
        write_report(test, class_names, out_dir, "test", f"{config.dataset} test, {config.attention}")
        print(format_metrics(test, class_names, f"test (best epoch {best['epoch']})"), file=sys.stderr)
    runtime.barrier()
    return test


def main(argv: Sequence[str] | None = None) -> None:
    """The command: a user error prints one line ``error: ...`` and exits with status 2."""
    run_command(lambda args: train(parse_config(args)), argv)


if __name__ == "__main__":
    main()
