"""`swap_torchvision_attention`: torchvision's Swin window attention (Video Swin's
``ShiftedWindowAttention3d``, Swin's ``ShiftedWindowAttention`` and Swin V2's
``ShiftedWindowAttentionV2``) computed by `local_attention`, with the module's own parameters.

A swapped module keeps its object, its parameters, buffers and attributes; only its class becomes a
subclass of torchvision's whose ``forward`` is the one below, so ``state_dict`` keys and values,
``load_state_dict`` both ways and an optimizer built before the swap are unaffected. torchvision is
imported inside the swap only.

What each forward reproduces of torchvision's:

- Video Swin: a window larger than the grid is clipped to it and that axis's shift dropped, the
  grid is zero-padded to whole (clipped) windows, and a clipped window takes its bias from
  ``relative_position_index[:n, :n]``, the first n slots of the unclipped window, as torchvision
  does (a dense ``(heads, n, n)`` bias; ``true_offsets=True`` adds each pair's own offset instead).
- Swin (2-D): the grid is zero-padded to whole windows, a grid smaller than the window up to one
  full window (never clipped), and an axis whose padded length is the window is not shifted.
- Swin V2: cosine attention, per-head ``exp(min(logit_scale, log 100))`` folded into q; the
  continuous position bias ``16 * sigmoid(cpb_mlp(relative_coords_table))`` computed once per
  forward and passed as the table; the key part of the qkv bias is zero, as torchvision zeroes it.
- Padded tokens are keys, as in torchvision. Pairs of a shifted window from different regions
  are excluded exactly where torchvision adds -100 (see `logo_attn.client_attention`: the same up
  to ``e^-100`` in V1 and Video Swin; in V2 a trained ``logit_scale`` near its clamp makes the
  client give its masked pairs real weight, which the swap does not).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import backends
from .client_attention import padded_window_attention, swap_classes, swapped_subclass
from .geometry import clip_window
from .swin import bias_table_view

__all__ = ["swap_torchvision_attention"]


def _forward_3d(self, x: Tensor) -> Tensor:
    """torchvision's ``ShiftedWindowAttention3d.forward`` on `local_attention`: (B, T, H, W, C)."""
    grid = tuple(x.shape[1:4])
    window = clip_window(grid, self.window_size)
    if self._logo_true_offsets or window == tuple(self.window_size):
        bias = bias_table_view(self.relative_position_bias_table, self.window_size)
    else:  # clipped: torchvision's own slice of the unclipped window's index (a decision on shapes only,
        # so that torch.compile traces it without a graph break)
        slots = window[0] * window[1] * window[2]
        index = self.relative_position_index[:slots, :slots].flatten()
        bias = self.relative_position_bias_table[index].view(slots, slots, -1).permute(2, 0, 1)
    out = padded_window_attention(
        x, self.qkv.weight, self.qkv.bias, self.proj.weight, self.proj.bias, self.num_heads, self.window_size,
        self.shift_size, bias.contiguous(), pad_to=window, scale=_head_scale(self),
        attn_drop=self.attention_dropout, training=self.training, backend=self._logo_backend)
    return F.dropout(out, p=self.dropout, training=self.training)


def _forward_2d(self, x: Tensor) -> Tensor:
    """torchvision's ``ShiftedWindowAttention.forward``: (B, H, W, C)."""
    table = bias_table_view(self.relative_position_bias_table, (1, *self.window_size))
    return _attend_2d(self, x, table, self.qkv.bias, None)


def _forward_2d_v2(self, x: Tensor) -> Tensor:
    """torchvision's ``ShiftedWindowAttentionV2.forward``: (B, H, W, C)."""
    flat = 16 * torch.sigmoid(self.cpb_mlp(self.relative_coords_table).view(-1, self.num_heads))
    qkv_bias = self.qkv.bias
    if qkv_bias is not None:  # torchvision zeroes the key bias (on a copy) on every forward
        length = qkv_bias.numel() // 3
        qkv_bias = torch.cat((qkv_bias[:length], qkv_bias.new_zeros(length), qkv_bias[2 * length:]))
    return _attend_2d(self, x, bias_table_view(flat, (1, *self.window_size)), qkv_bias, self.logit_scale)


def _attend_2d(self, x: Tensor, table: Tensor, qkv_bias: Tensor | None, logit_scale: Tensor | None) -> Tensor:
    window = (1, *self.window_size)
    out = padded_window_attention(
        x.unsqueeze(1), self.qkv.weight, qkv_bias, self.proj.weight, self.proj.bias, self.num_heads, window,
        (0, *self.shift_size), table.contiguous(), pad_to=window, scale=_head_scale(self), logit_scale=logit_scale,
        attn_drop=self.attention_dropout, training=self.training, backend=self._logo_backend)
    return F.dropout(out.squeeze(1), p=self.dropout, training=self.training)


def _head_scale(self) -> float:
    return (self.qkv.in_features // self.num_heads) ** -0.5  # torchvision's (C // num_heads) ** -0.5


@functools.cache
def _swapped_classes() -> dict[type, type]:
    """torchvision's attention class -> its swapped subclass (built once, on first use)."""
    from torchvision.models.swin_transformer import ShiftedWindowAttention, ShiftedWindowAttentionV2
    from torchvision.models.video.swin_transformer import ShiftedWindowAttention3d

    forwards = {ShiftedWindowAttention3d: _forward_3d, ShiftedWindowAttention: _forward_2d,
                ShiftedWindowAttentionV2: _forward_2d_v2}
    return {
        cls: swapped_subclass(cls, __name__, forward=forward)
        for cls, forward in forwards.items()
    }


def swap_torchvision_attention(model: nn.Module, *, true_offsets: bool = False, backend: str = "auto") -> nn.Module:
    """Make every torchvision Swin window attention in `model` (``ShiftedWindowAttention3d`` of
    ``torchvision.models.video.SwinTransformer3d``, ``ShiftedWindowAttention`` /
    ``ShiftedWindowAttentionV2`` of ``torchvision.models.SwinTransformer``) compute with
    `local_attention`, in place, and return `model`.

    The modules stay the same objects with the same parameters (see the module docstring), so load
    pretrained weights before or after. By default the result equals torchvision's up to rounding
    (Swin V2 with saturated logit scales aside: see the module docstring). ``true_offsets=True``
    gives Video Swin's clipped windows the bias of each pair's real offset instead of torchvision's
    ``relative_position_index[:n, :n]`` slice (for training from scratch). Calling it again on a
    swapped model changes `backend` and `true_offsets`. Raises ValueError when `model` holds none.
    """
    backends.check_name(backend)
    return swap_classes(model, _swapped_classes(), {"_logo_backend": backend, "_logo_true_offsets": bool(true_offsets)},
                        f"swap_torchvision_attention: {type(model).__name__} holds no torchvision Swin window attention")
