"""Checkpoints of a run: what they hold, writing them atomically, reading them back safely.

A checkpoint is a dict of tensors and plain values (``model`` and ``optimizer`` state dicts, the
``config`` as a dict, ``epoch``, ``best``, ``class_names``), so it is read with
``torch.load(weights_only=True)``: a file whose pickle would build other objects (and could run code
while doing so) is refused, never executed.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from .config import MODEL_FIELDS, TrainConfig
from .errors import UsageError
from .torch_files import load_torch_file

KEYS = ("model", "optimizer", "config", "epoch", "best", "class_names")
BEST_KEYS = ("epoch", "val_uar", "val_war")


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
    """The checkpoint at `path`, checked to be one this application wrote; UsageError otherwise
    (FileNotFoundError when there is no such file). Reads it with `load_torch_file`: nothing in the
    file runs, whatever its bytes."""
    path = Path(path)
    saved = load_torch_file(path, "checkpoint")
    if not isinstance(saved, dict) or not all(key in saved for key in KEYS):
        found = sorted(map(str, saved)) if isinstance(saved, dict) else f"a {type(saved).__name__}"
        raise UsageError(f"checkpoint {path} is not a logo_attn training checkpoint (expected the entries "
                         f"{', '.join(KEYS)}; found {found})")
    wrong = [f"{key} ({problem})" for key, problem in _entry_problems(saved)]
    if wrong:
        raise UsageError(f"checkpoint {path} is not a logo_attn training checkpoint: wrong entries " + "; ".join(wrong))
    return saved


def _entry_problems(saved: dict):
    """(entry, what is wrong) for each entry of a loaded checkpoint that is not what `save_checkpoint` writes."""
    model = saved["model"]
    if not isinstance(model, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in model.items()):
        yield "model", "not a state_dict of tensors"
    for key in ("optimizer", "config"):
        if not isinstance(saved[key], dict):
            yield key, f"a {type(saved[key]).__name__}, not a dict"
    epoch = saved["epoch"]
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
        yield "epoch", f"{epoch!r}, not a count of epochs"
    best = saved["best"]
    if not isinstance(best, dict) or not all(key in best for key in BEST_KEYS):
        yield "best", f"expected a dict with {', '.join(BEST_KEYS)}"
    names = saved["class_names"]
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        yield "class_names", "not a list of strings"


def load_weights(model: nn.Module, saved: dict, path: Path) -> None:
    """The checkpoint's weights into `model`; a checkpoint of another model is a UsageError."""
    try:
        model.load_state_dict(saved["model"])
    except Exception as error:  # noqa: BLE001 - the file's contents decide what load_state_dict raises
        raise UsageError(f"checkpoint {path} does not fit the model its settings describe: {_gist(error)}") from None


def load_optimizer_state(optimizer: torch.optim.Optimizer, saved: dict, path: Path) -> None:
    """The checkpoint's optimizer state into `optimizer`; one of another optimizer is a UsageError."""
    try:
        optimizer.load_state_dict(saved["optimizer"])
    except Exception as error:  # noqa: BLE001 - as in load_weights
        raise UsageError(f"checkpoint {path} does not fit the optimizer its settings describe: {_gist(error)}") from None


def check_same_model(saved: dict, config: TrainConfig, path: Path) -> None:
    differ = [f"{k}: checkpoint {saved[k]!r} vs now {getattr(config, k)!r}"
              for k in MODEL_FIELDS if k in saved and _plain(saved[k]) != _plain(getattr(config, k))]
    if differ:
        raise UsageError(f"{path} was trained with other model settings: " + "; ".join(differ))


def _gist(error: BaseException) -> str:
    """The first two lines of an error (load_state_dict's second line names the first bad key)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return " ".join(lines[:2]) if lines else type(error).__name__


def _plain(value):
    return list(value) if isinstance(value, (list, tuple)) else value
