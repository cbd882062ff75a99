"""Tile-level attention maths shared by the local and the global kernels.

A tile is a block of query rows against a block of key rows. Scores are kept in the log2 domain
(``qk_scale = scale * log2(e)``, ``exp2`` instead of ``exp``), as flash-attention does, and the
log-sum-exp handed between forward and backward is stored in natural log like the reference's.
Backward formulas (reference.py): P = exp(S - lse), dV = P^T dO, dS = P * (dO V^T - delta) with
delta = rowsum(dO * O), dQ = dS K * scale, dK = dS^T Q * scale.
"""

import math

import triton
import triton.language as tl

# Globals read inside kernels must be constexpr objects (the GPU compiler refuses plain floats).
LOG2E = tl.constexpr(math.log2(math.e))
LN2 = tl.constexpr(math.log(2.0))


def log2_scale(scale: float) -> float:
    """The softmax scale in the log2 domain the kernels use (exp2 is the native instruction)."""
    return scale * math.log2(math.e)


@triton.jit
def program_coordinates(blocks, heads, units):
    """(block, batch, unit, head) of this program, from a 1-D launch over (batch, unit, head, block).

    The block (a query or key block of a window group or a query chunk) varies fastest, so the
    programs that read the same K/V (or the same queries) run back to back and find them in L2;
    one launch axis also avoids the 65535 limit of the others. Ids are int64 before any address.
    """
    pid = tl.program_id(0).to(tl.int64)
    block = (pid % blocks).to(tl.int32)
    rest = pid // blocks
    head = rest % heads
    unit = (rest // heads) % units
    return block, rest // (heads * units), unit, head


@triton.jit
def load_rows(ptr, rows, row_mask, stride_row, cols, col_mask):
    """A (len(rows), len(cols)) tile of a row-major view: rows are token indices, cols the head dim."""
    offsets = rows.to(tl.int64)[:, None] * stride_row + cols[None, :]
    return tl.load(ptr + offsets, mask=row_mask[:, None] & col_mask[None, :], other=0.0)


@triton.jit
def store_rows(ptr, value, rows, row_mask, stride_row, cols, col_mask):
    offsets = rows.to(tl.int64)[:, None] * stride_row + cols[None, :]
    tl.store(ptr + offsets, value.to(ptr.dtype.element_ty), mask=row_mask[:, None] & col_mask[None, :])


@triton.jit
def load_query_grads(q_base, g_base, o_base, l_base, rows, row_mask, stride_qn, stride_gn, stride_on, cols, col_mask):
    """What backward needs per query row: q, dO, the saved lse (log2 domain) and delta = rowsum(dO * O)."""
    q = load_rows(q_base, rows, row_mask, stride_qn, cols, col_mask)
    dout = load_rows(g_base, rows, row_mask, stride_gn, cols, col_mask)
    out = load_rows(o_base, rows, row_mask, stride_on, cols, col_mask)
    lse_log2 = tl.load(l_base + rows, mask=row_mask, other=0.0) * LOG2E
    return q, dout, lse_log2, tl.sum(out.to(tl.float32) * dout.to(tl.float32), 1)


@triton.jit
def has_nonfinite(x):
    """Whether the tile holds a NaN or an infinity (a NaN fails the comparison too)."""
    return tl.max(tl.where(tl.abs(x) < float("inf"), 0, 1)) == 1


# Which bias a kernel adds (its HAS_BIAS flag): none, a relative-position table, a dense slot-pair bias.
# The launchers pass these ints; compiled jit code reads a global only as a tl.constexpr (the
# interpreter reads any global, so only the sm_90 compile test sees the difference), hence the mirror.
NO_BIAS = 0
TABLE_BIAS = 1
DENSE_BIAS = 2
_DENSE_BIAS = tl.constexpr(DENSE_BIAS)


@triton.jit
def bias_scores(bias_base, q_rel, k_rel, pair_mask, bias_centre, HAS_BIAS: tl.constexpr):
    """The bias of a tile's pairs, in the log2 units of the scores, 0 off the mask (whose pairs may
    lie further apart than the table reaches). TABLE_BIAS: the table entry at bias_centre + q_rel -
    k_rel (rel: a slot's coordinates times the table's strides). DENSE_BIAS: the entry at
    q_rel * bias_centre + k_rel of a contiguous (T, T) head (rel: the slot's dense-bias index;
    bias_centre: the row length T). Nothing without HAS_BIAS."""
    if HAS_BIAS == _DENSE_BIAS:
        offsets = q_rel[:, None] * bias_centre + k_rel[None, :]
        return tl.load(bias_base + offsets, mask=pair_mask, other=0.0).to(tl.float32) * LOG2E
    elif HAS_BIAS:
        offsets = bias_centre + (q_rel[:, None] - k_rel[None, :])
        return tl.load(bias_base + offsets, mask=pair_mask, other=0.0).to(tl.float32) * LOG2E
    else:
        return 0.0


@triton.jit
def attend_key_tile(q, k_base, v_base, rows, row_mask, stride_kn, stride_vn, cols, col_mask, pair_mask, bias,
                    m_i, l_i, acc, qk_scale, HAS_BIAS: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """Forward: load one key tile and fold it into the running max, sum and output (online softmax).

    `m_i` starts at a large finite negative value rather than -inf, so a row whose keys are all
    masked keeps l_i = 0 (see `softmax_finish`) instead of NaN from (-inf) - (-inf). `bias`: the
    tile's `bias_scores` (HAS_BIAS).
    """
    k = load_rows(k_base, rows, row_mask, stride_kn, cols, col_mask)
    v = load_rows(v_base, rows, row_mask, stride_vn, cols, col_mask)
    s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale
    if HAS_BIAS:
        s += bias
    s = tl.where(pair_mask, s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1))
    alpha = tl.exp2(m_i - m_new)
    p = tl.exp2(s - m_new[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
    return m_new, l_i, acc


@triton.jit
def softmax_finish(m_i, l_i, acc):
    """Normalised output and natural-log lse of the rows, with softmax's own answers for
    non-finite scores: a row whose scores are all -inf (l_i = 0; also the padding rows, which are
    never stored) gives NaN and lse -inf, a row with a +inf score lse +inf, as torch.logsumexp does."""
    empty = l_i == 0.0
    l_safe = tl.where(empty, 1.0, l_i)
    lse = tl.where(m_i == float("inf"), m_i, (m_i + tl.log2(l_safe)) * LN2)
    out = tl.where(empty[:, None], float("nan"), acc / l_safe[:, None])
    return out, tl.where(empty, float("-inf"), lse)


@triton.jit
def _tile_grads(q, k, v, dout, lse_log2, delta, pair_mask, bias, qk_scale, HAS_BIAS: tl.constexpr,
                DOT_PRECISION: tl.constexpr):
    """Recomputed probabilities P and score gradients dS (w.r.t. the scores) of one tile.

    Both are exactly 0 outside the pair mask, also where dO V^T is not finite (0 x NaN)."""
    s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale
    if HAS_BIAS:
        s += bias
    p = tl.where(pair_mask, tl.exp2(s - lse_log2[:, None]), 0.0)
    dp = tl.dot(dout, tl.trans(v), input_precision=DOT_PRECISION)
    return p, tl.where(pair_mask, p * (dp - delta[:, None]), 0.0)


@triton.jit
def dkdv_query_tile(dk, dv, k, v, q_base, g_base, o_base, l_base, rows, row_mask, stride_qn, stride_gn, stride_on,
                    cols, col_mask, pair_mask, bias, dq_base, stride_dn, store_dq, scale, qk_scale,
                    WRITE_DQ: tl.constexpr, HAS_BIAS: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """Backward, key-block side: add one query block's dK (unscaled) and dV; with WRITE_DQ this key
    block holds all the queries' keys, so their dQ is complete here and is written (if `store_dq`)."""
    q, dout, lse_log2, delta = load_query_grads(q_base, g_base, o_base, l_base, rows, row_mask,
                                                stride_qn, stride_gn, stride_on, cols, col_mask)
    p, ds = _tile_grads(q, k, v, dout, lse_log2, delta, pair_mask, bias, qk_scale, HAS_BIAS, DOT_PRECISION)
    dv += tl.dot(tl.trans(p.to(dout.dtype)), dout, input_precision=DOT_PRECISION)
    dk += tl.dot(tl.trans(ds.to(q.dtype)), q, input_precision=DOT_PRECISION)
    if WRITE_DQ:
        dq = tl.dot(ds.to(k.dtype), k, input_precision=DOT_PRECISION) * scale
        # (a select, not `row_mask & store_dq`: Triton 3.9's interpreter mistypes a block & scalar of bools)
        store_rows(dq_base, dq, rows, tl.where(store_dq, row_mask, False), stride_dn, cols, col_mask)
    return dk, dv


@triton.jit
def dq_key_tile(dq, q, dout, lse_log2, delta, k_base, v_base, rows, row_mask, stride_kn, stride_vn, cols, col_mask,
                pair_mask, bias, qk_scale, HAS_BIAS: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """Backward, query-block side: add one key tile's contribution to dQ (unscaled). Used for
    one window or one key set at a time, so the contraction never mixes windows."""
    k = load_rows(k_base, rows, row_mask, stride_kn, cols, col_mask)
    v = load_rows(v_base, rows, row_mask, stride_vn, cols, col_mask)
    ds = _tile_grads(q, k, v, dout, lse_log2, delta, pair_mask, bias, qk_scale, HAS_BIAS, DOT_PRECISION)[1]
    return dq + tl.dot(ds.to(k.dtype), k, input_precision=DOT_PRECISION)
