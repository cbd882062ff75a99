"""global_attention: plain softmax attention of every query over a short key set.

The contract is `global_attention`'s docstring; `logo_attn.reference.global_attention` defines the
maths; the kernels are `kernels/global_attn.py` (Triton), `csrc/cpu/global_attn_kernel.cpp` (with
`global_attn_few_keys_{fwd,bwd}.cpp` for up to 32 keys) and `csrc/cuda/global_attn.cu`; the tests
are tests/test_global_attn.py and the benchmark rows ``bench_ops.py --ops global``.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.flop_counter import register_flop_formula

from .. import backends, reference
from ..checks import as_scale, check_tensors
from ..flops import attention_flops
from .common import apply, call, check_attention_shapes, differentiable_backward, distinct, lse_like

__all__ = ["global_attention", "GlobalAttnFunction"]


def _global_attn_fwd(q: Tensor, k: Tensor, v: Tensor, scale: float, backend: str) -> tuple[Tensor, Tensor]:
    return backends.module_for(backend, q).global_attn_fwd(q, k, v, scale)


global_attn_fwd = torch.library.custom_op("logo_attn::global_attn_fwd", _global_attn_fwd, mutates_args=())


@global_attn_fwd.register_fake
def _(q, k, v, scale, backend):
    return q.new_empty(q.shape), lse_like(q)


def _global_attn_bwd(
    dout: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, scale: float, backend: str
) -> tuple[Tensor, Tensor, Tensor]:
    return backends.module_for(backend, q).global_attn_bwd(dout, q, k, v, out, lse, scale)


global_attn_bwd = torch.library.custom_op("logo_attn::global_attn_bwd", _global_attn_bwd, mutates_args=())


@global_attn_bwd.register_fake
def _(dout, q, k, v, out, lse, scale, backend):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


class GlobalAttnFunction(torch.autograd.Function):
    """Autograd for global attention: saves q, k, v, out and lse; backward is one fused op. A
    backward that records a graph (second derivatives, torch.func.grad) computes the gradients
    through the reference instead, as a differentiable expression."""

    @staticmethod
    def forward(q, k, v, scale, backend):
        return call(torch.ops.logo_attn.global_attn_fwd, _global_attn_fwd, q, k, v, scale, backend)

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
        scale, backend = ctx.args
        if differentiable_backward():  # the reference's forward and written-out backward: plain torch ops
            out, lse = reference.global_attn_fwd(q, k, v, scale)
            dq, dk, dv = reference.global_attn_bwd(dout, q, k, v, out, lse, scale)
        else:
            dq, dk, dv = call(torch.ops.logo_attn.global_attn_bwd, _global_attn_bwd, dout, q, k, v, out, lse, scale,
                              backend)
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

    Autograd: first and second derivatives (the second through the PyTorch reference).
    """
    op = "global_attention"
    check_tensors(op, q=q, k=k, v=v)
    check_attention_shapes(op, q, k, v)
    backends.check_name(backend)
    q, k, v = distinct(q, k, v)
    out, _ = apply(GlobalAttnFunction, q, k, v, as_scale(scale, q.shape[-1], op), backend)
    return out


@register_flop_formula(torch.ops.logo_attn.global_attn_fwd)
def _global_attn_fwd_flops(q_shape, k_shape, *args, out_shape=None, **kwargs) -> int:
    batch, queries, heads, head_dim = q_shape
    return attention_flops(queries * k_shape[1], batch, heads, head_dim)


@register_flop_formula(torch.ops.logo_attn.global_attn_bwd)
def _global_attn_bwd_flops(dout_shape, q_shape, k_shape, *args, out_shape=None, **kwargs) -> int:
    batch, queries, heads, head_dim = q_shape
    return attention_flops(queries * k_shape[1], batch, heads, head_dim, backward=True)
