"""The window attention of a Swin client's module (torchvision's, timm's) computed with its own
weights on `local_attention`: the body both client swaps share.

The clients zero-pad the (normalised) tokens to whole windows, ``torch.roll`` by the shift, copy
the windows out, attend with a gathered ``(heads, T, T)`` bias plus a ``(windows, T, T)`` region
mask, copy back, roll back and crop. `padded_window_attention` pads the same way (so padded tokens
are keys, as there), then makes one `local_attention` call on strided views of the qkv projection
of the padded grid: the windows and the shift are addressed, not copied, and no mask exists.

One difference remains by construction: the clients exclude the pairs of a shifted window that
come from different regions by adding -100 to their scores; here they are excluded exactly. With
dot-product scores (Swin V1, Video Swin) that term weighs ``e^-100`` of a real pair: nothing.
With cosine attention (Swin V2) a score is at most ``logit_scale + 16`` (the clamped per-head scale,
up to 100, plus ``16 * sigmoid`` of the continuous bias), so a trained model's masked pairs can
reach ``+16`` and carry real weight in the client; here they carry none.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import reference
from .geometry import clip_shift, clip_window
from .ops import local_attention

__all__ = ["padded_window_attention", "cosine_logit_scale", "swap_classes", "swapped_subclass"]

# Swin V2 clamps its learned per-head logit scale at log(100) before taking exp.
MAX_LOG_LOGIT_SCALE = math.log(100.0)


def cosine_logit_scale(logit_scale: Tensor) -> Tensor:
    """Swin V2's per-head factor on cosine scores, ``exp(min(logit_scale, log 100))``."""
    return torch.clamp(logit_scale, max=MAX_LOG_LOGIT_SCALE).exp()


def padded_window_attention(
    x: Tensor, qkv_weight: Tensor, qkv_bias: Tensor | None, proj_weight: Tensor, proj_bias: Tensor | None,
    num_heads: int, window: Sequence[int], shift: Sequence[int], bias: Tensor | None, *, pad_to: Sequence[int],
    scale: float | None = None, logit_scale: Tensor | None = None, attn_drop: float = 0.0, training: bool = False,
    backend: str = "auto",
) -> Tensor:
    """``proj(attention(qkv(pad(x))))`` cropped back to x's grid: x ``(B, F, H, W, C)`` -> ``(B, F, H, W, C_out)``.

    Args:
        x: the tokens the client's attention receives (normalised in V1, raw in V2).
        qkv_weight, qkv_bias, proj_weight, proj_bias: the client's projections (qkv's output is
            ``3 * heads * head_dim`` wide, ``(3, heads, head_dim)`` in that order, as every Swin lays it out).
        window, shift: the window and shift as the client's module holds them; `local_attention`
            clips them to the padded grid as the clients do (window to the grid, shift to 0 there).
        bias: ``(heads, 2f-1, 2h-1, 2w-1)`` table of `window`, or a dense ``(heads, T, T)`` bias of
            the clipped window's slots, or None.
        pad_to: the grid is zero-padded at the end of each axis to a multiple of this.
        scale: dot-product scale (ignored with `logit_scale`).
        logit_scale: Swin V2's ``(heads, 1, 1)`` parameter: cosine attention, i.e. q and k
            L2-normalised (``F.normalize``) and q multiplied by `cosine_logit_scale` per head.
        attn_drop: dropout on the attention probabilities while `training` (then computed with the
            PyTorch reference: the kernels have no dropout).
    """
    B, *grid, _ = x.shape
    pad = [-g % p for g, p in zip(grid, pad_to)]
    if any(pad):
        x = F.pad(x, (0, 0, 0, pad[2], 0, pad[1], 0, pad[0]))
    padded = tuple(g + p for g, p in zip(grid, pad))
    qkv = F.linear(x, qkv_weight, qkv_bias)
    inner = qkv.shape[-1] // 3
    # (B, F, H, W, 3*inner) -> three strided (B, N, heads, head_dim) views, no copy
    q, k, v = qkv.reshape(B, math.prod(padded), 3, num_heads, inner // num_heads).unbind(2)
    if logit_scale is not None:
        q = F.normalize(q, dim=-1) * cosine_logit_scale(logit_scale).view(num_heads, 1).to(q.dtype)
        k = F.normalize(k, dim=-1)
        scale = 1.0
    if training and attn_drop > 0:
        clipped = clip_window(padded, window)
        out = reference.local_attention_with_lse(
            q, k, v, padded, clipped, scale, shift=clip_shift(padded, window, shift), bias=bias, dropout_p=attn_drop)[0]
    else:
        out = local_attention(q, k, v, padded, window, shift=shift, bias=bias, scale=scale, backend=backend)
    out = out.view(B, *padded, inner)
    if any(pad):
        out = out[:, : grid[0], : grid[1], : grid[2]]
    return F.linear(out, proj_weight, proj_bias)


def swap_classes(model: nn.Module, classes: dict[type, type], settings: dict[str, object], error: str) -> nn.Module:
    """Give every module of `model` whose exact class is a key of `classes` the swapped subclass it
    maps to (the object, its parameters and buffers stay), and every swapped module `settings` as
    attributes (so a second swap changes them). Raises ValueError(`error`) when there is none."""
    swapped = set(classes.values())
    found = 0
    for module in model.modules():
        if type(module) in classes:
            module.__class__ = classes[type(module)]
        if type(module) in swapped:
            for name, value in settings.items():
                setattr(module, name, value)
            found += 1
    if not found:
        raise ValueError(error)
    return model


def swapped_subclass(cls: type, module: str, **methods) -> type:
    """``LogoAttn<cls>``: `cls` with `methods` replaced, for `swap_classes`; `module` names where it is built."""
    doc = f"{cls.__module__}.{cls.__name__} with its window attention on logo_attn.local_attention."
    return type(f"LogoAttn{cls.__name__}", (cls,), {**methods, "__module__": module, "__doc__": doc})
