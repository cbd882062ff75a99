"""Swin-style 3-D window attention (W-MSA / SW-MSA with a relative-position bias) on `local_attention`,
and the swap that puts it into MONAI's SwinUNETR / SwinTransformer.

Swin-style backbones (Video Swin, Swin-UNETR) compute their window attention in eager PyTorch:
zero-pad the grid to whole windows, ``torch.roll`` by the shift, copy the windows out, attend with a
``(windows, T, T)`` region mask and a gathered bias, copy back, roll back, crop. `WindowAttention3D`
takes the block's un-partitioned ``(B, D, H, W, C)`` tokens and does all of it with one
`local_attention` call on strided views of the qkv projection: the windows and the shift are
addressed, not copied, and no mask tensor exists.

Parameters and buffers carry MONAI's names and layouts (``qkv``, ``proj``,
``relative_position_bias_table`` of shape ``((2f-1)(2h-1)(2w-1), heads)``,
``relative_position_index``), so state_dicts load both ways without a name mapping. MONAI's
``relative_position_index`` is the standard Swin index: entry ``(i, j)`` is the flat index of the
offset ``query - key`` in the ``(2f-1, 2h-1, 2w-1)`` box, so the op's ``(heads, 2f-1, 2h-1, 2w-1)``
table is the flat table transposed and reshaped (`bias_table_view`).

Where the results differ from MONAI's (see also ``swap_monai_attention``):

- Grids the window does not divide. MONAI zero-pads the grid after ``norm1``, so the padded tokens
  are keys whose value is the qkv bias. With ``zero_pad=True`` this module does the same (one pad
  copy, then the op on the padded grid: equal to MONAI); with ``zero_pad=False`` each token attends
  only the real tokens of its window (the op's own semantics, no padding).
Windows clipped to a smaller grid: MONAI (like torchvision and Video Swin) then biases the pairs
with ``relative_position_index[:n, :n]``, the first n slots of the *unclipped* window in row-major
order. Those are the clipped window's tokens only when every axis before a clipped axis has length 1
in the clipped window (e.g. when only the first axis is clipped); otherwise most pairs get the bias
of another offset than their own (SwinUNETR's last stage at 96^3 inputs: 6x6x6 tokens, window 7).
Pretrained weights were trained with that function, so by default this module computes it too: on a
clipped window it passes ``table[index[:n, :n]]`` as the op's dense ``(heads, n, n)`` bias. With
``true_offsets=True`` it adds each pair's real offset instead (for training from scratch), and
`SwinBlock3D` warns where that differs from MONAI.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils import checkpoint

from . import backends, reference
from .checks import as_shift, as_window, check_attention_dropout, check_heads
from .geometry import NO_SHIFT, bias_table_shape, clip_shift, clip_window
from .ops import local_attention

__all__ = ["WindowAttention3D", "SwinBlock3D", "SwinStage3D", "bias_table_view", "swap_monai_attention"]


def bias_table_view(table: Tensor, window: Sequence[int]) -> Tensor:
    """Swin's flat ``((2f-1)(2h-1)(2w-1), heads)`` relative-position table as the op's
    ``(heads, 2f-1, 2h-1, 2w-1)`` table: entry ``[head, dt+f-1, dy+h-1, dx+w-1]`` is row
    ``((dt+f-1)(2h-1) + dy+h-1)(2w-1) + dx+w-1`` of the flat table (offsets ``d = query - key``)."""
    return table.t().reshape(table.shape[1], *bias_table_shape(window))


class WindowAttention3D(nn.Module):
    """Multi-head self-attention inside (shifted) 3-D windows with Swin's relative-position bias.

    ``forward(x)`` maps ``(B, D, H, W, dim)`` tokens to the same shape: ``proj(attention(qkv(x)))``
    where each token attends the tokens of its ``window_size`` window, the windows cut at
    ``shift_size, shift_size + window_size, ...`` along each axis (Swin's cyclic shift by
    ``-shift_size`` plus its region mask, on a divisible grid), with
    ``relative_position_bias_table`` added to the scores. A window larger than the grid is clipped to
    it and that axis's shift dropped (MONAI's ``get_window_size``). No normalisation and no residual:
    this is the part of a Swin block between ``norm1`` and the residual add.

    Argument names follow MONAI's ``WindowAttention`` and ``SwinTransformerBlock``. The kernels have
    no attention dropout, so while training with ``attn_drop > 0`` the attention is computed with the
    PyTorch reference (as `logo_attn.LocalGlobalAttention` does).

    Args:
        dim: token width; ``dim % num_heads == 0``.
        num_heads: attention heads.
        window_size: ``(f, h, w)``.
        shift_size: ``(sf, sh, sw)``, ``0 <= s < window`` (Swin shifts odd blocks by ``window // 2``).
        qkv_bias: bias in the qkv projection.
        attn_drop, proj_drop: dropout on the attention probabilities and on the output projection.
        zero_pad: on a grid the window does not divide, attend zero-padded tokens as MONAI and Swin
            do (True), or only the real tokens of each window (False).
        true_offsets: on a window clipped to a smaller grid, bias each pair by its real offset
            (True) instead of MONAI's ``relative_position_index[:n, :n]`` (False, MONAI's function).
        backend: op backend, see ``logo_attn.available_backends()``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: Sequence[int],
        shift_size: Sequence[int] = NO_SHIFT,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        zero_pad: bool = False,
        backend: str = "auto",
        true_offsets: bool = False,
    ) -> None:
        super().__init__()
        self.num_heads = check_heads(dim, num_heads)
        backends.check_name(backend)
        self.dim = dim
        self.window_size = as_window(window_size, "window_size")
        self.shift_size = as_shift(shift_size, self.window_size, "shift_size")
        self.scale = (dim // num_heads) ** -0.5
        self.attn_drop = check_attention_dropout(attn_drop, backend)
        self.zero_pad = zero_pad
        self.true_offsets = true_offsets
        self.backend = backend
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros(math.prod(bias_table_shape(self.window_size)), num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        # Read on clipped windows only (MONAI's [:n, :n] slice; the op takes other offsets from
        # coordinates); kept so that state_dicts load strictly both ways with MONAI's and Video Swin's.
        self.register_buffer("relative_position_index",
                             reference.relative_position_index(self.window_size, self.window_size))
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, D, H, W, dim) -> (B, D, H, W, dim)."""
        if not isinstance(x, Tensor) or x.dim() != 5 or x.shape[-1] != self.dim:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"WindowAttention3D: x must be (B, D, H, W, dim={self.dim}), got {shape}")
        B, *grid, C = x.shape
        grid = tuple(grid)
        pad = self._padding(grid) if self.zero_pad else (0, 0, 0)
        if any(pad):
            x = F.pad(x, (0, 0, 0, pad[2], 0, pad[1], 0, pad[0]))
        padded = tuple(g + p for g, p in zip(grid, pad))
        # (B, D, H, W, 3*dim) -> three strided (B, N, heads, head_dim) views, no copy
        q, k, v = self.qkv(x).reshape(B, math.prod(padded), 3, self.num_heads, C // self.num_heads).unbind(2)
        out = self._attend(q, k, v, padded).view(B, *padded, C)
        if any(pad):
            out = out[:, : grid[0], : grid[1], : grid[2]]
        return self.proj_drop(self.proj(out))

    def _padding(self, grid: tuple[int, ...]) -> tuple[int, ...]:
        """Zero tokens appended per axis to reach whole (clipped) windows, as MONAI pads."""
        return tuple(-g % w for g, w in zip(grid, clip_window(grid, self.window_size)))

    def _bias(self, grid: tuple[int, ...]) -> Tensor:
        """The op's bias for this grid: the offset table, or on a clipped window (unless
        true_offsets) MONAI's ``table[relative_position_index[:n, :n]]`` as a dense (heads, n, n) bias."""
        window = clip_window(grid, self.window_size)
        if self.true_offsets or tuple(window) == self.window_size:
            # A few thousand numbers: a contiguous copy costs nothing and every backend reads it.
            return bias_table_view(self.relative_position_bias_table, self.window_size).contiguous()
        n = math.prod(window)
        index = self.relative_position_index[:n, :n].reshape(-1)
        return self.relative_position_bias_table[index].view(n, n, self.num_heads).permute(2, 0, 1)

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, grid: tuple[int, ...]) -> Tensor:
        bias = self._bias(grid)
        if self.training and self.attn_drop > 0:
            window = clip_window(grid, self.window_size)
            shift = clip_shift(grid, self.window_size, self.shift_size)
            return reference.local_attention_with_lse(q, k, v, grid, window, self.scale, shift=shift, bias=bias,
                                                      dropout_p=self.attn_drop)[0]
        return local_attention(q, k, v, grid, self.window_size, shift=self.shift_size, bias=bias, scale=self.scale,
                               backend=self.backend)

    @classmethod
    def from_monai(cls, attn: nn.Module, shift_size: Sequence[int] = NO_SHIFT, zero_pad: bool = False,
                   backend: str = "auto", true_offsets: bool = False) -> WindowAttention3D:
        """The module computing MONAI's ``WindowAttention`` (3-D) with its very parameters and buffer
        (shared, not copied: an optimizer built before the swap keeps training them)."""
        window = tuple(attn.window_size)
        if len(window) != 3:
            raise ValueError(f"WindowAttention3D.from_monai: a 3-D window is needed, got window_size {window}")
        with torch.device("meta"):  # the fresh parameters are replaced below: do not allocate them
            new = cls(attn.dim, attn.num_heads, window, shift_size, qkv_bias=attn.qkv.bias is not None,
                      attn_drop=attn.attn_drop.p, proj_drop=attn.proj_drop.p, zero_pad=zero_pad, backend=backend,
                      true_offsets=true_offsets)
        new.relative_position_bias_table = attn.relative_position_bias_table
        new.relative_position_index = attn.relative_position_index
        new.qkv, new.proj, new.proj_drop = attn.qkv, attn.proj, attn.proj_drop
        return new.train(attn.training)


