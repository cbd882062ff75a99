"""Gradient of local attention's bias (a relative-position table or a dense slot-pair bias): a Triton
kernel and its launcher.

dbias[head, Δ] is the sum, over batch, windows and the pairs (i, j) of a window at offset
Δ = coord_i - coord_j, of dS_ij = P_ij (dP_ij - delta_i). Every window contributes to every entry,
so a per-window kernel would need float atomics (not deterministic) or windows x tokens^2 memory.
Instead the pairs are indexed in the frame of the *nominal* window (f x h x w slots, a clipped or
leading partial window occupying a subset of them), where the offset of a pair depends on the two
slots alone:

1. `local_attn_bwd_kernel_dbias`: one program per (head, query-slot tile x key-slot tile of the
   nominal window, chunk of (batch, window) items). It walks its chunk's windows, recomputes S, P,
   dP and dS of its tile from q, k, v, dO, O and the saved lse (two dots per window and tile), and
   sums dS over the chunk in registers. It writes the chunk's partial (T x T, T = f*h*w) gradient.
2. The partials are summed over chunks (`torch.sum`, a fixed-order reduction) into G (heads, T, T),
   and G is summed along its offset diagonals, axis by axis, into the (2f-1, 2h-1, 2w-1) table
   (`offset_sums`: a pad-and-reshape turns each diagonal into a column), placed at the centre of the
   user's (2f'-1, 2h'-1, 2w'-1) table (f' >= f: the window before clipping to the grid). A dense
   (heads, T, T) bias is indexed by these very slot pairs: G is its gradient.

Deterministic (every partial element has one writer; the sums have a fixed order) and memory-bound
by chunks x heads x T^2 fp32, where chunks only fills the GPU (about 2 x SMs programs), whatever the
number of windows. Cost: kernels/README.md.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F_
import triton
import triton.language as tl

from .attn_tile import bias_scores, load_query_grads, load_rows, program_coordinates
from .interpreter import INTERPRETED
from .tuning import MIN_TILE, head_dim_tile
from .utils import next_power_of_2


@triton.jit
def _nominal_slots(slots, window, windows_h, windows_w, F, H, W, f, h, w, off_t, off_y, off_x, T):
    """Token index and validity of nominal-window slots of `window`, and their bias-table coordinates."""
    lt = slots // (h * w)
    ly = (slots // w) % h
    lx = slots % w
    t = (window // (windows_h * windows_w)) * f - off_t + lt
    y = ((window // windows_w) % windows_h) * h - off_y + ly
    x = (window % windows_w) * w - off_x + lx
    valid = (slots < T) & (t >= 0) & (t < F) & (y >= 0) & (y < H) & (x >= 0) & (x < W)
    return (t * H + y) * W + x, valid, lt, ly, lx


@triton.jit
def local_attn_bwd_kernel_dbias(
    dout_ptr, q_ptr, k_ptr, v_ptr, out_ptr, lse_ptr, bias_ptr, part_ptr,
    stride_gb, stride_gn, stride_gh, stride_qb, stride_qn, stride_qh, stride_kb, stride_kn, stride_kh,
    stride_vb, stride_vn, stride_vh, stride_ob, stride_on, stride_oh, stride_lb, stride_lh,
    stride_bh, stride_bt, stride_by, stride_bx, stride_pc, stride_ph, stride_pi,
    heads, chunks, windows, windows_h, windows_w, F, H, W, f, h, w, off_t, off_y, off_x,
    items, chunk_items, bias_centre, qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK: tl.constexpr, BLOCK_D: tl.constexpr, HAS_BIAS: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """Partial dbias, expanded over the nominal window's (query slot, key slot) pairs, of one tile
    pair, head and chunk of (batch, window) items."""
    T = f * h * w
    tiles = tl.cdiv(T, BLOCK)
    pair, _, chunk, head = program_coordinates(tiles * tiles, heads, chunks)
    i_slots = (pair // tiles) * BLOCK + tl.arange(0, BLOCK)
    j_slots = (pair % tiles) * BLOCK + tl.arange(0, BLOCK)
    cols = tl.arange(0, BLOCK_D)
    col_mask = cols < HEAD_DIM
    bias_base = bias_ptr + head * stride_bh

    acc = tl.zeros((BLOCK, BLOCK), tl.float32)
    first = chunk * chunk_items
    for item in range(first, tl.minimum(first + chunk_items, items)):
        b = (item // windows).to(tl.int64)
        window = item % windows
        q_tok, q_valid, qt, qy, qx = _nominal_slots(i_slots, window, windows_h, windows_w, F, H, W, f, h, w,
                                                    off_t, off_y, off_x, T)
        k_tok, k_valid, kt, ky, kx = _nominal_slots(j_slots, window, windows_h, windows_w, F, H, W, f, h, w,
                                                    off_t, off_y, off_x, T)
        q, dout, lse_log2, delta = load_query_grads(
            q_ptr + b * stride_qb + head * stride_qh, dout_ptr + b * stride_gb + head * stride_gh,
            out_ptr + b * stride_ob + head * stride_oh, lse_ptr + b * stride_lb + head * stride_lh,
            q_tok, q_valid, stride_qn, stride_gn, stride_on, cols, col_mask)
        k = load_rows(k_ptr + b * stride_kb + head * stride_kh, k_tok, k_valid, stride_kn, cols, col_mask)
        v = load_rows(v_ptr + b * stride_vb + head * stride_vh, k_tok, k_valid, stride_vn, cols, col_mask)
        pairs = q_valid[:, None] & k_valid[None, :]
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale
        s += bias_scores(bias_base, qt * stride_bt + qy * stride_by + qx * stride_bx,
                         kt * stride_bt + ky * stride_by + kx * stride_bx, pairs, bias_centre, HAS_BIAS)
        p = tl.where(pairs, tl.exp2(s - lse_log2[:, None]), 0.0)
        dp = tl.dot(dout, tl.trans(v), input_precision=DOT_PRECISION)
        acc += tl.where(pairs, p * (dp - delta[:, None]), 0.0)

    part = part_ptr + chunk * stride_pc + head * stride_ph
    offsets = i_slots.to(tl.int64)[:, None] * stride_pi + j_slots[None, :]
    tl.store(part + offsets, acc, mask=(i_slots < T)[:, None] & (j_slots < T)[None, :])


def dbias_tile(head_dim: int) -> int:
    """Slots per side of a dbias tile. S, P, dP, dS, their sum and the gathered bias are fp32 tiles
    of BLOCK^2 beside five (BLOCK, d) operand tiles: 32 (16 for d = 128) is what compiles for sm_90
    without spilling much at 8 warps and one pipeline stage (tests/test_triton_kernels.py). The
    interpreter's cost grows with programs x loop trips, not tile size: there a tile is 128 slots
    (a window longer than that still takes several tiles)."""
    if INTERPRETED:
        return 128
    return 32 if head_dim_tile(head_dim) <= 64 else 16


def dbias_plan(q: torch.Tensor, T: int, items: int) -> tuple[int, int, int, int]:
    """(BLOCK, tiles per side, chunks, items per chunk) for nominal windows of T slots and `items`
    (batch, window) pairs: enough chunks that the programs fill the GPU (about 2 per SM), no more."""
    heads, head_dim = q.shape[2], q.shape[3]
    block = max(MIN_TILE, min(dbias_tile(head_dim), next_power_of_2(T)))
    tiles = triton.cdiv(T, block)
    programs = 2 * torch.cuda.get_device_properties(q.device).multi_processor_count if q.is_cuda else 8
    chunks = max(1, min(items, triton.cdiv(programs, heads * tiles * tiles)))
    chunk_items = triton.cdiv(items, chunks)
    return block, tiles, triton.cdiv(items, chunk_items), chunk_items


def offset_sums(x: torch.Tensor) -> torch.Tensor:
    """(..., n, n) -> (..., 2n - 1): out[..., a - b + n - 1] = sum over a of x[..., a, b].

    Flipping b and padding every row to 2n entries, then reading the rows back 2n - 1 wide, shifts
    row a by a places, so each offset a - b lands in one column, summed over rows in a fixed order.
    """
    n = x.shape[-1]
    rows = F_.pad(x.flip(-1), (0, n)).flatten(-2)[..., : n * (2 * n - 1)]
    return rows.reshape(*x.shape[:-2], n, 2 * n - 1).sum(-2)


def expanded_to_table(g: torch.Tensor, window, table_shape) -> torch.Tensor:
    """(heads, T, T) gradient over nominal (query slot, key slot) pairs -> (heads, *table_shape).

    Slot pairs are summed by their offset along t, then y, then x; the (2f-1, 2h-1, 2w-1) result is
    the centre of the table, whose other entries (offsets no window of this grid has) get 0.
    """
    f, h, w = window
    heads = g.shape[0]
    g = g.reshape(heads, f, h, w, f, h, w)
    g = offset_sums(g.permute(0, 2, 3, 5, 6, 1, 4))  # (heads, h, w, h, w, 2f-1)
    g = offset_sums(g.permute(0, 5, 2, 4, 1, 3))  # (heads, 2f-1, w, w, 2h-1)
    g = offset_sums(g.permute(0, 1, 4, 2, 3))  # (heads, 2f-1, 2h-1, 2w-1)
    table = g.new_zeros((heads, *table_shape))
    lo = [(n - (2 * c - 1)) // 2 for n, c in zip(table_shape, window)]
    table[:, lo[0]: lo[0] + 2 * f - 1, lo[1]: lo[1] + 2 * h - 1, lo[2]: lo[2] + 2 * w - 1] = g
    return table


def local_attn_dbias(dout, q, k, v, out, lse, grid, window, offsets, windows, bias, bias_read, bias_strides,
                     bias_centre, bias_kind, qk_scale, dot_precision: str) -> torch.Tensor:
    """The bias's gradient, in its dtype and shape: a table's (summed by offset) or a dense
    (heads, T, T) bias's (the expanded gradient itself). `bias_read`, `bias_strides`, `bias_centre`
    and `bias_kind` are how the attention kernels read it (local_attn's `_Launch`)."""
    B, N, heads, head_dim = q.shape
    T = math.prod(window)
    if q.numel() == 0:
        return torch.zeros_like(bias)
    block, tiles, chunks, chunk_items = dbias_plan(q, T, B * math.prod(windows))
    parts = torch.empty((chunks, heads, T, T), dtype=torch.float32, device=q.device)
    local_attn_bwd_kernel_dbias[(chunks * heads * tiles * tiles,)](
        dout, q, k, v, out, lse, bias_read, parts,
        *dout.stride()[:3], *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *out.stride()[:3], *lse.stride()[:2],
        *bias_strides, *parts.stride()[:3],
        heads, chunks, math.prod(windows), windows[1], windows[2], *grid, *window, *offsets,
        B * math.prod(windows), chunk_items, bias_centre, qk_scale,
        HEAD_DIM=head_dim, BLOCK=block, BLOCK_D=head_dim_tile(head_dim), HAS_BIAS=bias_kind,
        DOT_PRECISION=dot_precision, num_warps=8, num_stages=1,
    )
    if bias.dim() == 3:
        return parts.sum(0).to(bias.dtype)
    return expanded_to_table(parts.sum(0), window, bias.shape[1:]).to(bias.dtype)
