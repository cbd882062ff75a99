"""Global attention over a short key set (the prefix tokens plus the pooled windows): Triton kernels.

Forward: one program per (batch, head, query block), the key set walked in tiles of up to
`tuning.key_tile` keys (one tile, i.e. K/V fully on-chip, for Nk <= 128 at fp16 and d <= 64) with
an online softmax. Backward is parallel over query *chunks*, not key blocks: with Nk = 8 a key-block split
would leave most of a GPU idle. A program owns (batch, query chunk, head, key block), walks the
chunk's query blocks and writes its partial dK/dV; the partials are then summed over chunks in a
fixed order (a deterministic two-stage reduction, so `torch.use_deterministic_algorithms(True)`
needs no other path). When the key set is one tile the same program also writes dQ; otherwise a
second kernel computes dQ per query block.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .attn_tile import (
    attend_key_tile, dkdv_query_tile, dq_key_tile, load_query_grads, load_rows, log2_scale, program_coordinates,
    softmax_finish, store_rows,
)
from .tuning import (
    ATTENTION_BWD_CONFIGS, ATTENTION_FWD_CONFIGS, MIN_TILE, dot_precision, head_dim_tile, key_tile,
    prune_attention_dkdv, prune_attention_dq, prune_attention_fwd,
)
from .utils import device_guard, last_dim_contiguous, next_power_of_2

# Query chunks of the backward are multiples of the largest query tile, so every config splits
# them into whole blocks.
CHUNK_ALIGN = max(config.kwargs["BLOCK_Q"] for config in ATTENTION_BWD_CONFIGS)
_KEY = ["BLOCK_K", "HEAD_DIM", "SINGLE_KEY_TILE"]


@triton.autotune(configs=ATTENTION_FWD_CONFIGS, key=_KEY, prune_configs_by={"early_config_prune": prune_attention_fwd})
@triton.jit
def global_attn_fwd_kernel(
    q_ptr, k_ptr, v_ptr, out_ptr, lse_ptr,
    stride_qb, stride_qn, stride_qh, stride_kb, stride_kn, stride_kh, stride_vb, stride_vn, stride_vh,
    stride_ob, stride_on, stride_oh, stride_lb, stride_lh,
    heads, queries, keys, qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr,
    SINGLE_KEY_TILE: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """Output and lse of one query block over the whole key set."""
    q_block, b, _, head = program_coordinates(tl.cdiv(queries, BLOCK_Q), heads, 1)
    q_tok = q_block * BLOCK_Q + tl.arange(0, BLOCK_Q)
    q_valid = q_tok < queries
    cols = tl.arange(0, BLOCK_D)
    col_mask = cols < HEAD_DIM
    q = load_rows(q_ptr + b * stride_qb + head * stride_qh, q_tok, q_valid, stride_qn, cols, col_mask)
    k_base = k_ptr + b * stride_kb + head * stride_kh
    v_base = v_ptr + b * stride_vb + head * stride_vh

    m_i = tl.full((BLOCK_Q,), -1.0e30, tl.float32)
    l_i = tl.zeros((BLOCK_Q,), tl.float32)
    acc = tl.zeros((BLOCK_Q, BLOCK_D), tl.float32)
    for k_start in range(0, keys, BLOCK_K):
        k_tok = k_start + tl.arange(0, BLOCK_K)
        k_valid = k_tok < keys
        m_i, l_i, acc = attend_key_tile(q, k_base, v_base, k_tok, k_valid, stride_kn, stride_vn, cols, col_mask,
                                        k_valid[None, :], 0.0, m_i, l_i, acc, qk_scale, False, DOT_PRECISION)

    out, lse = softmax_finish(m_i, l_i, acc)
    store_rows(out_ptr + b * stride_ob + head * stride_oh, out, q_tok, q_valid, stride_on, cols, col_mask)
    tl.store(lse_ptr + b * stride_lb + head * stride_lh + q_tok, lse, mask=q_valid)


@triton.autotune(configs=ATTENTION_BWD_CONFIGS, key=_KEY, prune_configs_by={"early_config_prune": prune_attention_dkdv})
@triton.jit
def global_attn_bwd_kernel_dkdv(
    dout_ptr, q_ptr, k_ptr, v_ptr, out_ptr, lse_ptr, dq_ptr, dk_ptr, dv_ptr,
    stride_gb, stride_gn, stride_gh, stride_qb, stride_qn, stride_qh, stride_kb, stride_kn, stride_kh,
    stride_vb, stride_vn, stride_vh, stride_ob, stride_on, stride_oh, stride_lb, stride_lh,
    stride_db, stride_dn, stride_dh, stride_pc, stride_pb, stride_pn, stride_ph,
    heads, queries, keys, chunks, chunk_queries, scale, qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr,
    SINGLE_KEY_TILE: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """Partial dK, dV of one key block over one query chunk (dk/dv_ptr: (chunks, B, Nk, heads, d)).

    dq shares the strides `stride_d*` of a (B, Nq, heads, d) tensor; the partials use `stride_p*`.
    With SINGLE_KEY_TILE the program also writes the chunk's dQ.
    """
    k_block, b, chunk, head = program_coordinates(tl.cdiv(keys, BLOCK_K), heads, chunks)
    k_tok = k_block * BLOCK_K + tl.arange(0, BLOCK_K)
    k_valid = k_tok < keys
    cols = tl.arange(0, BLOCK_D)
    col_mask = cols < HEAD_DIM
    k = load_rows(k_ptr + b * stride_kb + head * stride_kh, k_tok, k_valid, stride_kn, cols, col_mask)
    v = load_rows(v_ptr + b * stride_vb + head * stride_vh, k_tok, k_valid, stride_vn, cols, col_mask)
    q_base = q_ptr + b * stride_qb + head * stride_qh
    g_base = dout_ptr + b * stride_gb + head * stride_gh
    o_base = out_ptr + b * stride_ob + head * stride_oh
    l_base = lse_ptr + b * stride_lb + head * stride_lh
    dq_base = dq_ptr + b * stride_db + head * stride_dh

    dk = tl.zeros((BLOCK_K, BLOCK_D), tl.float32)
    dv = tl.zeros((BLOCK_K, BLOCK_D), tl.float32)
    chunk_start = chunk * chunk_queries
    chunk_end = tl.minimum(chunk_start + chunk_queries, queries)
    for q_start in range(chunk_start, chunk_end, BLOCK_Q):
        q_tok = q_start + tl.arange(0, BLOCK_Q)
        q_valid = q_tok < chunk_end
        dk, dv = dkdv_query_tile(dk, dv, k, v, q_base, g_base, o_base, l_base, q_tok, q_valid,
                                 stride_qn, stride_gn, stride_on, cols, col_mask, q_valid[:, None] & k_valid[None, :], 0.0,
                                 dq_base, stride_dn, True, scale, qk_scale, SINGLE_KEY_TILE, False, DOT_PRECISION)
    partial = chunk * stride_pc + b * stride_pb + head * stride_ph
    store_rows(dk_ptr + partial, dk * scale, k_tok, k_valid, stride_pn, cols, col_mask)
    store_rows(dv_ptr + partial, dv, k_tok, k_valid, stride_pn, cols, col_mask)


@triton.autotune(configs=ATTENTION_BWD_CONFIGS, key=_KEY, prune_configs_by={"early_config_prune": prune_attention_dq})
@triton.jit
def global_attn_bwd_kernel_dq(
    dout_ptr, q_ptr, k_ptr, v_ptr, out_ptr, lse_ptr, dq_ptr,
    stride_gb, stride_gn, stride_gh, stride_qb, stride_qn, stride_qh, stride_kb, stride_kn, stride_kh,
    stride_vb, stride_vn, stride_vh, stride_ob, stride_on, stride_oh, stride_lb, stride_lh,
    stride_db, stride_dn, stride_dh,
    heads, queries, keys, scale, qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr,
    SINGLE_KEY_TILE: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """dQ of one query block when the key set spans several key tiles."""
    q_block, b, _, head = program_coordinates(tl.cdiv(queries, BLOCK_Q), heads, 1)
    q_tok = q_block * BLOCK_Q + tl.arange(0, BLOCK_Q)
    q_valid = q_tok < queries
    cols = tl.arange(0, BLOCK_D)
    col_mask = cols < HEAD_DIM
    q, dout, lse_log2, delta = load_query_grads(
        q_ptr + b * stride_qb + head * stride_qh, dout_ptr + b * stride_gb + head * stride_gh,
        out_ptr + b * stride_ob + head * stride_oh, lse_ptr + b * stride_lb + head * stride_lh,
        q_tok, q_valid, stride_qn, stride_gn, stride_on, cols, col_mask)
    k_base = k_ptr + b * stride_kb + head * stride_kh
    v_base = v_ptr + b * stride_vb + head * stride_vh

    dq = tl.zeros((BLOCK_Q, BLOCK_D), tl.float32)
    for k_start in range(0, keys, BLOCK_K):
        k_tok = k_start + tl.arange(0, BLOCK_K)
        k_valid = k_tok < keys
        dq = dq_key_tile(dq, q, dout, lse_log2, delta, k_base, v_base, k_tok, k_valid, stride_kn, stride_vn,
                         cols, col_mask, q_valid[:, None] & k_valid[None, :], 0.0, qk_scale, False, DOT_PRECISION)
    store_rows(dq_ptr + b * stride_db + head * stride_dh, dq * scale, q_tok, q_valid, stride_dn, cols, col_mask)


def _meta(q: torch.Tensor, keys: int) -> dict:
    head_dim = q.shape[-1]
    block_k = min(max(next_power_of_2(keys), MIN_TILE), key_tile(head_dim, q.dtype))
    return dict(
        HEAD_DIM=head_dim, BLOCK_K=block_k, BLOCK_D=head_dim_tile(head_dim), SINGLE_KEY_TILE=keys <= block_k,
        DOT_PRECISION=dot_precision(q.dtype),
    )


def _query_blocks(B: int, queries: int, heads: int):
    return lambda meta: (B * heads * triton.cdiv(queries, meta["BLOCK_Q"]),)


def _check_tokens(q: torch.Tensor, k: torch.Tensor) -> None:
    if max(q.shape[1], k.shape[1]) >= 2**31:
        raise ValueError("global_attention: the triton backend supports fewer than 2**31 queries and keys")


def global_attn_fwd(q, k, v, scale):
    q, k, v = (last_dim_contiguous(t) for t in (q, k, v))
    _check_tokens(q, k)
    B, queries, heads, _ = q.shape
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    lse = torch.empty((B, heads, queries), dtype=torch.float32, device=q.device)
    if q.numel() == 0:
        return out, lse
    if k.shape[1] == 0:  # attention over no keys: an empty sum (the kernel would see rows with no score)
        return out.zero_(), lse.fill_(float("-inf"))
    with device_guard(q):
        global_attn_fwd_kernel[_query_blocks(B, queries, heads)](
            q, k, v, out, lse, *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *out.stride()[:3], *lse.stride()[:2],
            heads, queries, k.shape[1], log2_scale(scale), **_meta(q, k.shape[1]),
        )
    return out, lse


def _chunk_queries(q: torch.Tensor, key_blocks: int) -> int:
    """Queries per backward chunk: enough chunks that (chunks x batch x heads x key blocks) fills the GPU."""
    B, queries, heads, _ = q.shape
    programs = 2 * torch.cuda.get_device_properties(q.device).multi_processor_count if q.is_cuda else 8
    chunks = max(1, triton.cdiv(programs, B * heads * key_blocks))
    return triton.cdiv(triton.cdiv(queries, chunks), CHUNK_ALIGN) * CHUNK_ALIGN


def global_attn_bwd(dout, q, k, v, out, lse, scale):
    dout, q, k, v, out, lse = (last_dim_contiguous(t) for t in (dout, q, k, v, out, lse))
    _check_tokens(q, k)
    B, queries, heads, head_dim = q.shape
    keys = k.shape[1]
    dq = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    if q.numel() == 0 or keys == 0:  # no queries or no keys: every gradient is an empty sum
        return dq.zero_(), q.new_zeros(k.shape), q.new_zeros(v.shape)
    meta = _meta(q, keys)
    key_blocks = triton.cdiv(keys, meta["BLOCK_K"])
    chunk_queries = _chunk_queries(q, key_blocks)
    chunks = triton.cdiv(queries, chunk_queries)
    # One chunk writes dK/dV in place; several write fp32 partials, summed below in a fixed order.
    partial_dtype = q.dtype if chunks == 1 else torch.float32
    dk_parts, dv_parts = (
        torch.empty((chunks, B, keys, heads, head_dim), dtype=partial_dtype, device=q.device) for _ in range(2)
    )
    strides = (*dout.stride()[:3], *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *out.stride()[:3],
               *lse.stride()[:2], *dq.stride()[:3])
    with device_guard(q):
        global_attn_bwd_kernel_dkdv[(B * chunks * heads * key_blocks,)](
            dout, q, k, v, out, lse, dq, dk_parts, dv_parts, *strides, *dk_parts.stride()[:4],
            heads, queries, keys, chunks, chunk_queries, scale, log2_scale(scale), **meta,
        )
        if not meta["SINGLE_KEY_TILE"]:
            global_attn_bwd_kernel_dq[_query_blocks(B, queries, heads)](
                dout, q, k, v, out, lse, dq, *strides, heads, queries, keys, scale, log2_scale(scale), **meta,
            )
    if chunks == 1:
        return dq, dk_parts[0], dv_parts[0]
    return dq, dk_parts.sum(0).to(q.dtype), dv_parts.sum(0).to(q.dtype)
