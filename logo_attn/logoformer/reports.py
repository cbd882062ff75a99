"""What a run writes besides checkpoints: metrics of a split, their report files, the epoch log
and the resolved config."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from .config import TrainConfig
from .distributed import Runtime
from .loop import predict
from .metrics import confusion_matrix, format_recalls, per_class_recall, plot_confusion_matrix, uar_war

LOG_FIELDS = ("epoch", "lr", "train_loss", "train_war", "val_loss", "val_uar", "val_war", "seconds")


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
    """``<stem>_metrics.json`` and ``confusion_matrix.png`` (or ``<stem>_confusion_matrix.png``; only with
    matplotlib installed)."""
    (out_dir / f"{stem}_metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    name = "confusion_matrix.png" if stem == "test" else f"{stem}_confusion_matrix.png"
    plot_confusion_matrix(torch.tensor(metrics["confusion_matrix"]), class_names, out_dir / name, title)


def format_metrics(metrics: dict, class_names: Sequence[str], label: str) -> str:
    return (f"{label}: UAR {100 * metrics['uar']:.2f}%  WAR {100 * metrics['war']:.2f}%  "
            f"({metrics['clips']} clips)\n" + format_recalls(torch.tensor(metrics["confusion_matrix"]), class_names))


def write_config(config: TrainConfig, path: Path) -> None:
    """The resolved settings as YAML that ``--config`` reads back: one ``name: value`` line each, the
    value spelt as JSON (a subset of YAML's flow style), so that writing it needs no YAML package."""
    path.write_text("".join(f"{name}: {json.dumps(value)}\n" for name, value in dataclasses.asdict(config).items()))


def append_log(path: Path, row: dict) -> None:
    new = not path.is_file()
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=LOG_FIELDS)
        if new:
            writer.writeheader()
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
