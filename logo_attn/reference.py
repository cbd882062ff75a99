"""Pure-PyTorch definitions of the three ops: the oracle every backend is tested against.

Everything here works for any floating dtype (float64 included, so `gradcheck` runs on it) and any
strides, and accumulates in ``torch.promote_types(dtype, torch.float32)`` unless a caller asks for a
lower ``compute_dtype`` (the tests do, to measure what plain PyTorch loses in fp16/bf16).

The local op never builds an N x N mask: the grid is zero-padded to whole windows (in front by the
shift's offset, at the back to complete the last window; see `logo_attn.geometry`), partitioned into
``(B, windows, tokens_per_window, ...)``, attended inside each window with a mask on the padded keys
and the relative-position bias of the window's slot pairs, and un-partitioned. Memory therefore
grows with N * window, which is also what a careful user would write around
``F.scaled_dot_product_attention``.

The module doubles as the ``"torch"`` backend: it exposes the backend protocol
(``local_attn_fwd``/``local_attn_bwd``, ``global_attn_*``, ``window_pool_*``) that ``logo_attn.ops``
calls, with the backward written out from the saved log-sum-exp, and declares its `CAPABILITY`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .geometry import NO_SHIFT, axis_offset, num_windows

Grid = Sequence[int]

# What this backend computes (read by logo_attn.backends): any device, every floating dtype, any head dim.
CAPABILITY = {"device": None, "dtypes": ("float16", "bfloat16", "float32", "float64"), "max_head_dim": None}


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp32 for fp16/bf16/fp32 inputs, fp64 for fp64: the dtype of sums and of the log-sum-exp."""
    return torch.promote_types(dtype, torch.float32)


# --------------------------------------------------------------------------------------------------
# Window partition: (B, F*H*W, *rest) <-> (B, windows, f*h*w, *rest), zero-padded at the borders.
# --------------------------------------------------------------------------------------------------


def _padding(grid: Grid, window: Grid, shift: Grid) -> list[tuple[int, int]]:
    """(front, back) zero padding per axis that makes the windows whole: the front pad is the shift's
    offset (the leading partial window's missing part), the back pad completes the last window."""
    pads = []
    for g, w, s in zip(grid, window, shift):
        front = axis_offset(w, s)
        pads.append((front, -(g + front) % w))
    return pads


def window_partition(x: Tensor, grid: Grid, window: Grid, shift: Grid = NO_SHIFT) -> Tensor:
    """Split grid tokens into windows: (B, F*H*W, *rest) -> (B, M, f*h*w, *rest).

    Windows are in row-major (F, H, W) order, tokens inside a window in row-major (f, h, w) order of
    their position in the whole (unclipped) window. Border and leading partial windows are padded
    with zeros; `window_token_mask` says which entries are real.
    """
    B, rest = x.shape[0], x.shape[2:]
    (Fg, Hg, Wg), (f, h, w) = grid, window
    nf, nh, nw = num_windows(grid, window, shift)
    x = x.reshape(B, Fg, Hg, Wg, *rest)
    pad = [0, 0] * len(rest)
    for front, back in reversed(_padding(grid, window, shift)):
        pad += [front, back]
    if any(pad):
        x = F.pad(x, pad)
    x = x.reshape(B, nf, f, nh, h, nw, w, *rest)
    tail = tuple(range(7, 7 + len(rest)))
    x = x.permute(0, 1, 3, 5, 2, 4, 6, *tail)
    return x.reshape(B, nf * nh * nw, f * h * w, *rest)


def window_unpartition(x: Tensor, grid: Grid, window: Grid, shift: Grid = NO_SHIFT) -> Tensor:
    """Inverse of `window_partition`: (B, M, f*h*w, *rest) -> (B, F*H*W, *rest), padding dropped."""
    B, rest = x.shape[0], x.shape[3:]
    (Fg, Hg, Wg), (f, h, w) = grid, window
    nf, nh, nw = num_windows(grid, window, shift)
    x = x.reshape(B, nf, nh, nw, f, h, w, *rest)
    tail = tuple(range(7, 7 + len(rest)))
    x = x.permute(0, 1, 4, 2, 5, 3, 6, *tail).reshape(B, nf * f, nh * h, nw * w, *rest)
    (t0, _), (y0, _), (x0, _) = _padding(grid, window, shift)
    return x[:, t0:t0 + Fg, y0:y0 + Hg, x0:x0 + Wg].reshape(B, Fg * Hg * Wg, *rest)


