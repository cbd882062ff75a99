"""Pure-PyTorch definitions of the three ops: the oracle every backend is tested against.

Everything here works for any floating dtype (float64 included, so `gradcheck` runs on it) and any
strides, and accumulates in ``torch.promote_types(dtype, torch.float32)`` unless a caller asks for a
lower ``compute_dtype`` (the tests do, to measure what plain PyTorch loses in fp16/bf16).

The local op never builds an N x N mask: the grid is zero-padded to whole windows, partitioned into
``(B, windows, tokens_per_window, ...)``, attended inside each window with a mask on the padded keys,
and un-partitioned. Memory therefore grows with N * window, which is also what a careful user would
write around ``F.scaled_dot_product_attention``.

The module doubles as the ``"torch"`` backend: it exposes the backend protocol
(``local_attn_fwd``/``local_attn_bwd``, ``global_attn_*``, ``window_pool_*``) that
``logo_attn.ops`` calls, with the backward written out from the saved log-sum-exp.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

Grid = Sequence[int]


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp32 for fp16/bf16/fp32 inputs, fp64 for fp64: the dtype of sums and of the log-sum-exp."""
    return torch.promote_types(dtype, torch.float32)


def num_windows(grid: Grid, window: Grid) -> tuple[int, int, int]:
    """Windows along (F, H, W); a border window that does not fill `window` still counts."""
    return tuple(-(-g // w) for g, w in zip(grid, window))


# --------------------------------------------------------------------------------------------------
# Window partition: (B, F*H*W, *rest) <-> (B, windows, f*h*w, *rest), zero-padded at the borders.
# --------------------------------------------------------------------------------------------------


def window_partition(x: Tensor, grid: Grid, window: Grid) -> Tensor:
    """Split grid tokens into windows: (B, F*H*W, *rest) -> (B, M, f*h*w, *rest).

    Windows are in row-major (F, H, W) order, tokens inside a window in row-major (f, h, w) order.
    Border windows are padded with zeros; `window_token_mask` says which entries are real.
    """
    B, rest = x.shape[0], x.shape[2:]
    (Fg, Hg, Wg), (f, h, w) = grid, window
    nf, nh, nw = num_windows(grid, window)
    x = x.reshape(B, Fg, Hg, Wg, *rest)
    pad = [0, 0] * len(rest) + [0, nw * w - Wg, 0, nh * h - Hg, 0, nf * f - Fg]
    if any(pad):
        x = F.pad(x, pad)
    x = x.reshape(B, nf, f, nh, h, nw, w, *rest)
    tail = tuple(range(7, 7 + len(rest)))
    x = x.permute(0, 1, 3, 5, 2, 4, 6, *tail)
    return x.reshape(B, nf * nh * nw, f * h * w, *rest)


def window_unpartition(x: Tensor, grid: Grid, window: Grid) -> Tensor:
    """Inverse of `window_partition`: (B, M, f*h*w, *rest) -> (B, F*H*W, *rest), padding dropped."""
    B, rest = x.shape[0], x.shape[3:]
    (Fg, Hg, Wg), (f, h, w) = grid, window
    nf, nh, nw = num_windows(grid, window)
    x = x.reshape(B, nf, nh, nw, f, h, w, *rest)
    tail = tuple(range(7, 7 + len(rest)))
    x = x.permute(0, 1, 4, 2, 5, 3, 6, *tail).reshape(B, nf * f, nh * h, nw * w, *rest)
    return x[:, :Fg, :Hg, :Wg].reshape(B, Fg * Hg * Wg, *rest)


def window_token_mask(grid: Grid, window: Grid, device: torch.device | str | None = None) -> Tensor:
    """Bool (M, f*h*w): True where a window slot holds a real grid token (False for padding)."""
    (Fg, Hg, Wg), (f, h, w) = grid, window
    nf, nh, nw = num_windows(grid, window)
    t = torch.arange(nf * f, device=device) < Fg
    y = torch.arange(nh * h, device=device) < Hg
    x = torch.arange(nw * w, device=device) < Wg
    valid = t[:, None, None] & y[None, :, None] & x[None, None, :]  # over the padded grid
    return window_partition(valid.reshape(1, -1), valid.shape, window)[0]


# --------------------------------------------------------------------------------------------------
# The ops.
# --------------------------------------------------------------------------------------------------


def _softmax_attention(
    q: Tensor, k: Tensor, v: Tensor, scale: float, key_mask: Tensor | None, compute_dtype: torch.dtype,
    dropout_p: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """softmax(q k^T * scale) v over the last two dims of (..., Lq, d) x (..., Lk, d); returns (out, lse)."""
    scores = torch.matmul(q.to(compute_dtype), k.to(compute_dtype).transpose(-1, -2)) * scale
    if key_mask is not None:
        scores = scores.masked_fill(~key_mask, float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)
    p = torch.exp(scores - lse.unsqueeze(-1))
    if dropout_p > 0.0:
        p = F.dropout(p, dropout_p)
    return torch.matmul(p, v.to(compute_dtype)), lse


def local_attention_with_lse(
    q: Tensor, k: Tensor, v: Tensor, grid: Grid, window: Grid, scale: float | None = None, *,
    compute_dtype: torch.dtype | None = None, dropout_p: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """Windowed attention on (B, N, heads, d) inputs; returns out (B, N, heads, d) and lse (B, heads, N).

    `window` must already be clipped to `grid` (the public op does that). `lse` is in the compute dtype.
    """
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    compute_dtype = compute_dtype or accumulation_dtype(q.dtype)
    # (B, M, T, heads, d) -> (B, M, heads, T, d)
    qw, kw, vw = (window_partition(t, grid, window).transpose(2, 3) for t in (q, k, v))
    key_mask = window_token_mask(grid, window, q.device)[None, :, None, None, :]  # (1, M, 1, 1, T)
    out, lse = _softmax_attention(qw, kw, vw, scale, key_mask, compute_dtype, dropout_p)
    out = window_unpartition(out.transpose(2, 3), grid, window)  # (B, N, heads, d)
    lse = window_unpartition(lse.transpose(2, 3), grid, window)  # (B, N, heads)
    return out.to(q.dtype).contiguous(), lse.transpose(1, 2).contiguous()


def global_attention_with_lse(
    q: Tensor, k: Tensor, v: Tensor, scale: float | None = None, *,
    compute_dtype: torch.dtype | None = None, dropout_p: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """softmax(q k^T * scale) v for q (B, Nq, heads, d), k/v (B, Nk, heads, d); returns out and lse (B, heads, Nq)."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    compute_dtype = compute_dtype or accumulation_dtype(q.dtype)
    out, lse = _softmax_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), scale, None, compute_dtype, dropout_p
    )
    return out.transpose(1, 2).to(q.dtype).contiguous(), lse.contiguous()


def local_attention(q: Tensor, k: Tensor, v: Tensor, grid: Grid, window: Grid, scale: float | None = None) -> Tensor:
    """Reference of `logo_attn.local_attention` (window already clipped to the grid)."""
    return local_attention_with_lse(q, k, v, grid, window, scale)[0]


def global_attention(q: Tensor, k: Tensor, v: Tensor, scale: float | None = None) -> Tensor:
    """Reference of `logo_attn.global_attention`."""
    return global_attention_with_lse(q, k, v, scale)[0]


def window_pool(x: Tensor, grid: Grid, window: Grid) -> Tensor:
    """Mean of each window's real tokens: (B, F*H*W, C) -> (B, M, C), windows in row-major order."""
    acc = accumulation_dtype(x.dtype)
    sums = window_partition(x.to(acc), grid, window).sum(dim=2)  # padding slots are zeros
    counts = window_token_mask(grid, window, x.device).sum(dim=1).to(acc)  # (M,)
    return (sums / counts[:, None]).to(x.dtype).contiguous()


# --------------------------------------------------------------------------------------------------
# Backend protocol (what logo_attn.ops calls for backend="torch"). Backward is written out, as the
# kernels do it, from the saved output and log-sum-exp:
#   P = exp(S - lse),  dV = P^T dO,  dS = P * (dO V^T - rowsum(dO * O)),  dQ = dS K * scale,  dK = dS^T Q * scale
# --------------------------------------------------------------------------------------------------


def _softmax_attention_bwd(
    dout: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, scale: float, key_mask: Tensor | None
) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients of `_softmax_attention` over (..., L, d) operands, computed in the accumulation dtype."""
    acc = accumulation_dtype(q.dtype)
    dout, q, k, v, out = (t.to(acc) for t in (dout, q, k, v, out))
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale
    p = torch.exp(scores - lse.to(acc).unsqueeze(-1))
    if key_mask is not None:
        p = p.masked_fill(~key_mask, 0.0)
    delta = (dout * out).sum(dim=-1, keepdim=True)
    ds = p * (torch.matmul(dout, v.transpose(-1, -2)) - delta)
    dq = torch.matmul(ds, k) * scale
    dk = torch.matmul(ds.transpose(-1, -2), q) * scale
    dv = torch.matmul(p.transpose(-1, -2), dout)
    return dq, dk, dv


def local_attn_fwd(q, k, v, grid, window, scale):
    return local_attention_with_lse(q, k, v, grid, window, scale)


def local_attn_bwd(dout, q, k, v, out, lse, grid, window, scale):
    # lse (B, heads, N) -> (B, M, heads, T) like the partitioned scores; padded slots get lse 0,
    # and their probabilities are masked anyway.
    lse_w = window_partition(lse.transpose(1, 2), grid, window).transpose(2, 3)
    parts = (window_partition(t, grid, window).transpose(2, 3) for t in (dout, q, k, v, out))
    key_mask = window_token_mask(grid, window, q.device)[None, :, None, None, :]
    grads = _softmax_attention_bwd(*parts, lse_w, scale, key_mask)
    return tuple(window_unpartition(g.transpose(2, 3), grid, window).to(q.dtype).contiguous() for g in grads)


def global_attn_fwd(q, k, v, scale):
    return global_attention_with_lse(q, k, v, scale)


def global_attn_bwd(dout, q, k, v, out, lse, scale):
    parts = (t.transpose(1, 2) for t in (dout, q, k, v, out))
    grads = _softmax_attention_bwd(*parts, lse, scale, None)
    return tuple(g.transpose(1, 2).to(q.dtype).contiguous() for g in grads)


def window_pool_fwd(x, grid, window):
    return window_pool(x, grid, window)


def window_pool_bwd(dout, grid, window):
    # d mean / d x = 1/count for every real token of the window: broadcast back, drop the padding.
    acc = accumulation_dtype(dout.dtype)
    counts = window_token_mask(grid, window, dout.device).sum(dim=1).to(acc)  # (M,)
    per_token = (dout.to(acc) / counts[:, None]).unsqueeze(2)  # (B, M, 1, C)
    tokens = math.prod(window)
    dx = window_unpartition(per_token.expand(-1, -1, tokens, -1), grid, window)
    return dx.to(dout.dtype).contiguous()