@functools.cache
def monai_bias_differs(grid: tuple[int, int, int], window: tuple[int, int, int]) -> bool:
    """True when MONAI's ``relative_position_index[:n, :n]`` for the window clipped to `grid` is not
    the index of the clipped window's real offsets, i.e. where ``true_offsets=True`` differs from MONAI."""
    clipped = clip_window(grid, window)
    n = math.prod(clipped)
    sliced = reference.relative_position_index(window, window)[:n, :n]
    return not torch.equal(sliced, reference.relative_position_index(clipped, window))


class SwinBlock3D(nn.Module):
    """MONAI's ``SwinTransformerBlock`` (3-D) with its attention part (pad, roll, window partition,
    masked attention, window reverse, roll back, crop) replaced by one `WindowAttention3D` call:

        x = x + drop_path(attn(norm1(x)))
        x = x + drop_path(mlp(norm2(x)))

    on ``(B, D, H, W, C)`` tokens. The submodules are MONAI's own (``norm1``, ``drop_path``,
    ``norm2``, ``mlp``), so the state_dict keys are those of the MONAI block. ``use_checkpoint``
    recomputes each half in backward as MONAI does.
    """

    def __init__(self, norm1: nn.Module, attn: WindowAttention3D, drop_path: nn.Module, norm2: nn.Module,
                 mlp: nn.Module, use_checkpoint: bool = False) -> None:
        super().__init__()
        self.norm1, self.attn, self.drop_path, self.norm2, self.mlp = norm1, attn, drop_path, norm2, mlp
        self.use_checkpoint = use_checkpoint

    @classmethod
    def from_monai(cls, block: nn.Module, zero_pad: bool = True, backend: str = "auto",
                   true_offsets: bool = False) -> SwinBlock3D:
        """The same block with its attention swapped; parameters shared with `block`."""
        attn = WindowAttention3D.from_monai(block.attn, block.shift_size, zero_pad, backend, true_offsets)
        new = cls(block.norm1, attn, block.drop_path, block.norm2, block.mlp, block.use_checkpoint)
        return new.train(block.training)

    def attention_part(self, x: Tensor) -> Tensor:
        """MONAI's ``forward_part1``: attention of the normalised tokens, before drop_path and residual."""
        return self.attn(self.norm1(x))

    def mlp_part(self, x: Tensor) -> Tensor:
        """MONAI's ``forward_part2``."""
        return self.drop_path(self.mlp(self.norm2(x)))

    def forward(self, x: Tensor, mask_matrix: Tensor | None = None) -> Tensor:
        """x: (B, D, H, W, C). `mask_matrix` (MONAI's region mask) is accepted so that the block also
        runs inside an unswapped MONAI ``BasicLayer``, and ignored: the windows come from the shift."""
        grid = tuple(x.shape[1:4])
        if (self.attn.true_offsets and x.dim() == 5 and not torch.compiler.is_compiling()
                and monai_bias_differs(grid, self.attn.window_size)):
            warnings.warn(
                f"grid {grid} clips window {self.attn.window_size} so that MONAI's relative_position_index[:n, :n] "
                "no longer indexes the tokens' own offsets; with true_offsets=True this block adds the bias of their "
                "real offsets, so its output differs from MONAI's WindowAttention here",
                stacklevel=1,  # the caller is nn.Module's dispatch: pointing here says more
            )
        if self.use_checkpoint:
            x = x + self.drop_path(checkpoint.checkpoint(self.attention_part, x, use_reentrant=False))
            return x + checkpoint.checkpoint(self.mlp_part, x, use_reentrant=False)
        x = x + self.drop_path(self.attention_part(x))
        return x + self.mlp_part(x)


