"""The public ops: argument checks, registered custom ops, autograd and FLOP formulas.

Each op is a pair of ``torch.library.custom_op``s, forward and backward, with fakes allocating what
every backend allocates (contiguous outputs, log-sum-exp in fp32, fp64 for fp64), glued by a
``torch.autograd.Function``. The ``backend`` string is a schema argument resolved inside the op on
real tensors (`logo_attn.backends`), so a new backend plugs in without a new code path and the ops
stay opaque to ``torch.compile`` whatever runs underneath.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor
from torch.utils.flop_counter import register_flop_formula

from . import backends
from .flops import attention_flops, local_attention_pairs
from .reference import accumulation_dtype, num_windows

__all__ = ["local_attention", "global_attention", "window_pool"]

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


# --------------------------------------------------------------------------------------------------
# Argument checks (DESIGN §1): every message names the argument and what was expected.
# --------------------------------------------------------------------------------------------------


def as_triple(value: object, name: str) -> tuple[int, int, int]:
    """A (F, H, W)-like triple of positive ints."""
    if isinstance(value, Tensor) or not isinstance(value, Sequence) or len(value) != 3:
        raise TypeError(f"{name} must be a sequence of 3 ints (F, H, W), got {value!r}")
    for item in value:
        if isinstance(item, bool) or not isinstance(item, (int, torch.SymInt)):
            raise TypeError(f"{name} must hold ints, got {value!r}")
    if any(item < 1 for item in value):
        raise ValueError(f"{name} entries must be >= 1, got {tuple(value)!r}")
    return tuple(value)


def _tensors(op: str, **named: Tensor) -> None:
    """Shared checks: tensors, floating dtypes that match, one device."""
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


def _attention_shapes(op: str, q: Tensor, k: Tensor, v: Tensor) -> None:
    """(B, N, heads, d) inputs whose batch, heads and head_dim agree, with one key per value."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dim() != 4:
            raise ValueError(f"{op}: {name} must be 4-D (B, N, heads, head_dim), got shape {tuple(t.shape)}")
    for axis, what in ((0, "batch size"), (2, "heads"), (3, "head_dim")):
        if not q.shape[axis] == k.shape[axis] == v.shape[axis]:
            raise ValueError(
                f"{op}: q, k and v must have the same {what} (dim {axis}), "
                f"got {q.shape[axis]}, {k.shape[axis]}, {v.shape[axis]}"
            )
    if k.shape[1] != v.shape[1]:
        raise ValueError(f"{op}: k and v must have the same number of tokens, got {k.shape[1]} and {v.shape[1]}")
    if q.shape[3] < 1 or k.shape[1] < 1:
        raise ValueError(f"{op}: head_dim and the number of keys must be >= 1, got shapes {tuple(q.shape)}, {tuple(k.shape)}")


def _scale(scale: object, head_dim: int, op: str) -> float:
    if scale is None:
        return head_dim**-0.5
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise TypeError(f"{op}: scale must be a finite float or None, got {scale!r}")
    return float(scale)


def clip_window(grid: Sequence[int], window: Sequence[int]) -> tuple[int, int, int]:
    """A window larger than the grid is clipped to it (DESIGN §1)."""
    return tuple(min(w, g) for w, g in zip(window, grid))


def _distinct(*tensors: Tensor) -> tuple[Tensor, ...]:
    """Replace a tensor passed twice (e.g. k is v) by a view of itself: torch.compile cannot trace an
    autograd.Function that receives the same tensor twice, and a view costs nothing."""
    seen: list[Tensor] = []
    for t in tensors:
        seen.append(t.view_as(t) if any(t is other for other in seen) else t)
    return tuple(seen)


def _lse_like(q: Tensor, heads: int, tokens: int) -> Tensor:
    return q.new_empty((q.shape[0], heads, tokens), dtype=accumulation_dtype(q.dtype))


# --------------------------------------------------------------------------------------------------
# local_attention
# --------------------------------------------------------------------------------------------------


