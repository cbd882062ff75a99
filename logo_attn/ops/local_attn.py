"""local_attention: attention of each token over the tokens of its own window of the token grid.

The contract is `local_attention`'s docstring; `logo_attn.reference.local_attention` defines the
maths, `logo_attn.geometry` the windows (shifted ones included); the kernels are
`kernels/local_attn.py` (Triton), `csrc/cpu/local_attn_kernel.cpp` and `csrc/cuda/local_attn.cu`;
the tests are tests/test_local_attn.py and the benchmark rows ``bench_ops.py --ops local``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Optional

import torch
from torch import Tensor
from torch.utils.flop_counter import register_flop_formula

from .. import backends, reference
from ..checks import as_grid, as_scale, as_shift, as_window, check_tensors
from ..flops import attention_flops
from ..geometry import NO_SHIFT, attended_pairs, bias_table_shape, clip_shift, clip_window
from .common import apply, call, check_attention_shapes, differentiable_backward, distinct, lse_like

__all__ = ["local_attention", "LocalAttnFunction"]


def _local_attn_fwd(
    q: Tensor, k: Tensor, v: Tensor, grid: Sequence[int], window: Sequence[int], shift: Sequence[int],
    bias: Optional[Tensor], scale: float, backend: str,
) -> tuple[Tensor, Tensor]:
    return backends.module_for(backend, q).local_attn_fwd(q, k, v, grid, window, shift, bias, scale)


local_attn_fwd = torch.library.custom_op("logo_attn::local_attn_fwd", _local_attn_fwd, mutates_args=())


@local_attn_fwd.register_fake
def _(q, k, v, grid, window, shift, bias, scale, backend):
    return q.new_empty(q.shape), lse_like(q)


def _local_attn_bwd(
    dout: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, grid: Sequence[int],
    window: Sequence[int], shift: Sequence[int], bias: Optional[Tensor], scale: float, bias_grad: bool, backend: str,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(dq, dk, dv, dbias); dbias is an empty tensor unless `bias` is given and `bias_grad` is set."""
    dq, dk, dv, dbias = backends.module_for(backend, q).local_attn_bwd(dout, q, k, v, out, lse, grid, window, shift, bias, scale, bias_grad)
    return dq, dk, dv, q.new_empty(0) if dbias is None else dbias


local_attn_bwd = torch.library.custom_op("logo_attn::local_attn_bwd", _local_attn_bwd, mutates_args=())


@local_attn_bwd.register_fake
def _(dout, q, k, v, out, lse, grid, window, shift, bias, scale, bias_grad, backend):
    dbias = bias.new_empty(bias.shape) if bias is not None and bias_grad else q.new_empty(0)
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape), dbias


class LocalAttnFunction(torch.autograd.Function):
    """Autograd for local attention: saves q, k, v, out, lse (and the bias table); backward is one
    fused op. A backward that records a graph (second derivatives, torch.func.grad) computes the
    gradients through the reference instead, as a differentiable expression."""

    @staticmethod
    def forward(q, k, v, grid, window, shift, bias, scale, backend):
        return call(torch.ops.logo_attn.local_attn_fwd, _local_attn_fwd, q, k, v, grid, window, shift, bias, scale,
                    backend)

    @staticmethod
    def setup_context(ctx, inputs, output):
        q, k, v, grid, window, shift, bias, scale, backend = inputs
        out, lse = output
        ctx.save_for_backward(q, k, v, out, lse, bias)
        ctx.mark_non_differentiable(lse)
        ctx.args = (grid, window, shift, scale, backend)

    @staticmethod
    def backward(ctx, dout, _dlse):
        q, k, v, out, lse, bias = ctx.saved_tensors
        grid, window, shift, scale, backend = ctx.args
        wanted = (*ctx.needs_input_grad[:3], ctx.needs_input_grad[6])
        if differentiable_backward():
            dq, dk, dv, dbias = _reference_grads(dout, q, k, v, bias, grid, window, shift, scale, wanted)
        else:
            dq, dk, dv, dbias = call(torch.ops.logo_attn.local_attn_bwd, _local_attn_bwd, dout, q, k, v, out, lse,
                                     grid, window, shift, bias, scale, wanted[3], backend)
        return dq, dk, dv, None, None, None, dbias if wanted[3] else None, None, None