class SwinStage3D(nn.Module):
    """MONAI's ``BasicLayer`` (one stage: the blocks, then the optional downsampling) for swapped
    blocks: ``(B, C, D, H, W) -> (B, C', D', H', W')`` without the ``(windows, T, T)`` region mask the
    original builds on every forward (for 96^3 SwinUNETR inputs, window 7: (343, 343, 343) fp32 at the
    first stage, 161 MB)."""

    def __init__(self, blocks: nn.ModuleList, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.blocks = blocks
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        x = x.permute(0, 2, 3, 4, 1)  # channels last, as the blocks take it
        for block in self.blocks:
            x = block(x)
        if self.downsample is not None:
            x = self.downsample(x)
        return x.permute(0, 4, 1, 2, 3)


def swap_monai_attention(model: nn.Module, *, zero_pad: bool = True, true_offsets: bool = False,
                         backend: str = "auto") -> nn.Module:
    """Replace, in place, the window attention of every 3-D MONAI ``SwinTransformerBlock`` in `model`
    (a ``SwinUNETR``, a ``SwinTransformer``, a ``BasicLayer``, a block, or any module holding them)
    by `SwinBlock3D`, and every ``BasicLayer`` of such blocks by `SwinStage3D`. Weights are kept:
    the new modules hold the very same parameters, so state_dict keys and values are unchanged and an
    optimizer built before the swap still updates them. Returns `model` (or its replacement, when
    `model` itself is a block or a layer).

    By default the swapped model computes what MONAI computes, up to rounding, on every grid: the
    zero padding of grids the window does not divide, and on windows clipped to a smaller grid
    MONAI's ``relative_position_index[:n, :n]`` bias. Deviations are opt-in: ``zero_pad=False``
    (border windows attend only real tokens), ``true_offsets=True`` (clipped windows add each pair's
    real offset; `SwinBlock3D` warns where that differs from MONAI). Load pretrained weights (``load_from``, ``load_state_dict``) before or after the swap:
    ``load_from`` needs the MONAI blocks, so call it before; ``load_state_dict`` works either way.
    2-D Swin blocks are left as they are. MONAI is imported here, not at module import.
    """
    from monai.networks.nets.swin_unetr import BasicLayer, SwinTransformerBlock

    backends.check_name(backend)
    swapped = 0

    def is_3d_block(module: nn.Module) -> bool:
        return isinstance(module, SwinTransformerBlock) and len(module.window_size) == 3

    def swap(module: nn.Module) -> nn.Module:
        nonlocal swapped
        if is_3d_block(module):
            swapped += 1
            return SwinBlock3D.from_monai(module, zero_pad, backend, true_offsets)
        if isinstance(module, BasicLayer) and len(module.blocks) and all(map(is_3d_block, module.blocks)):
            blocks = nn.ModuleList(swap(block) for block in module.blocks)
            return SwinStage3D(blocks, module.downsample).train(module.training)
        for name, child in module.named_children():
            new = swap(child)
            if new is not child:
                setattr(module, name, new)
        return module

    result = swap(model)
    if not swapped:
        raise ValueError(f"swap_monai_attention: {type(model).__name__} holds no 3-D MONAI SwinTransformerBlock")
    return result
