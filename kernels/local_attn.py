"""Local window attention: forward and backward Triton kernels and their launchers.

Programs read q/k/v straight from the strided (B, N, heads, d) layout by computing each window's
token addresses (`window_index`), so there is no partition copy in and no un-partition copy out.
Programs enumerate (batch, window group, head, block) on one launch axis, the query (forward, dq)
or key (dk/dv) block of the group fastest, so the programs of one window run back to back. A
window of up to one key tile (`tuning.key_tile`: 128 tokens for fp16 and d <= 64) is one tile
(small windows packed several to a tile); a longer window is walked in key tiles with an online
softmax. Windows may be shifted (a leading partial window on each shifted axis, clipped border
windows), and a relative-position bias table (Swin's) may be added to the scores: each pair's entry
is gathered inside the kernels; its gradient comes from `relative_bias`. See kernels/README.md for
the bytes each kernel moves.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from ..geometry import axis_offset, num_windows
from .attn_tile import (
    DENSE_BIAS, NO_BIAS, TABLE_BIAS, attend_key_tile, bias_scores, dkdv_query_tile, dq_key_tile, has_nonfinite, load_query_grads, load_rows,
    log2_scale, program_coordinates, softmax_finish, store_rows,
)
from .relative_bias import local_attn_dbias
from .tuning import (
    ATTENTION_BWD_CONFIGS, ATTENTION_FWD_CONFIGS, MIN_TILE, dot_precision, head_dim_tile, key_tile,
    prune_attention_dkdv, prune_attention_dq, prune_attention_fwd,
)
from .utils import device_guard, last_dim_contiguous, next_power_of_2
from .window_index import (
    bias_offset, group_tokens, only_window, pair_mask, slot_coordinates, window_geometry, window_tokens,
)

# Windows of at most PACKED_TILE / 2 tokens share a tile of PACKED_TILE slots with their neighbours.
PACKED_TILE = 64


def tile_plan(window_tokens: int, max_tile: int) -> tuple[int, int, int]:
    """(BLOCK_K, WINDOWS_PER_GROUP, SLOTS_PER_WINDOW) for windows of `window_tokens` tokens."""
    slots = next_power_of_2(window_tokens)
    packed = min(PACKED_TILE, max_tile)
    if slots <= packed // 2:
        return packed, packed // slots, slots
    block_k = min(max(slots, MIN_TILE), max_tile)
    return block_k, 1, block_k


_KEY = ["BLOCK_K", "HEAD_DIM", "WINDOWS_PER_GROUP", "SINGLE_KEY_TILE", "HAS_BIAS"]


@triton.jit
def _slots(group, windows_h, windows_w, F, H, W, f, h, w, off_t, off_y, off_x,
           BLOCK_K: tl.constexpr, WINDOWS_PER_GROUP: tl.constexpr):
    """Slots a window group spans: a lone window's token count (a clipped window's is smaller), or
    the whole tile for a packed group."""
    if WINDOWS_PER_GROUP == 1:
        return window_geometry(group, windows_h, windows_w, F, H, W, f, h, w, off_t, off_y, off_x)[5]
    else:
        return BLOCK_K


@triton.jit
def _attend_group(q, q_valid, q_win, q_rel, k_base, v_base, bias_base, group, slots,
                  windows_h, windows_w, F, H, W, f, h, w, off_t, off_y, off_x, stride_bt, stride_by, stride_bx,
                  bias_centre, stride_kn, stride_vn, cols, col_mask, qk_scale, own,
                  BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr,
                  WINDOWS_PER_GROUP: tl.constexpr, SLOTS_PER_WINDOW: tl.constexpr, ONE_WINDOW: tl.constexpr,
                  HAS_BIAS: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """Running max, sum and output of a query block over its group's key tiles; with ONE_WINDOW only
    the keys of window `own` are loaded (the others read as 0), see `local_attn_fwd_kernel`."""
    m_i = tl.full((BLOCK_Q,), -1.0e30, tl.float32)
    l_i = tl.zeros((BLOCK_Q,), tl.float32)
    acc = tl.zeros((BLOCK_Q, BLOCK_D), tl.float32)
    for k_start in range(0, slots, BLOCK_K):
        k_tok, k_valid, k_win, k_rel = group_tokens(k_start + tl.arange(0, BLOCK_K), group, windows_h, windows_w,
                                                    F, H, W, f, h, w, off_t, off_y, off_x, stride_bt, stride_by,
                                                    stride_bx, WINDOWS_PER_GROUP, SLOTS_PER_WINDOW)
        k_valid = only_window(k_valid, k_win, own, ONE_WINDOW)
        pairs = pair_mask(q_valid, k_valid, q_win, k_win, WINDOWS_PER_GROUP)
        bias = bias_scores(bias_base, q_rel, k_rel, pairs, bias_centre, HAS_BIAS)
        m_i, l_i, acc = attend_key_tile(q, k_base, v_base, k_tok, k_valid, stride_kn, stride_vn, cols, col_mask,
                                        pairs, bias, m_i, l_i, acc, qk_scale, HAS_BIAS, DOT_PRECISION)
    return m_i, l_i, acc


@triton.jit
def _dkdv_group(k, v, k_valid, k_win, k_rel, q_base, g_base, o_base, l_base, dq_base, bias_base, group, slots,
                windows_h, windows_w, F, H, W, f, h, w, off_t, off_y, off_x, stride_bt, stride_by, stride_bx,
                bias_centre, stride_qn, stride_gn, stride_on, stride_dn, cols, col_mask, scale, qk_scale,
                own, store_dq, BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr,
                WINDOWS_PER_GROUP: tl.constexpr, SLOTS_PER_WINDOW: tl.constexpr, SINGLE_KEY_TILE: tl.constexpr,
                ONE_WINDOW: tl.constexpr, HAS_BIAS: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """dK and dV (unscaled) of a key block over its group's query blocks, writing their dQ with
    SINGLE_KEY_TILE and `store_dq`; with ONE_WINDOW only the queries of window `own` are loaded."""
    dk = tl.zeros((BLOCK_K, BLOCK_D), tl.float32)
    dv = tl.zeros((BLOCK_K, BLOCK_D), tl.float32)
    for q_start in range(0, slots, BLOCK_Q):
        q_tok, q_valid, q_win, q_rel = group_tokens(q_start + tl.arange(0, BLOCK_Q), group, windows_h, windows_w,
                                                    F, H, W, f, h, w, off_t, off_y, off_x, stride_bt, stride_by,
                                                    stride_bx, WINDOWS_PER_GROUP, SLOTS_PER_WINDOW)
        q_valid = only_window(q_valid, q_win, own, ONE_WINDOW)
        pairs = pair_mask(q_valid, k_valid, q_win, k_win, WINDOWS_PER_GROUP)
        bias = bias_scores(bias_base, q_rel, k_rel, pairs, bias_centre, HAS_BIAS)
        dk, dv = dkdv_query_tile(dk, dv, k, v, q_base, g_base, o_base, l_base, q_tok, q_valid,
                                 stride_qn, stride_gn, stride_on, cols, col_mask, pairs, bias, dq_base, stride_dn,
                                 store_dq, scale, qk_scale, SINGLE_KEY_TILE, HAS_BIAS, DOT_PRECISION)
    return dk, dv


# The per-window passes below run only for a packed tile that holds a NaN or an infinity. They are
# separate device functions (noinline) so that their registers do not add to the one-pass code's.


@triton.jit(noinline=True)
def _attend_one_window(q_base, k_base, v_base, o_base, l_base, bias_base, q_start, own, group, slots,
                       windows_h, windows_w, F, H, W, f, h, w, off_t, off_y, off_x, stride_bt, stride_by, stride_bx,
                       bias_centre, stride_qn, stride_kn, stride_vn, stride_on, qk_scale,
                       HEAD_DIM: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr,
                       WINDOWS_PER_GROUP: tl.constexpr, SLOTS_PER_WINDOW: tl.constexpr, HAS_BIAS: tl.constexpr,
                       DOT_PRECISION: tl.constexpr):
    """Forward of window `own` of a packed group, the other windows' rows read as 0: stores its rows."""
    q_tok, q_valid, q_win, q_rel = group_tokens(q_start + tl.arange(0, BLOCK_Q), group, windows_h, windows_w,
                                                F, H, W, f, h, w, off_t, off_y, off_x, stride_bt, stride_by,
                                                stride_bx, WINDOWS_PER_GROUP, SLOTS_PER_WINDOW)
    rows = q_valid & (q_win == own)
    cols = tl.arange(0, BLOCK_D)
    col_mask = cols < HEAD_DIM
    q = load_rows(q_base, q_tok, rows, stride_qn, cols, col_mask)
    m_i, l_i, acc = _attend_group(q, rows, q_win, q_rel, k_base, v_base, bias_base, group, slots,
                                  windows_h, windows_w, F, H, W, f, h, w, off_t, off_y, off_x,
                                  stride_bt, stride_by, stride_bx, bias_centre, stride_kn, stride_vn, cols, col_mask,
                                  qk_scale, own, BLOCK_Q, BLOCK_K, BLOCK_D, WINDOWS_PER_GROUP, SLOTS_PER_WINDOW, True,
                                  HAS_BIAS, DOT_PRECISION)
    out, lse = softmax_finish(m_i, l_i, acc)
    store_rows(o_base, out, q_tok, rows, stride_on, cols, col_mask)
    tl.store(l_base + q_tok, lse, mask=rows)