def window_token_mask(grid: Grid, window: Grid, device: torch.device | str | None = None,
                      shift: Grid = NO_SHIFT) -> Tensor:
    """Bool (M, f*h*w): True where a window slot holds a real grid token (False for padding)."""
    valid = torch.ones(1, math.prod(grid), dtype=torch.bool, device=device)
    return window_partition(valid, grid, window, shift)[0]


def relative_position_index(window: Grid, table: Grid, device: torch.device | str | None = None) -> Tensor:
    """(T, T) long: the flat index into a (2f'-1, 2h'-1, 2w'-1) table of each slot pair of a window
    (T = f*h*w slots), at offset query - key (Swin's ``relative_position_index``). `table` is the
    table's own window (f', h', w') >= `window`."""
    coords = torch.stack(torch.meshgrid(*(torch.arange(n, device=device) for n in window), indexing="ij")).flatten(1)
    delta = coords[:, :, None] - coords[:, None, :]  # (3, T, T)
    index = torch.zeros_like(delta[0])
    for axis, extent in enumerate(table):
        index = index * (2 * extent - 1) + delta[axis] + extent - 1
    return index


def table_window(bias: Tensor) -> tuple[int, int, int]:
    """(f', h', w') of a (heads, 2f'-1, 2h'-1, 2w'-1) relative-position table."""
    return tuple((n + 1) // 2 for n in bias.shape[1:])


def window_bias(bias: Tensor, window: Grid) -> Tensor:
    """(heads, T, T): the bias of every slot pair of a window, gathered from a relative-position
    table, or a dense (heads, T, T) bias itself (it is indexed by slot pair already)."""
    if is_dense_bias(bias):
        return bias
    index = relative_position_index(window, table_window(bias), bias.device)
    return bias.flatten(1)[:, index]


def is_dense_bias(bias: Tensor) -> bool:
    """A dense (heads, T, T) slot-pair bias, as opposed to a (heads, 2f-1, 2h-1, 2w-1) offset table."""
    return bias.dim() == 3


# --------------------------------------------------------------------------------------------------
# The ops.
# --------------------------------------------------------------------------------------------------


def _softmax_attention(
    q: Tensor, k: Tensor, v: Tensor, scale: float, key_mask: Tensor | None, compute_dtype: torch.dtype,
    dropout_p: float = 0.0, score_bias: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """softmax(q k^T * scale + score_bias) v over the last two dims of (..., Lq, d) x (..., Lk, d);
    returns (out, lse)."""
    scores = torch.matmul(q.to(compute_dtype), k.to(compute_dtype).transpose(-1, -2)) * scale
    if score_bias is not None:
        scores = scores + score_bias.to(compute_dtype)
    if key_mask is not None:
        scores = scores.masked_fill(~key_mask, float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)
    p = torch.exp(scores - lse.unsqueeze(-1))
    if dropout_p > 0.0:
        p = F.dropout(p, dropout_p)
    return torch.matmul(p, v.to(compute_dtype)), lse


def _window_operands(grid: Grid, window: Grid, shift: Grid, bias: Tensor | None, device) -> tuple[Tensor, Tensor | None]:
    """The key mask (1, M, 1, 1, T) of the partitioned windows and the slot-pair bias (1, 1, heads, T, T)."""
    key_mask = window_token_mask(grid, window, device, shift)[None, :, None, None, :]
    score_bias = None if bias is None else window_bias(bias, window)[None, None]
    return key_mask, score_bias


def local_attention_with_lse(
    q: Tensor, k: Tensor, v: Tensor, grid: Grid, window: Grid, scale: float | None = None, *,
    shift: Grid = NO_SHIFT, bias: Tensor | None = None, compute_dtype: torch.dtype | None = None,
    dropout_p: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """Windowed attention on (B, N, heads, d) inputs; returns out (B, N, heads, d) and lse (B, heads, N).

    `window` must already be clipped to `grid` and `shift` zeroed on clipped axes (the public op
    does both). `bias` is a (heads, 2f'-1, 2h'-1, 2w'-1) relative-position table with f' >= f, or a
    dense (heads, T, T) bias over the slot pairs of the window's T = f*h*w partition slots (the
    slots `window_partition` numbers). `lse` is in the compute dtype.
    """
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    compute_dtype = compute_dtype or accumulation_dtype(q.dtype)
    # (B, M, T, heads, d) -> (B, M, heads, T, d)
    qw, kw, vw = (window_partition(t, grid, window, shift).transpose(2, 3) for t in (q, k, v))
    key_mask, score_bias = _window_operands(grid, window, shift, bias, q.device)
    out, lse = _softmax_attention(qw, kw, vw, scale, key_mask, compute_dtype, dropout_p, score_bias)
    out = window_unpartition(out.transpose(2, 3), grid, window, shift)  # (B, N, heads, d)
    lse = window_unpartition(lse.transpose(2, 3), grid, window, shift)  # (B, N, heads)
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


def local_attention(q: Tensor, k: Tensor, v: Tensor, grid: Grid, window: Grid, scale: float | None = None, *,
                    shift: Grid = NO_SHIFT, bias: Tensor | None = None) -> Tensor:
    """Reference of `logo_attn.local_attention` (window already clipped, shift zeroed on clipped axes)."""
    return local_attention_with_lse(q, k, v, grid, window, scale, shift=shift, bias=bias)[0]


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
#   P = exp(S - lse),  dV = P^T dO,  dS = P * (dO V^T - rowsum(dO * O)),  dQ = dS K * scale,
#   dK = dS^T Q * scale,  dBias[offset] = sum of dS over the pairs at that offset (a table), or
#   dBias[slot_i, slot_j] = sum of dS over batch and windows (a dense bias)
# --------------------------------------------------------------------------------------------------


def _softmax_attention_bwd(
    dout: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, scale: float, key_mask: Tensor | None,
    score_bias: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Gradients (dq, dk, dv, dS) of `_softmax_attention` over (..., L, d) operands, in the accumulation dtype."""
    acc = accumulation_dtype(q.dtype)
    dout, q, k, v, out = (t.to(acc) for t in (dout, q, k, v, out))
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale
    if score_bias is not None:
        scores = scores + score_bias.to(acc)
    p = torch.exp(scores - lse.to(acc).unsqueeze(-1))
    if key_mask is not None:
        p = p.masked_fill(~key_mask, 0.0)
    delta = (dout * out).sum(dim=-1, keepdim=True)
    ds = p * (torch.matmul(dout, v.transpose(-1, -2)) - delta)
    if key_mask is not None:  # exact zeros outside the window, even where dO or V are not finite
        ds = ds.masked_fill(~key_mask, 0.0)
    dq = torch.matmul(ds, k) * scale
    dk = torch.matmul(ds.transpose(-1, -2), q) * scale
    dv = torch.matmul(p.transpose(-1, -2), dout)
    return dq, dk, dv, ds


def _bias_grad(ds: Tensor, bias: Tensor, window: Grid, key_mask: Tensor) -> Tensor:
    """dS (B, M, heads, T, T) summed over batch and windows per slot pair (the dense bias's gradient),
    then per table entry for a (heads, 2f'-1, 2h'-1, 2w'-1) table. Pairs whose query slot is padding
    count 0 (their dS is 0 unless a bias entry only padding reaches is not finite)."""
    per_pair = ds.masked_fill(~key_mask.transpose(-1, -2), 0.0).sum(dim=(0, 1))  # (heads, T, T)
    if is_dense_bias(bias):
        return per_pair.to(bias.dtype)
    index = relative_position_index(window, table_window(bias), ds.device).flatten()
    per_pair = per_pair.flatten(1)  # (heads, T*T)
    grad = per_pair.new_zeros(bias.shape[0], bias[0].numel()).index_add_(1, index, per_pair)
    return grad.view(bias.shape).to(bias.dtype)


def local_attn_fwd(q, k, v, grid, window, shift, bias, scale):
    return local_attention_with_lse(q, k, v, grid, window, scale, shift=shift, bias=bias)


def local_attn_bwd(dout, q, k, v, out, lse, grid, window, shift, bias, scale, bias_grad):
    # lse (B, heads, N) -> (B, M, heads, T) like the partitioned scores; padded slots get lse 0,
    # and their probabilities are masked anyway.
    lse_w = window_partition(lse.transpose(1, 2), grid, window, shift).transpose(2, 3)
    parts = (window_partition(t, grid, window, shift).transpose(2, 3) for t in (dout, q, k, v, out))
    key_mask, score_bias = _window_operands(grid, window, shift, bias, q.device)
    *grads, ds = _softmax_attention_bwd(*parts, lse_w, scale, key_mask, score_bias)
    dq, dk, dv = (window_unpartition(g.transpose(2, 3), grid, window, shift).to(q.dtype).contiguous() for g in grads)
    dbias = _bias_grad(ds, bias, window, key_mask) if bias is not None and bias_grad else None
    return dq, dk, dv, dbias


def global_attn_fwd(q, k, v, scale):
    return global_attention_with_lse(q, k, v, scale)


def global_attn_bwd(dout, q, k, v, out, lse, scale):
    parts = (t.transpose(1, 2) for t in (dout, q, k, v, out))
    grads = _softmax_attention_bwd(*parts, lse, scale, None)[:3]
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