@torch.library.custom_op("logo_attn::local_attn_fwd", mutates_args=())
def local_attn_fwd(
    q: Tensor, k: Tensor, v: Tensor, grid: Sequence[int], window: Sequence[int], scale: float, backend: str
) -> tuple[Tensor, Tensor]:
    module = backends.module_for(backend, q)
    if module.__name__ == "logo_attn._cpp":  # already on the shift/bias protocol; the others follow
        return module.local_attn_fwd(q, k, v, grid, window, (0, 0, 0), None, scale)
    return module.local_attn_fwd(q, k, v, grid, window, scale)


@local_attn_fwd.register_fake
def _(q, k, v, grid, window, scale, backend):
    return q.new_empty(q.shape), _lse_like(q, q.shape[2], q.shape[1])


@torch.library.custom_op("logo_attn::local_attn_bwd", mutates_args=())
def local_attn_bwd(
    dout: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor,
    grid: Sequence[int], window: Sequence[int], scale: float, backend: str,
) -> tuple[Tensor, Tensor, Tensor]:
    module = backends.module_for(backend, q)
    if module.__name__ == "logo_attn._cpp":  # already on the shift/bias protocol; the others follow
        return module.local_attn_bwd(dout, q, k, v, out, lse, grid, window, (0, 0, 0), None, scale, False)[:3]
    return module.local_attn_bwd(dout, q, k, v, out, lse, grid, window, scale)


@local_attn_bwd.register_fake
def _(dout, q, k, v, out, lse, grid, window, scale, backend):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


class LocalAttnFunction(torch.autograd.Function):
    """Autograd for local attention: saves q, k, v, out and lse; backward is one fused op."""

    @staticmethod
    def forward(q, k, v, grid, window, scale, backend):
        return torch.ops.logo_attn.local_attn_fwd(q, k, v, grid, window, scale, backend)

    @staticmethod
    def setup_context(ctx, inputs, output):
        q, k, v, grid, window, scale, backend = inputs
        out, lse = output
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.mark_non_differentiable(lse)
        ctx.args = (grid, window, scale, backend)

    @staticmethod
    def backward(ctx, dout, _dlse):
        q, k, v, out, lse = ctx.saved_tensors
        dq, dk, dv = torch.ops.logo_attn.local_attn_bwd(dout, q, k, v, out, lse, *ctx.args)
        return dq, dk, dv, None, None, None, None


def local_attention(
    q: Tensor, k: Tensor, v: Tensor, grid: Sequence[int] | None, window: Sequence[int], *,
    scale: float | None = None, backend: str = "auto",
) -> Tensor:
    """Attention of each token over the tokens of its own f x h x w window of the F x H x W grid.

    Args:
        q, k, v: ``(B, N, heads, head_dim)`` with N = F*H*W tokens in row-major (F, H, W) order, any
            strides (e.g. ``qkv.unbind(2)`` views of one packed projection); or ``(B, F, H, W, heads,
            head_dim)``, in which case ``grid`` may be None and the output has that shape too.
        grid: ``(F, H, W)``.
        window: ``(f, h, w)``. Need not divide the grid (border windows are smaller, masked exactly);
            a window larger than the grid is clipped to it.
        scale: softmax scale, ``head_dim ** -0.5`` by default.
        backend: "auto", "triton", "cuda", "cpu" or "torch" (see ``logo_attn.available_backends()``).

    Returns:
        ``(B, N, heads, head_dim)`` in the input dtype (fp32 accumulation, fp64 for fp64).
    """
    op = "local_attention"
    _tensors(op, q=q, k=k, v=v)
    grid_shape = None
    if q.dim() == 6:
        grid_shape = tuple(q.shape[1:4])
        if grid is not None and tuple(as_triple(grid, "grid")) != grid_shape:
            raise ValueError(f"{op}: grid {tuple(grid)} does not match the 6-D input's grid {grid_shape}")
        for name, t in (("k", k), ("v", v)):
            if t.shape != q.shape:
                raise ValueError(f"{op}: {name} must have q's shape {tuple(q.shape)}, got {tuple(t.shape)}")
        grid = grid_shape
        q, k, v = (t.flatten(1, 3) for t in (q, k, v))
    elif grid is None:
        raise TypeError(f"{op}: grid is required for 4-D inputs (B, N, heads, head_dim)")
    grid = as_triple(grid, "grid")
    window = clip_window(grid, as_triple(window, "window"))
    _attention_shapes(op, q, k, v)
    tokens = grid[0] * grid[1] * grid[2]
    for name, t in (("q", q), ("k", k)):
        if t.shape[1] != tokens:
            raise ValueError(f"{op}: {name} has {t.shape[1]} tokens but grid {tuple(grid)} has F*H*W = {tokens}")
    backends.check_name(backend)
    q, k, v = _distinct(q, k, v)
    out, _ = LocalAttnFunction.apply(q, k, v, list(grid), list(window), _scale(scale, q.shape[-1], op), backend)
    return out if grid_shape is None else out.unflatten(1, grid_shape)


