"""Checkpoints of a run: what they hold, writing them atomically, reading them back safely.

A checkpoint is a dict of tensors and plain values (``model`` and ``optimizer`` state dicts, the
``config`` as a dict, ``epoch``, ``best``, ``class_names``), so it is read with
``torch.load(weights_only=True)``: a file whose pickle would build other objects (and could run code
while doing so) is refused, never executed.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from .config import MODEL_FIELDS, TrainConfig
from .errors import UsageError

KEYS = ("model", "optimizer", "config", "epoch", "best", "class_names")


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
    """The checkpoint at `path`, checked to be one this application wrote; UsageError otherwise."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"checkpoint {path} is a directory; give the file, e.g. {path / 'best.pt'}")
    if not path.is_file():
        raise UsageError(f"checkpoint {path} does not exist")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "global" in str(error).lower():  # the weights-only unpickler met a class or function to import
            raise UsageError(f"checkpoint {path} holds Python objects other than tensors and plain values; refusing "
                             "to unpickle it (that could run arbitrary code)") from None
        raise UsageError(f"checkpoint {path} is not a readable PyTorch file ({_unpickling_problem(error)})") from None
    except (RuntimeError, EOFError, ValueError, OSError) as error:
        raise UsageError(f"checkpoint {path} is not a readable PyTorch file ({_first_line(error)})") from None
    if not isinstance(saved, dict) or not all(key in saved for key in KEYS) or not isinstance(saved["config"], dict):
        found = sorted(saved) if isinstance(saved, dict) else type(saved).__name__
        raise UsageError(f"checkpoint {path} is not a logo_attn training checkpoint (expected the entries "
                         f"{', '.join(KEYS)}; found {found})")
    return saved


def load_weights(model: nn.Module, saved: dict, path: Path) -> None:
    """The checkpoint's weights into `model`; a checkpoint of another model is a UsageError."""
    try:
        model.load_state_dict(saved["model"])
    except (RuntimeError, KeyError, TypeError) as error:
        raise UsageError(f"checkpoint {path} does not fit the model its settings describe: {_first_line(error)}") from None


def check_same_model(saved: dict, config: TrainConfig, path: Path) -> None:
    differ = [f"{k}: checkpoint {saved[k]!r} vs now {getattr(config, k)!r}"
              for k in MODEL_FIELDS if k in saved and _plain(saved[k]) != _plain(getattr(config, k))]
    if differ:
        raise UsageError(f"{path} was trained with other model settings: " + "; ".join(differ))


def _unpickling_problem(error: BaseException) -> str:
    """The weights-only unpickler's own complaint, without PyTorch's advice to load unsafely."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if "WeightsUnpickler error" in line:
            return " ".join(lines[i + 1:i + 2]) or line
    return lines[0] if lines else type(error).__name__


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _plain(value):
    return list(value) if isinstance(value, (list, tuple)) else value
