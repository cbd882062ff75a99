"""`swap_timm_attention`: the window attention of timm's Swin blocks
(``timm.models.swin_transformer.SwinTransformerBlock`` and
``timm.models.swin_transformer_v2.SwinTransformerV2Block``) computed by `local_attention`, with the
blocks' own parameters.

timm does the window attention in the block (``_attn``: roll, pad, partition, the attention module
on the windows with the block's region mask, reverse, crop, roll back). A swapped block keeps its
object, parameters, buffers and attributes; its class becomes a subclass of timm's whose ``_attn``
makes one `local_attention` call, so ``state_dict``, ``load_state_dict`` both ways,
``set_input_size`` and an optimizer built before the swap are unaffected. timm is imported inside
the swap only.

timm rolls the grid *before* padding it to whole windows. On a grid the window divides that is
Swin's shifted windows, which the op computes exactly (every default configuration: timm clips the
window to the feature size unless ``always_partition``). On an axis that is shifted but not
divisible by the window, or shifted and exactly one window long (``always_partition=True`` on a
small grid), timm's windows wrap around the edge of the grid: not windows the op can cut. There a
swapped block warns once per grid and runs timm's own ``_attn`` unchanged. Unshifted blocks on
such grids are computed by the op (zero padding at the end, padded tokens attended as in timm).

Swin V2 (cosine attention, continuous position bias, ``q_bias``/``v_bias`` with a zero key bias):
as in `logo_attn.swap_torchvision`; timm's masked pairs get -100 too, so the same remark on
saturated logit scales holds (`logo_attn.client_attention`).
"""

from __future__ import annotations

import functools
import warnings

import torch
from torch import Tensor, nn

from . import backends
from .client_attention import padded_window_attention, swap_classes, swapped_subclass
from .swin import bias_table_view

__all__ = ["swap_timm_attention", "cut_windows_match"]


def cut_windows_match(grid: tuple[int, ...], window: tuple[int, ...], shift: tuple[int, ...]) -> bool:
    """True when timm's roll-then-pad windows on `grid` are windows cut at the shift: every shifted
    axis is a multiple of the window, and longer than one window."""
    return all(s == 0 or (g % w == 0 and g > w) for g, w, s in zip(grid, window, shift))


def _attn(self, x: Tensor) -> Tensor:
    """timm's block ``_attn`` on `local_attention`: (B, H, W, C) -> (B, H, W, C)."""
    grid, window, shift = tuple(x.shape[1:3]), tuple(self.window_size), tuple(self.shift_size)
    if not cut_windows_match(grid, window, shift):
        if not torch.compiler.is_compiling():
            warnings.warn(
                f"grid {grid} is shifted by {shift} but not cut into whole windows {window}: timm rolls before "
                "padding, so its windows wrap around the edge, which local_attention cannot express; this block "
                "runs timm's own window attention", stacklevel=2)
        return self._logo_client_attn(x)
    attn = self.attn
    if hasattr(attn, "cpb_mlp"):  # Swin V2
        flat = 16 * torch.sigmoid(attn.cpb_mlp(attn.relative_coords_table).view(-1, attn.num_heads))
        qkv_bias = None if attn.q_bias is None else torch.cat((attn.q_bias, attn.k_bias, attn.v_bias))
        logit_scale, scale = attn.logit_scale, None
    else:
        flat, qkv_bias, logit_scale, scale = attn.relative_position_bias_table, attn.qkv.bias, None, attn.scale
    out = padded_window_attention(
        x.unsqueeze(1), attn.qkv.weight, qkv_bias, attn.proj.weight, attn.proj.bias, attn.num_heads, (1, *window),
        (0, *shift), bias_table_view(flat, (1, *window)).contiguous(), pad_to=(1, *window), scale=scale,
        logit_scale=logit_scale, attn_drop=attn.attn_drop.p, training=self.training, backend=self._logo_backend)
    return attn.proj_drop(out.squeeze(1))


@functools.cache
def _swapped_classes() -> dict[type, type]:
    """timm's block class -> its swapped subclass (built once, on first use)."""
    from timm.models.swin_transformer import SwinTransformerBlock
    from timm.models.swin_transformer_v2 import SwinTransformerV2Block

    return {
        cls: swapped_subclass(cls, __name__, _attn=_attn, _logo_client_attn=cls._attn)
        for cls in (SwinTransformerBlock, SwinTransformerV2Block)
    }


def swap_timm_attention(model: nn.Module, *, backend: str = "auto") -> nn.Module:
    """Make every timm Swin / Swin V2 block in `model` (a ``SwinTransformer``, a
    ``SwinTransformerV2``, a stage, a block) compute its window attention with `local_attention`, in
    place, and return `model`. Parameters and state_dict are unchanged (see the module docstring);
    the result equals timm's up to rounding wherever the windows are cut windows
    (`cut_windows_match`), and elsewhere the block warns and runs timm's code. Calling it again
    changes `backend`. Raises ValueError when `model` holds no such block.
    """
    backends.check_name(backend)
    return swap_classes(model, _swapped_classes(), {"_logo_backend": backend},
                        f"swap_timm_attention: {type(model).__name__} holds no timm Swin block")