@register_flop_formula(torch.ops.logo_attn.local_attn_fwd)
def _local_attn_fwd_flops(q_shape, k_shape, v_shape, grid, window, *args, out_shape=None, **kwargs) -> int:
    batch, _, heads, head_dim = q_shape
    return attention_flops(local_attention_pairs(grid, window), batch, heads, head_dim)


@register_flop_formula(torch.ops.logo_attn.local_attn_bwd)
def _local_attn_bwd_flops(dout_shape, q_shape, k_shape, v_shape, out_shape_, lse_shape, grid, window, *args,
                          out_shape=None, **kwargs) -> int:
    batch, _, heads, head_dim = q_shape
    return attention_flops(local_attention_pairs(grid, window), batch, heads, head_dim, backward=True)


# --------------------------------------------------------------------------------------------------
# global_attention
# --------------------------------------------------------------------------------------------------


@torch.library.custom_op("logo_attn::global_attn_fwd", mutates_args=())
def global_attn_fwd(q: Tensor, k: Tensor, v: Tensor, scale: float, backend: str) -> tuple[Tensor, Tensor]:
    return backends.module_for(backend, q).global_attn_fwd(q, k, v, scale)


@global_attn_fwd.register_fake
def _(q, k, v, scale, backend):
    return q.new_empty(q.shape), _lse_like(q, q.shape[2], q.shape[1])


@torch.library.custom_op("logo_attn::global_attn_bwd", mutates_args=())
def global_attn_bwd(
    dout: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, scale: float, backend: str
) -> tuple[Tensor, Tensor, Tensor]:
    return backends.module_for(backend, q).global_attn_bwd(dout, q, k, v, out, lse, scale)


@global_attn_bwd.register_fake
def _(dout, q, k, v, out, lse, scale, backend):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


class GlobalAttnFunction(torch.autograd.Function):
    """Autograd for global attention: saves q, k, v, out and lse; backward is one fused op."""

    @staticmethod
    def forward(q, k, v, scale, backend):
        return torch.ops.logo_attn.global_attn_fwd(q, k, v, scale, backend)

    @staticmethod
    def setup_context(ctx, inputs, output):
        q, k, v, scale, backend = inputs
        out, lse = output
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.mark_non_differentiable(lse)
        ctx.args = (scale, backend)

    @staticmethod
    def backward(ctx, dout, _dlse):
        q, k, v, out, lse = ctx.saved_tensors
        dq, dk, dv = torch.ops.logo_attn.global_attn_bwd(dout, q, k, v, out, lse, *ctx.args)
        return dq, dk, dv, None, None


def global_attention(
    q: Tensor, k: Tensor, v: Tensor, *, scale: float | None = None, backend: str = "auto"
) -> Tensor:
    """Softmax attention of Nq queries over a short key set: ``softmax(q k^T * scale) v``.

    Args:
        q: ``(B, Nq, heads, head_dim)``; k, v: ``(B, Nk, heads, head_dim)``, any strides. The layer
            passes every token as a query and the prefix tokens plus the pooled windows as keys.
        scale: softmax scale, ``head_dim ** -0.5`` by default.
        backend: "auto", "triton", "cuda", "cpu" or "torch".

    Returns:
        ``(B, Nq, heads, head_dim)`` in the input dtype.
    """
    op = "global_attention"
    _tensors(op, q=q, k=k, v=v)
    _attention_shapes(op, q, k, v)
    backends.check_name(backend)
    q, k, v = _distinct(q, k, v)
    out, _ = GlobalAttnFunction.apply(q, k, v, _scale(scale, q.shape[-1], op), backend)
    return out


