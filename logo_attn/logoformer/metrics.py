"""Classification metrics of the DFER literature: UAR, WAR, confusion matrix, per-class recall.

- WAR (weighted average recall) is the overall accuracy: per-class recall weighted by class size.
- UAR (unweighted average recall) is the plain mean of the per-class recalls, over the classes that
  occur in the targets (a class absent from the evaluated set has no recall and is left out, rather
  than counted as 0 or 1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from .optional import optional

__all__ = ["confusion_matrix", "per_class_recall", "uar_war", "plot_confusion_matrix"]


def _labels(values: Tensor | Sequence[int], name: str, num_classes: int) -> Tensor:
    values = torch.as_tensor(values).detach().cpu()
    if values.dim() != 1 or (values.numel() and values.is_floating_point()):
        raise ValueError(f"{name} must be a 1-D sequence of class indices, got {values.dtype} of shape {tuple(values.shape)}")
    values = values.long()
    if values.numel() and (values.min() < 0 or values.max() >= num_classes):
        raise ValueError(f"{name} must lie in [0, {num_classes}), got values from {int(values.min())} to {int(values.max())}")
    return values


def confusion_matrix(preds: Tensor | Sequence[int], targets: Tensor | Sequence[int], num_classes: int) -> Tensor:
    """``(num_classes, num_classes)`` int64 counts; row = true class, column = predicted class."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    preds = _labels(preds, "preds", num_classes)
    targets = _labels(targets, "targets", num_classes)
    if preds.shape != targets.shape:
        raise ValueError(f"preds and targets must have the same length, got {preds.numel()} and {targets.numel()}")
    counts = torch.bincount(targets * num_classes + preds, minlength=num_classes * num_classes)
    return counts.view(num_classes, num_classes)


def per_class_recall(matrix: Tensor) -> Tensor:
    """Recall of each class from a confusion matrix (float64); NaN for a class with no samples."""
    support = matrix.sum(dim=1).double()
    return matrix.diagonal().double() / support  # 0/0 -> NaN for absent classes


def uar_war(preds: Tensor | Sequence[int], targets: Tensor | Sequence[int], num_classes: int) -> tuple[float, float]:
    """(UAR, WAR) as fractions in [0, 1]. UAR averages the recall of the classes present in `targets`."""
    matrix = confusion_matrix(preds, targets, num_classes)
    total = int(matrix.sum())
    if total == 0:
        raise ValueError("uar_war needs at least one sample")
    recall = per_class_recall(matrix)
    uar = float(recall[~recall.isnan()].mean())
    war = float(matrix.diagonal().sum()) / total
    return uar, war


def plot_confusion_matrix(matrix: Tensor, class_names: Sequence[str], path: str | Path, title: str = "") -> Path | None:
    """Write the row-normalised confusion matrix (recall per true class, counts in brackets) as a PNG;
    without matplotlib, warn once and write nothing (None)."""
    n = matrix.shape[0]
    if len(class_names) != n:
        raise ValueError(f"{len(class_names)} class names for a {n}x{n} confusion matrix")
    matplotlib = optional("matplotlib", "no confusion-matrix PNG is written")
    if matplotlib is None:
        return None
    matplotlib.use("Agg")  # no display on training machines
    import matplotlib.pyplot as plt

    support = matrix.sum(dim=1, keepdim=True).clamp(min=1)
    rates = (matrix.double() / support).numpy()
    fig, ax = plt.subplots(figsize=(1.0 + 0.9 * n, 0.8 + 0.8 * n))
    ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(n), class_names, rotation=45, ha="right")
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(n):
        for j in range(n):
            color = "white" if rates[i, j] > 0.5 else "black"
            ax.text(j, i, f"{rates[i, j]:.2f}\n({int(matrix[i, j])})", ha="center", va="center", color=color, fontsize=7)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def format_recalls(matrix: Tensor, class_names: Sequence[str]) -> str:
    """One line per class: name, recall in percent, support."""
    recall = per_class_recall(matrix)
    lines = []
    for name, r, support in zip(class_names, recall.tolist(), matrix.sum(dim=1).tolist()):
        shown = "   n/a" if math.isnan(r) else f"{100 * r:6.2f}"
        lines.append(f"  {name:<10} {shown}%  (n={support})")
    return "\n".join(lines)