def _reference_grads(dout, q, k, v, bias, grid, window, shift, scale, wanted):
    """The gradients as a differentiable expression of the inputs (for second derivatives and for
    torch.func transforms): the reference's forward and its written-out backward, plain torch ops."""
    out, lse = reference.local_attn_fwd(q, k, v, grid, window, shift, bias, scale)
    grads = reference.local_attn_bwd(dout, q, k, v, out, lse, grid, window, shift, bias, scale, wanted[3])
    return tuple(g if want else None for g, want in zip(grads, wanted))


def local_attention(
    q: Tensor, k: Tensor, v: Tensor, grid: Sequence[int] | None, window: Sequence[int], *,
    shift: Sequence[int] = NO_SHIFT, bias: Tensor | None = None, scale: float | None = None, backend: str = "auto",
) -> Tensor:
    """Attention of each token over the tokens of its own f x h x w window of the F x H x W grid.

    Token i attends token j iff they lie in the same window; along each axis the window boundaries
    are the cuts ``s, s + w, s + 2w, ...`` of the shift ``s``, i.e. coordinate t lies in window
    ``(t + (w - s) % w) // w``. With no shift the windows are ``t // w``; a window need not divide the
    grid (border windows are smaller, masked exactly, no padding tokens), and a window larger than
    the grid is clipped to it (that axis's shift is then 0, as in Swin). On a grid divisible by the
    window, a shift gives exactly Swin's shifted windows (SW-MSA: cyclic shift by -s plus the region
    mask), without a roll or a mask tensor; on other grids each token attends only real tokens of
    its window where Swin would also attend zero padding.

    Args:
        q, k, v: ``(B, N, heads, head_dim)`` with N = F*H*W tokens in row-major (F, H, W) order, any
            strides (e.g. ``qkv.unbind(2)`` views of one packed projection); or ``(B, F, H, W, heads,
            head_dim)``, in which case ``grid`` may be None and the output has that shape too.
        grid: ``(F, H, W)``.
        window: ``(f, h, w)``.
        shift: ``(sf, sh, sw)`` with ``0 <= s < window`` per axis (Swin's ``shift_size``).
        bias: optional, added to the scores; q's dtype or float32 (float64 for float64 q);
            differentiable, with a deterministic gradient. Either a relative-position table
            ``(heads, 2f-1, 2h-1, 2w-1)`` (Swin's ``relative_position_bias_table`` reshaped) for the
            window as given (before clipping): pair (i, j) gets
            ``bias[head, t_i - t_j + f - 1, y_i - y_j + h - 1, x_i - x_j + w - 1]``; or a dense
            ``(heads, T, T)`` bias shared by every window, T = f*h*w of the window clipped to the
            grid: pair (i, j) gets ``bias[head, slot_i, slot_j]``, a slot being the row-major index
            of a token's coordinates relative to the start of its nominal (unclipped, f x h x w)
            window, which for a leading partial window starts before the grid (so on a divisible
            grid with a shift the slots are Swin's roll-and-partition slots). This is what Swin code
            bases add on clipped windows (``table[relative_position_index[:T, :T]]``).
        scale: softmax scale, ``head_dim ** -0.5`` by default.
        backend: "auto", "triton", "cuda", "cpu" or "torch" (see ``logo_attn.available_backends()``).

    Returns:
        ``(B, N, heads, head_dim)`` in the input dtype (fp32 accumulation, fp64 for fp64).

    Autograd: first and second derivatives (the second through the PyTorch reference).
    """
    op = "local_attention"
    check_tensors(op, q=q, k=k, v=v)
    grid_shape = None
    if q.dim() == 6:
        grid_shape = tuple(q.shape[1:4])
        if grid is not None and as_grid(grid) != grid_shape:
            raise ValueError(f"{op}: grid {tuple(grid)} does not match the 6-D input's grid {grid_shape}")
        for name, t in (("k", k), ("v", v)):
            if t.shape != q.shape:
                raise ValueError(f"{op}: {name} must have q's shape {tuple(q.shape)}, got {tuple(t.shape)}")
        grid = grid_shape
        q, k, v = (t.flatten(1, 3) for t in (q, k, v))
    elif grid is None:
        raise TypeError(f"{op}: grid is required for 4-D inputs (B, N, heads, head_dim)")
    grid = as_grid(grid)
    asked = as_window(window)
    shift = clip_shift(grid, asked, as_shift(shift, asked))
    window = clip_window(grid, asked)
    check_attention_shapes(op, q, k, v)
    tokens = grid[0] * grid[1] * grid[2]
    for name, t in (("q", q), ("k", k)):
        if t.shape[1] != tokens:
            raise ValueError(f"{op}: {name} has {t.shape[1]} tokens but grid {grid} has F*H*W = {tokens}")
    if bias is not None:
        _check_bias(op, bias, q, grid, asked)
    backends.check_name(backend)
    q, k, v, bias = distinct(q, k, v, bias)
    out, _ = apply(LocalAttnFunction, q, k, v, list(grid), list(window), list(shift), bias,
                   as_scale(scale, q.shape[-1], op), backend)
    return out if grid_shape is None else out.unflatten(1, grid_shape)