@register_flop_formula(torch.ops.logo_attn.global_attn_fwd)
def _global_attn_fwd_flops(q_shape, k_shape, *args, out_shape=None, **kwargs) -> int:
    batch, queries, heads, head_dim = q_shape
    return attention_flops(queries * k_shape[1], batch, heads, head_dim)


@register_flop_formula(torch.ops.logo_attn.global_attn_bwd)
def _global_attn_bwd_flops(dout_shape, q_shape, k_shape, *args, out_shape=None, **kwargs) -> int:
    batch, queries, heads, head_dim = q_shape
    return attention_flops(queries * k_shape[1], batch, heads, head_dim, backward=True)


# --------------------------------------------------------------------------------------------------
# window_pool (no FLOP formula: it has no attended pairs, and PyTorch counts no pooling FLOPs either)
# --------------------------------------------------------------------------------------------------


@torch.library.custom_op("logo_attn::window_pool_fwd", mutates_args=())
def window_pool_fwd(x: Tensor, grid: Sequence[int], window: Sequence[int], backend: str) -> Tensor:
    return backends.module_for(backend, x, head_dim=0).window_pool_fwd(x, grid, window)


@window_pool_fwd.register_fake
def _(x, grid, window, backend):
    return x.new_empty((x.shape[0], math.prod(num_windows(grid, window)), x.shape[2]))


@torch.library.custom_op("logo_attn::window_pool_bwd", mutates_args=())
def window_pool_bwd(dout: Tensor, grid: Sequence[int], window: Sequence[int], backend: str) -> Tensor:
    return backends.module_for(backend, dout, head_dim=0).window_pool_bwd(dout, grid, window)


@window_pool_bwd.register_fake
def _(dout, grid, window, backend):
    return dout.new_empty((dout.shape[0], math.prod(grid), dout.shape[2]))


class WindowPoolFunction(torch.autograd.Function):
    """Autograd for window pooling: backward spreads each window's gradient over its tokens."""

    @staticmethod
    def forward(x, grid, window, backend):
        return torch.ops.logo_attn.window_pool_fwd(x, grid, window, backend)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, grid, window, backend = inputs
        ctx.args = (grid, window, backend)

    @staticmethod
    def backward(ctx, dout):
        return torch.ops.logo_attn.window_pool_bwd(dout, *ctx.args), None, None, None


def window_pool(x: Tensor, grid: Sequence[int], window: Sequence[int], *, backend: str = "auto") -> Tensor:
    """Mean of the tokens of each f x h x w window of the F x H x W grid.

    Args:
        x: ``(B, F*H*W, C)``, grid tokens in row-major (F, H, W) order, any strides.
        grid: ``(F, H, W)``; window: ``(f, h, w)``, clipped to the grid.

    Returns:
        ``(B, M, C)`` with M = ceil(F/f) * ceil(H/h) * ceil(W/w) windows in row-major order; a border
        window averages only its own tokens.
    """
    op = "window_pool"
    _tensors(op, x=x)
    if x.dim() != 3:
        raise ValueError(f"{op}: x must be 3-D (B, F*H*W, C), got shape {tuple(x.shape)}")
    grid = as_triple(grid, "grid")
    window = clip_window(grid, as_triple(window, "window"))
    tokens = grid[0] * grid[1] * grid[2]
    if x.shape[1] != tokens:
        raise ValueError(f"{op}: x has {x.shape[1]} tokens but grid {tuple(grid)} has F*H*W = {tokens}")
    backends.check_name(backend)
    return WindowPoolFunction.apply(x, list(grid), list(window), backend)
