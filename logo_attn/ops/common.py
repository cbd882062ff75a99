"""Plumbing the three ops share: input shape checks, fake-tensor allocation and autograd helpers."""

from __future__ import annotations

import torch
from torch import Tensor
from torch._functorch.utils import unwrap_dead_wrappers
from torch.nn import Parameter

from ..reference import accumulation_dtype


def check_attention_shapes(op: str, q: Tensor, k: Tensor, v: Tensor) -> None:
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


def distinct(*tensors: Tensor | None) -> tuple[Tensor | None, ...]:
    """Replace a tensor passed twice (e.g. k is v) by a view of itself: torch.compile cannot trace an
    autograd.Function that receives the same tensor twice, and a view costs nothing."""
    seen: list[Tensor | None] = []
    for t in tensors:
        seen.append(t.view_as(t) if t is not None and any(t is other for other in seen) else t)
    return tuple(seen)


def lse_like(q: Tensor) -> Tensor:
    """The (B, heads, N) log-sum-exp every backend allocates for q (B, N, heads, d): fp32, fp64 for fp64."""
    return q.new_empty((q.shape[0], q.shape[2], q.shape[1]), dtype=accumulation_dtype(q.dtype))


def differentiable_backward() -> bool:
    """True inside a backward that records a graph (``create_graph=True``, and always under
    torch.func transforms), i.e. when the gradients may themselves be differentiated: the fused
    backward kernels are not differentiable, so the ops then compute their gradients with the
    PyTorch reference's forward and written-out backward, which are."""
    return torch.is_grad_enabled()


def transformed() -> bool:
    """True under torch.compile or a torch.func transform: both intercept Function.apply and ops."""
    return torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active()


def apply(function: type[torch.autograd.Function], *args):
    """``function.apply(*args)`` without the ``inspect.signature`` binding that torch's public
    ``apply`` does on every call of a Function with ``setup_context`` (it only fills in default
    arguments, and the ops' Functions have none): ~60 us a call measured on a 2-core AMD EPYC, more
    than the window-pooling kernel takes at the CPU benchmark's size. Under torch.compile and
    torch.func transforms the public ``apply`` runs, as they intercept it."""
    if transformed():
        return function.apply(*args)
    return super(torch.autograd.Function, function).apply(*unwrap_dead_wrappers(args))


def intercepted(args: tuple) -> bool:
    """True when something may intercept a registered op called on `args`: torch.compile, torch.func
    transforms, a dispatch or function mode (FakeTensorMode, FlopCounterMode, ``with torch.device``,
    selective checkpointing), the profiler, or a tensor subclass (DTensor, ...)."""
    return (
        transformed()
        or torch._C._len_torch_dispatch_stack() > 0
        or torch._C._is_torch_function_mode_enabled()
        or torch._C._autograd._profiler_enabled()
        or any(isinstance(a, Tensor) and type(a) not in (Tensor, Parameter) for a in args)
    )


def call(op, kernel, *args):
    """``op(*args)`` for a registered custom op whose CPU/CUDA kernel is the Python function `kernel`;
    when nothing intercepts the op, `kernel(*args)` directly. The dispatcher's way to a Python kernel
    (autograd fallback, redispatch, the torch.compile-disable wrapper) costs ~130 us a call on a
    2-core AMD EPYC, more than window pooling takes at the CPU benchmark's size, and only the
    interceptors need it."""
    return op(*args) if intercepted(args) else kernel(*args)