def _check_bias(op: str, bias: Tensor, q: Tensor, grid: Sequence[int], window: Sequence[int]) -> None:
    """`window` as the user gave it (the table's window); a dense bias follows the clipped one."""
    if not isinstance(bias, Tensor):
        raise TypeError(f"{op}: bias must be a torch.Tensor or None, got {type(bias).__name__}")
    allowed = (q.dtype, reference.accumulation_dtype(q.dtype))
    if bias.dtype not in allowed:
        raise TypeError(f"{op}: bias must be {' or '.join(map(str, dict.fromkeys(allowed)))} for {q.dtype} q, "
                        f"got {bias.dtype}")
    if bias.device != q.device:
        raise ValueError(f"{op}: bias is on {bias.device} but q is on {q.device}; they must match")
    heads = q.shape[2]
    if bias.dim() == 3:
        clipped = clip_window(grid, window)
        slots = math.prod(clipped)
        if tuple(bias.shape) != (heads, slots, slots):
            raise ValueError(
                f"{op}: a dense bias must be (heads, T, T) = {(heads, slots, slots)}: T = f*h*w = {slots} slots of "
                f"window {tuple(window)} clipped to grid {tuple(grid)} as {tuple(clipped)}, got shape {tuple(bias.shape)}")
        return
    expected = (heads, *bias_table_shape(window))
    if tuple(bias.shape) != expected:
        raise ValueError(f"{op}: bias must be a (heads, 2f-1, 2h-1, 2w-1) = {expected} table for window "
                         f"{tuple(window)} or a dense (heads, T, T) bias, got shape {tuple(bias.shape)}")


@register_flop_formula(torch.ops.logo_attn.local_attn_fwd)
def _local_attn_fwd_flops(q_shape, k_shape, v_shape, grid, window, shift, *args, out_shape=None, **kwargs) -> int:
    batch, _, heads, head_dim = q_shape
    return attention_flops(attended_pairs(grid, window, shift), batch, heads, head_dim)


@register_flop_formula(torch.ops.logo_attn.local_attn_bwd)
def _local_attn_bwd_flops(dout_shape, q_shape, k_shape, v_shape, out_shape_, lse_shape, grid, window, shift, *args,
                          out_shape=None, **kwargs) -> int:
    batch, _, heads, head_dim = q_shape
    return attention_flops(attended_pairs(grid, window, shift), batch, heads, head_dim, backward=True)
