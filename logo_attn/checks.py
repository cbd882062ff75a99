"""Argument checks of the public API (ops and layers): every refusal names the argument and says
what was expected.

Integers are accepted from anything ``operator.index`` accepts (Python and NumPy integers,
``torch.SymInt`` under ``torch.compile``), reals from anything ``numbers.Real`` covers (NumPy
floats included); bools are refused where a number is meant.
"""

from __future__ import annotations

import math
import numbers
import operator
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def as_int(value: object, name: str) -> int:
    """An integer from anything index-like (int, numpy.int64, SymInt); bools and floats refused."""
    if isinstance(value, bool) or isinstance(value, Tensor):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if isinstance(value, (int, torch.SymInt)):  # as is: operator.index would specialise a SymInt
        return value
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})") from None


def as_triple(value: object, name: str, meaning: str, minimum: int = 1) -> tuple[int, int, int]:
    """Three ints >= minimum, e.g. a grid (F, H, W) or a window (f, h, w); a 1-D NumPy array works too."""
    if type(value) in (tuple, list) and len(value) == 3 and all(type(item) is int for item in value):
        if min(value) >= minimum:  # the common case, without the general path's per-item checks
            return tuple(value)
    if isinstance(value, np.ndarray) and value.ndim == 1:
        value = tuple(value)
    if isinstance(value, (Tensor, str, bytes)) or not isinstance(value, Sequence) or len(value) != 3:
        raise TypeError(f"{name} must be a sequence of 3 ints {meaning}, got {value!r}")
    items = tuple(as_int(item, f"{name} {meaning}") for item in value)
    if any(item < minimum for item in items):
        raise ValueError(f"{name} {meaning} entries must be >= {minimum}, got {items!r}")
    return items


def as_grid(grid: object, name: str = "grid") -> tuple[int, int, int]:
    return as_triple(grid, name, "(F, H, W)")


def as_window(window: object, name: str = "window") -> tuple[int, int, int]:
    return as_triple(window, name, "(f, h, w)")


def as_shift(shift: object, window: Sequence[int], name: str = "shift") -> tuple[int, int, int]:
    """Three ints with 0 <= shift < window on every axis."""
    shift = as_triple(shift, name, "(sf, sh, sw)", minimum=0)
    if any(s >= w for s, w in zip(shift, window)):
        raise ValueError(f"{name} {shift} must be smaller than the window {tuple(window)} on every axis")
    return shift


def as_scale(scale: object, head_dim: int, op: str) -> float:
    """The softmax scale: ``head_dim ** -0.5`` when None, else any finite real number."""
    if scale is None:
        return head_dim**-0.5
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not math.isfinite(float(scale)):
        raise TypeError(f"{op}: scale must be a finite real number or None, got {scale!r}")
    return float(scale)


def check_tensors(op: str, **named: Tensor) -> None:
    """Tensors of one floating dtype on one device."""
    for name, t in named.items():
        if not isinstance(t, Tensor):
            raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype not in FLOAT_DTYPES:
            raise TypeError(f"{op}: {name} must be float16, bfloat16, float32 or float64, got {t.dtype}")
    (first_name, first), *others = named.items()
    for name, t in others:
        if t.dtype != first.dtype:
            raise TypeError(f"{op}: {name} has dtype {t.dtype} but {first_name} has {first.dtype}; they must match")
        if t.device != first.device:
            raise ValueError(f"{op}: {name} is on {t.device} but {first_name} is on {first.device}; they must match")


def check_heads(dim: object, num_heads: object) -> int:
    """num_heads >= 1 dividing dim >= 1; returns num_heads."""
    dim, num_heads = as_int(dim, "dim"), as_int(num_heads, "num_heads")
    if dim < 1 or num_heads < 1:
        raise ValueError(f"dim and num_heads must be >= 1, got dim={dim}, num_heads={num_heads}")
    if dim % num_heads:
        raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
    return num_heads


def check_prefix_tokens(value: object) -> int:
    count = as_int(value, "num_prefix_tokens")
    if count < 0:
        raise ValueError(f"num_prefix_tokens must be >= 0, got {count}")
    return count


def check_attention_dropout(attn_drop: object, backend: str) -> float:
    """attn_drop in [0, 1]. No kernel drops attention probabilities, so a layer trains with the
    PyTorch reference while attn_drop > 0; an explicitly chosen kernel backend is told so once."""
    if isinstance(attn_drop, bool) or not isinstance(attn_drop, numbers.Real) or not 0 <= float(attn_drop) <= 1:
        raise ValueError(f"attn_drop must be a probability in [0, 1], got {attn_drop!r}")
    if attn_drop > 0 and backend not in ("auto", "torch"):
        warnings.warn(
            f"attn_drop={attn_drop}: backend {backend!r} has no attention dropout, so training steps "
            "compute attention with the PyTorch reference; evaluation uses the kernels",
            stacklevel=3,
        )
    return float(attn_drop)
