"""The training loop: one optimisation step, predictions over a split, the learning-rate schedule."""

from __future__ import annotations

import math
import sys

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from ..distributed import TimeSharding
from .config import TrainConfig
from .distributed import Runtime
from .optim import SAM, frozen_bn_stats
from .optional import optional

OPTIMIZER_CLASSES = {"sgd": torch.optim.SGD, "adamw": torch.optim.AdamW}


def train_step(model: nn.Module, clips: Tensor, targets: Tensor, criterion: nn.Module,
               optimizer: torch.optim.Optimizer, runtime: Runtime, cp: TimeSharding | None = None
               ) -> tuple[Tensor, Tensor]:
    """One optimisation step; returns the (detached) loss and logits of the first forward pass.

    With `SAM` both passes are ordinary (DDP-synchronised) forward/backward passes, so the
    perturbation uses the global gradient (see `logo_attn.optim`); the second forward leaves the
    BatchNorm running statistics alone. With `cp` (context parallelism) `clips` are this rank's
    frames and the model, DDP over every rank, returns the clip's logits on each rank of its group.
    """
    forward = {} if cp is None else {"cp": cp}
    with runtime.autocast():
        logits = model(clips, **forward)
        loss = criterion(logits, targets)
    loss.backward()
    if isinstance(optimizer, SAM):
        optimizer.first_step(zero_grad=True)
        with frozen_bn_stats(model), runtime.autocast():
            criterion(model(clips, **forward), targets).backward()
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
    for clips, labels in progress_bar(loader, progress and runtime.is_main, desc):
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


def progress_bar(iterable, enabled: bool, desc: str):
    """`iterable` behind a tqdm bar on stderr; the plain iterable when disabled or without tqdm."""
    tqdm = optional("tqdm", "there is no progress bar") if enabled else None
    if tqdm is None:
        return iterable
    return tqdm.tqdm(iterable, desc=desc, leave=False, dynamic_ncols=True, file=sys.stderr)


def lr_factor(config: TrainConfig, epoch: float) -> float:
    """Linear warm-up over `warmup_epochs`, then cosine decay to 0 at `epochs` (per-step granularity)."""
    if epoch < config.warmup_epochs:
        return (epoch + 1e-3) / config.warmup_epochs
    span = max(1e-9, config.epochs - config.warmup_epochs)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (epoch - config.warmup_epochs) / span)))


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """SAM around `config.optimizer` (or the optimizer alone when rho = 0), with the CNN stem (trunk
    and 1x1 projection) in its own parameter group at ``lr * backbone_lr_scale``.

    Why the scale: trained from scratch at the transformer's rate, the stem learns to shrink the
    tokens' content long before attention has found anything to use it for, and the run stalls at
    chance (measured on the synthetic clips; docs/training.md). Each group's ``lr_scale`` multiplies
    the schedule (`lr_factor`).
    """
    stem, rest = [], []
    for name, parameter in model.named_parameters():
        (stem if name.startswith(("backbone.", "embed.")) else rest).append(parameter)
    groups = [{"params": stem, "lr_scale": config.backbone_lr_scale}, {"params": rest, "lr_scale": 1.0}]
    kwargs = dict(lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "sgd":
        kwargs["momentum"] = config.momentum
    if config.rho > 0:
        return SAM(groups, OPTIMIZER_CLASSES[config.optimizer], rho=config.rho, **kwargs)
    return OPTIMIZER_CLASSES[config.optimizer](groups, **kwargs)