@triton.jit(noinline=True)
def _dkdv_one_window(k_base, v_base, q_base, g_base, o_base, l_base, dq_base, dk_base, dv_base, bias_base,
                     k_start, own, group, slots, windows_h, windows_w, F, H, W, f, h, w, off_t, off_y, off_x,
                     stride_bt, stride_by, stride_bx, bias_centre, stride_kn, stride_vn, stride_qn, stride_gn,
                     stride_on, stride_dn, scale, qk_scale, store_dq,
                     HEAD_DIM: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr,
                     WINDOWS_PER_GROUP: tl.constexpr, SLOTS_PER_WINDOW: tl.constexpr,
                     SINGLE_KEY_TILE: tl.constexpr, HAS_BIAS: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """Backward of window `own` of a packed group, the other windows' rows read as 0: stores its
    rows of dK and dV, and of dQ if `store_dq`."""
    k_tok, k_valid, k_win, k_rel = group_tokens(k_start + tl.arange(0, BLOCK_K), group, windows_h, windows_w,
                                                F, H, W, f, h, w, off_t, off_y, off_x, stride_bt, stride_by,
                                                stride_bx, WINDOWS_PER_GROUP, SLOTS_PER_WINDOW)
    keys = k_valid & (k_win == own)
    cols = tl.arange(0, BLOCK_D)
    col_mask = cols < HEAD_DIM
    k = load_rows(k_base, k_tok, keys, stride_kn, cols, col_mask)
    v = load_rows(v_base, k_tok, keys, stride_vn, cols, col_mask)
    dk, dv = _dkdv_group(k, v, keys, k_win, k_rel, q_base, g_base, o_base, l_base, dq_base, bias_base, group, slots,
                         windows_h, windows_w, F, H, W, f, h, w, off_t, off_y, off_x, stride_bt, stride_by, stride_bx,
                         bias_centre, stride_qn, stride_gn, stride_on, stride_dn, cols, col_mask, scale, qk_scale,
                         own, store_dq, BLOCK_Q, BLOCK_K, BLOCK_D, WINDOWS_PER_GROUP, SLOTS_PER_WINDOW,
                         SINGLE_KEY_TILE, True, HAS_BIAS, DOT_PRECISION)
    store_rows(dk_base, dk * scale, k_tok, keys, stride_dn, cols, col_mask)
    store_rows(dv_base, dv, k_tok, keys, stride_dn, cols, col_mask)


@triton.autotune(configs=ATTENTION_FWD_CONFIGS, key=_KEY, prune_configs_by={"early_config_prune": prune_attention_fwd})
@triton.jit
def local_attn_fwd_kernel(
    q_ptr, k_ptr, v_ptr, bias_ptr, out_ptr, lse_ptr,
    stride_qb, stride_qn, stride_qh, stride_kb, stride_kn, stride_kh, stride_vb, stride_vn, stride_vh,
    stride_ob, stride_on, stride_oh, stride_lb, stride_lh, stride_bh, stride_bt, stride_by, stride_bx,
    heads, groups, group_slots, windows_h, windows_w, F, H, W, f, h, w, off_t, off_y, off_x, bias_centre, qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr,
    WINDOWS_PER_GROUP: tl.constexpr, SLOTS_PER_WINDOW: tl.constexpr, SINGLE_KEY_TILE: tl.constexpr,
    HAS_BIAS: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """Output and lse of one query block of a window group, over the group's key tiles."""
    q_block, b, group, head = program_coordinates(tl.cdiv(group_slots, BLOCK_Q), heads, groups)
    q_start = q_block * BLOCK_Q
    slots = _slots(group, windows_h, windows_w, F, H, W, f, h, w, off_t, off_y, off_x, BLOCK_K, WINDOWS_PER_GROUP)
    if q_start >= slots:  # a clipped window has fewer query blocks than the launch grid
        return

    q_tok, q_valid, q_win, q_rel = group_tokens(q_start + tl.arange(0, BLOCK_Q), group, windows_h, windows_w,
                                                F, H, W, f, h, w, off_t, off_y, off_x, stride_bt, stride_by,
                                                stride_bx, WINDOWS_PER_GROUP, SLOTS_PER_WINDOW)
    cols = tl.arange(0, BLOCK_D)
    col_mask = cols < HEAD_DIM
    q_base = q_ptr + b * stride_qb + head * stride_qh
    q = load_rows(q_base, q_tok, q_valid, stride_qn, cols, col_mask)
    k_base = k_ptr + b * stride_kb + head * stride_kh
    v_base = v_ptr + b * stride_vb + head * stride_vh
    bias_base = bias_ptr + head * stride_bh
    o_base = out_ptr + b * stride_ob + head * stride_oh
    l_base = lse_ptr + b * stride_lb + head * stride_lh

    m_i, l_i, acc = _attend_group(q, q_valid, q_win, q_rel, k_base, v_base, bias_base, group, slots,
                                  windows_h, windows_w, F, H, W, f, h, w, off_t, off_y, off_x,
                                  stride_bt, stride_by, stride_bx, bias_centre, stride_kn, stride_vn, cols, col_mask,
                                  qk_scale, 0, BLOCK_Q, BLOCK_K, BLOCK_D, WINDOWS_PER_GROUP, SLOTS_PER_WINDOW, False,
                                  HAS_BIAS, DOT_PRECISION)
    # Packed windows share the key tile, and in P V a NaN/Inf row of V meets the zero probabilities of
    # every other window (0 x Inf = NaN). Any non-finite output therefore has the tile redone one
    # window at a time, with the other windows' keys read as 0, so a fault stays in its window.
    fault = False
    if WINDOWS_PER_GROUP > 1:
        fault = has_nonfinite(acc)
    if fault:
        for i in range(WINDOWS_PER_GROUP):
            _attend_one_window(q_base, k_base, v_base, o_base, l_base, bias_base, q_start,
                               group * WINDOWS_PER_GROUP + i, group, slots, windows_h, windows_w, F, H, W, f, h, w,
                               off_t, off_y, off_x, stride_bt, stride_by, stride_bx, bias_centre,
                               stride_qn, stride_kn, stride_vn, stride_on, qk_scale, HEAD_DIM, BLOCK_Q, BLOCK_K,
                               BLOCK_D, WINDOWS_PER_GROUP, SLOTS_PER_WINDOW, HAS_BIAS, DOT_PRECISION)
    else:
        out, lse = softmax_finish(m_i, l_i, acc)
        store_rows(o_base, out, q_tok, q_valid, stride_on, cols, col_mask)
        tl.store(l_base + q_tok, lse, mask=q_valid)


@triton.autotune(configs=ATTENTION_BWD_CONFIGS, key=_KEY, prune_configs_by={"early_config_prune": prune_attention_dkdv})
@triton.jit
def local_attn_bwd_kernel_dkdv(
    dout_ptr, q_ptr, k_ptr, v_ptr, bias_ptr, out_ptr, lse_ptr, dq_ptr, dk_ptr, dv_ptr,
    stride_gb, stride_gn, stride_gh, stride_qb, stride_qn, stride_qh, stride_kb, stride_kn, stride_kh,
    stride_vb, stride_vn, stride_vh, stride_ob, stride_on, stride_oh, stride_lb, stride_lh,
    stride_bh, stride_bt, stride_by, stride_bx, stride_db, stride_dn, stride_dh,
    heads, groups, group_slots, windows_h, windows_w, F, H, W, f, h, w, off_t, off_y, off_x, bias_centre,
    scale, qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr,
    WINDOWS_PER_GROUP: tl.constexpr, SLOTS_PER_WINDOW: tl.constexpr, SINGLE_KEY_TILE: tl.constexpr,
    HAS_BIAS: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """dK, dV of one key block of a window group, walking the group's query blocks.

    With SINGLE_KEY_TILE (the whole group is this one key block) every query's keys are here, so
    the program also writes dQ and no other kernel runs. dq, dk and dv share one set of strides.
    """
    k_block, b, group, head = program_coordinates(tl.cdiv(group_slots, BLOCK_K), heads, groups)
    k_start = k_block * BLOCK_K
    slots = _slots(group, windows_h, windows_w, F, H, W, f, h, w, off_t, off_y, off_x, BLOCK_K, WINDOWS_PER_GROUP)
    if k_start >= slots:
        return

    k_tok, k_valid, k_win, k_rel = group_tokens(k_start + tl.arange(0, BLOCK_K), group, windows_h, windows_w,
                                                F, H, W, f, h, w, off_t, off_y, off_x, stride_bt, stride_by,
                                                stride_bx, WINDOWS_PER_GROUP, SLOTS_PER_WINDOW)
    cols = tl.arange(0, BLOCK_D)
    col_mask = cols < HEAD_DIM
    k_base = k_ptr + b * stride_kb + head * stride_kh
    v_base = v_ptr + b * stride_vb + head * stride_vh
    k = load_rows(k_base, k_tok, k_valid, stride_kn, cols, col_mask)
    v = load_rows(v_base, k_tok, k_valid, stride_vn, cols, col_mask)
    q_base = q_ptr + b * stride_qb + head * stride_qh
    g_base = dout_ptr + b * stride_gb + head * stride_gh
    o_base = out_ptr + b * stride_ob + head * stride_oh
    l_base = lse_ptr + b * stride_lb + head * stride_lh
    bias_base = bias_ptr + head * stride_bh
    d_offset = b * stride_db + head * stride_dh

    # Packed windows: the products over the tile's query slots (dS^T Q, P^T dO) and key slots (dS K)
    # meet one window's NaN/Inf with the other windows' zeros. A non-finite q or dO row reaches
    # every key's dK or dV, which the one-pass result shows; a non-finite key would reach every
    # window's dQ, so then dQ is not stored by the one pass. Either way the tile is redone window by
    # window: the other windows' rows read as 0, and only the window's own rows of dK, dV (and of
    # dQ, unless the one pass wrote it exactly) are stored.
    key_fault = False
    if WINDOWS_PER_GROUP > 1:
        key_fault = has_nonfinite(k)
    dk, dv = _dkdv_group(k, v, k_valid, k_win, k_rel, q_base, g_base, o_base, l_base, dq_ptr + d_offset, bias_base,
                         group, slots, windows_h, windows_w, F, H, W, f, h, w, off_t, off_y, off_x,
                         stride_bt, stride_by, stride_bx, bias_centre, stride_qn, stride_gn, stride_on, stride_dn,
                         cols, col_mask, scale, qk_scale, 0, key_fault == 0, BLOCK_Q, BLOCK_K, BLOCK_D,
                         WINDOWS_PER_GROUP, SLOTS_PER_WINDOW, SINGLE_KEY_TILE, False, HAS_BIAS, DOT_PRECISION)
    fault = False
    if WINDOWS_PER_GROUP > 1:
        fault = key_fault | has_nonfinite(dk) | has_nonfinite(dv)
    if fault:
        for i in range(WINDOWS_PER_GROUP):
            _dkdv_one_window(k_base, v_base, q_base, g_base, o_base, l_base, dq_ptr + d_offset, dk_ptr + d_offset,
                             dv_ptr + d_offset, bias_base, k_start, group * WINDOWS_PER_GROUP + i, group, slots,
                             windows_h, windows_w, F, H, W, f, h, w, off_t, off_y, off_x, stride_bt, stride_by,
                             stride_bx, bias_centre, stride_kn, stride_vn, stride_qn, stride_gn, stride_on, stride_dn,
                             scale, qk_scale, key_fault, HEAD_DIM, BLOCK_Q, BLOCK_K, BLOCK_D, WINDOWS_PER_GROUP,
                             SLOTS_PER_WINDOW, SINGLE_KEY_TILE, HAS_BIAS, DOT_PRECISION)
    else:
        store_rows(dk_ptr + d_offset, dk * scale, k_tok, k_valid, stride_dn, cols, col_mask)
        store_rows(dv_ptr + d_offset, dv, k_tok, k_valid, stride_dn, cols, col_mask)


@triton.autotune(configs=ATTENTION_BWD_CONFIGS, key=_KEY, prune_configs_by={"early_config_prune": prune_attention_dq})
@triton.jit
def local_attn_bwd_kernel_dq(
    dout_ptr, q_ptr, k_ptr, v_ptr, bias_ptr, out_ptr, lse_ptr, dq_ptr,
    stride_gb, stride_gn, stride_gh, stride_qb, stride_qn, stride_qh, stride_kb, stride_kn, stride_kh,
    stride_vb, stride_vn, stride_vh, stride_ob, stride_on, stride_oh, stride_lb, stride_lh,
    stride_bh, stride_bt, stride_by, stride_bx, stride_db, stride_dn, stride_dh,
    heads, groups, group_slots, windows_h, windows_w, F, H, W, f, h, w, off_t, off_y, off_x, bias_centre,
    scale, qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr,
    WINDOWS_PER_GROUP: tl.constexpr, SLOTS_PER_WINDOW: tl.constexpr, SINGLE_KEY_TILE: tl.constexpr,
    HAS_BIAS: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """dQ of one query block of a window longer than one key tile (one window per group)."""
    q_block, b, window, head = program_coordinates(tl.cdiv(group_slots, BLOCK_Q), heads, groups)
    q_start = q_block * BLOCK_Q
    t0, y0, x0, extent_h, extent_w, slots = window_geometry(window, windows_h, windows_w, F, H, W, f, h, w,
                                                            off_t, off_y, off_x)
    if q_start >= slots:
        return

    q_slots = q_start + tl.arange(0, BLOCK_Q)
    q_tok = window_tokens(q_slots, t0, y0, x0, extent_h, extent_w, H, W)
    q_valid = q_slots < slots
    qt, qy, qx = slot_coordinates(q_slots, extent_h, extent_w)
    q_rel = bias_offset(window, qt, qy, qx, windows_h, windows_w, off_t, off_y, off_x, stride_bt, stride_by, stride_bx)
    cols = tl.arange(0, BLOCK_D)
    col_mask = cols < HEAD_DIM
    q, dout, lse_log2, delta = load_query_grads(
        q_ptr + b * stride_qb + head * stride_qh, dout_ptr + b * stride_gb + head * stride_gh,
        out_ptr + b * stride_ob + head * stride_oh, lse_ptr + b * stride_lb + head * stride_lh,
        q_tok, q_valid, stride_qn, stride_gn, stride_on, cols, col_mask)
    k_base = k_ptr + b * stride_kb + head * stride_kh
    v_base = v_ptr + b * stride_vb + head * stride_vh
    bias_base = bias_ptr + head * stride_bh

    dq = tl.zeros((BLOCK_Q, BLOCK_D), tl.float32)
    for k_start in range(0, slots, BLOCK_K):
        k_slots = k_start + tl.arange(0, BLOCK_K)
        k_valid = k_slots < slots
        k_tok = window_tokens(k_slots, t0, y0, x0, extent_h, extent_w, H, W)
        kt, ky, kx = slot_coordinates(k_slots, extent_h, extent_w)
        pairs = q_valid[:, None] & k_valid[None, :]
        k_rel = bias_offset(window, kt, ky, kx, windows_h, windows_w, off_t, off_y, off_x, stride_bt, stride_by,
                            stride_bx)
        bias = bias_scores(bias_base, q_rel, k_rel, pairs, bias_centre, HAS_BIAS)
        dq = dq_key_tile(dq, q, dout, lse_log2, delta, k_base, v_base, k_tok, k_valid, stride_kn, stride_vn,
                         cols, col_mask, pairs, bias, qk_scale, HAS_BIAS, DOT_PRECISION)
    store_rows(dq_ptr + b * stride_db + head * stride_dh, dq * scale, q_tok, q_valid, stride_dn, cols, col_mask)


class _Launch:
    """Shape-derived launch arguments shared by the kernels of one call."""

    def __init__(self, q: torch.Tensor, grid, window, shift, bias):
        B, N, heads, head_dim = q.shape
        if any(not 0 <= int(s) < int(w) for s, w in zip(shift, window)):
            raise ValueError(f"local_attention: shift must satisfy 0 <= shift < window on every axis, "
                             f"got shift {tuple(shift)} for window {tuple(window)}")
        slots = math.prod(window)
        dense = bias is not None and bias.dim() == 3
        if dense and tuple(bias.shape) != (heads, slots, slots):
            raise ValueError(f"local_attention: a dense bias must be (heads, T, T) = ({heads}, {slots}, {slots}) "
                             f"for the window {tuple(window)} clipped to the grid, got {tuple(bias.shape)}")
        if bias is not None and not dense and (bias.dim() != 4 or bias.shape[0] != heads or any(
                n % 2 == 0 or n < 2 * int(w) - 1 for n, w in zip(bias.shape[1:], window))):
            raise ValueError(f"local_attention: bias must be ({heads}, 2f-1, 2h-1, 2w-1) for a window of at "
                             f"least {tuple(window)}, got {tuple(bias.shape)}")
        self.windows = num_windows(grid, window, shift)
        self.offsets = tuple(axis_offset(int(w), int(s)) for w, s in zip(window, shift))
        self.window_tokens = math.prod(window)
        plan = tile_plan(self.window_tokens, key_tile(head_dim, q.dtype))
        self.block_k, self.windows_per_group, self.slots_per_window = plan
        self.groups = triton.cdiv(math.prod(self.windows), self.windows_per_group)
        # Slots a group spans: a packed group fills one tile, a lone window spans its tokens.
        self.group_slots = self.block_k if self.windows_per_group > 1 else self.window_tokens
        self.programs = B * self.groups * heads
        self.shape_args = (heads, self.groups, self.group_slots, self.windows[1], self.windows[2], *grid, *window,
                           *self.offsets)
        # Without a bias the kernels never read bias_ptr (HAS_BIAS is a compile-time flag): q stands in.
        self.bias = q if bias is None else bias
        self.bias_kind = NO_BIAS if bias is None else DENSE_BIAS if dense else TABLE_BIAS
        if dense:
            # A dense bias is read contiguous (heads x T^2 values: a copy only for a strided view),
            # a slot's "offset" being its index (strides h*w, w, 1) and bias_centre the row length.
            self.bias = bias.contiguous()
            self.bias_strides = (slots * slots, window[1] * window[2], window[2], 1)
            self.bias_centre = slots
        elif bias is not None:
            self.bias_strides = bias.stride()
            # The table entry of offset 0: (f'-1, h'-1, w'-1) for the user's (unclipped) window f' x h' x w'.
            self.bias_centre = sum((n - 1) // 2 * s for n, s in zip(bias.shape[1:], bias.stride()[1:]))
        else:
            self.bias_strides, self.bias_centre = (0, 0, 0, 0), 0
        self.meta = dict(
            HEAD_DIM=head_dim, BLOCK_K=self.block_k, BLOCK_D=head_dim_tile(head_dim),
            WINDOWS_PER_GROUP=self.windows_per_group, SLOTS_PER_WINDOW=self.slots_per_window,
            SINGLE_KEY_TILE=self.group_slots <= self.block_k, HAS_BIAS=self.bias_kind,
            DOT_PRECISION=dot_precision(q.dtype),
        )

    def query_blocks(self, meta):
        return (self.programs * triton.cdiv(self.group_slots, meta["BLOCK_Q"]),)

    def key_blocks(self, meta):
        return (self.programs * triton.cdiv(self.group_slots, self.block_k),)


def _check_tokens(q: torch.Tensor) -> None:
    # Window and token indices are computed in int32 inside a window group; addresses are int64.
    if q.shape[1] >= 2**31:
        raise ValueError(f"local_attention: the triton backend supports fewer than 2**31 tokens, got {q.shape[1]}")


def local_attn_fwd(q, k, v, grid, window, shift, bias, scale):
    """Backend protocol: (out, lse) of windowed attention with `shift` (0 <= shift < window, 0 where
    the window covers its axis) and an optional (heads, 2f'-1, 2h'-1, 2w'-1) bias table or dense
    (heads, T, T) bias."""
    q, k, v = (last_dim_contiguous(t) for t in (q, k, v))
    _check_tokens(q)
    B, N, heads, _ = q.shape
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    lse = torch.empty((B, heads, N), dtype=torch.float32, device=q.device)
    if q.numel() == 0:
        return out, lse
    launch = _Launch(q, grid, window, shift, bias)
    with device_guard(q):
        local_attn_fwd_kernel[launch.query_blocks](
            q, k, v, launch.bias, out, lse, *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *out.stride()[:3],
            *lse.stride()[:2], *launch.bias_strides, *launch.shape_args, launch.bias_centre, log2_scale(scale),
            **launch.meta,
        )
    return out, lse


def local_attn_bwd(dout, q, k, v, out, lse, grid, window, shift, bias, scale, bias_grad):
    """Backend protocol: (dq, dk, dv, dbias), dbias None unless `bias` is given and `bias_grad`."""
    dout, q, k, v, out, lse = (last_dim_contiguous(t) for t in (dout, q, k, v, out, lse))
    _check_tokens(q)
    dq, dk, dv = (torch.empty(q.shape, dtype=q.dtype, device=q.device) for _ in range(3))
    want_dbias = bias is not None and bias_grad
    if q.numel() == 0:
        return dq, dk, dv, (torch.zeros_like(bias) if want_dbias else None)
    launch = _Launch(q, grid, window, shift, bias)
    strides = (*dout.stride()[:3], *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *out.stride()[:3],
               *lse.stride()[:2], *launch.bias_strides, *dq.stride()[:3])
    scalars = (*launch.shape_args, launch.bias_centre, scale, log2_scale(scale))
    with device_guard(q):
        local_attn_bwd_kernel_dkdv[launch.key_blocks](
            dout, q, k, v, launch.bias, out, lse, dq, dk, dv, *strides, *scalars, **launch.meta,
        )
        if not launch.meta["SINGLE_KEY_TILE"]:
            local_attn_bwd_kernel_dq[launch.query_blocks](
                dout, q, k, v, launch.bias, out, lse, dq, *strides, *scalars, **launch.meta,
            )
        dbias = None
        if want_dbias:
            dbias = local_attn_dbias(dout, q, k, v, out, lse, grid, window, launch.offsets, launch.windows, bias,
                                     launch.bias, launch.bias_strides, launch.bias_centre, launch.bias_kind,
                                     log2_scale(scale), launch.meta["DOT_PRECISION"])
    return dq, dk, dv, dbias
