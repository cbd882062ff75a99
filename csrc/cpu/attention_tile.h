// Exact softmax attention of a set of query rows over a set of key rows of one (batch, head) slice:
// the computation both local attention (one window) and global attention (one query block) are made of.
//
// Rows are gathered from the strided input by token index, converted to the accumulation type and
// packed into cache-resident panels (K and V transposed where they are the right-hand operand of a
// product), so every product is `matmul` on panels whose rows are padded to whole vectors. The
// scores of a query block (`query_block` rows x all keys) stay in cache: forward computes the row
// maxima and sums on them exactly (no online rescaling is needed when all keys fit), and backward
// recomputes the probabilities from the saved log-sum-exp, as flash attention does.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>

#include "simd.h"
#include "tile_gemm.h"

namespace logo_attn::cpu {

// One (batch, head) slice of a (B, N, heads, d) tensor: row n starts at data + n * stride, and its
// d values are contiguous.
template <typename T> struct Rows {
  T* data;
  int64_t stride;
  LOGO_INLINE T* row(int64_t n) const { return data + n * stride; }
};

// The rows the next task reads and writes, fetched into L2 while this task computes: a task reads
// d-value pieces of rows that lie a whole token row apart, a pattern the hardware prefetchers miss.
struct NextRows {
  static constexpr int kMaxTensors = 8;
  const char* base[kMaxTensors];
  int64_t stride[kMaxTensors];  // bytes
  bool write[kMaxTensors];
  int tensors = 0;
  const int64_t* ids = nullptr;
  int64_t n = 0, row_bytes = 0;

  template <typename T> void add(Rows<T> rows, bool written) {
    base[tensors] = reinterpret_cast<const char*>(rows.data);
    stride[tensors] = rows.stride * int64_t(sizeof(T));
    write[tensors++] = written;
  }
  // Row i (in the next task's order) of every tensor; nothing past its last row.
  LOGO_INLINE void fetch(int64_t i) const {
    if (i >= n) return;
    for (int t = 0; t < tensors; ++t) {
      const char* p = base[t] + ids[i] * stride[t];
      for (int64_t offset = 0; offset < row_bytes; offset += 64) {
        if (write[t]) __builtin_prefetch(p + offset, 1, 2);
        else __builtin_prefetch(p + offset, 0, 2);
      }
    }
  }
};

// The bias of one local attention task (one window and head), or none (table null). The tile's
// queries and keys are then the same list, the window's tokens in row-major order, and pair (i, j)
// has the bias table[centre + row_scale * pos[i] + pos[j]]: for a relative-position table, pos[i]
// is token i's position in the offset box (window_geometry.h), the table is in reversed order,
// centre the box's and row_scale -1; for a dense bias, pos[i] is token i's slot, centre 0 and
// row_scale T (row pos[i] of the head's T x T bias). For one query, the biases of a run of keys
// along the last axis (`run` long, pos rising by 1) are a contiguous slice either way. Backward
// adds each pair's dS at the same place of grad, this task's own partial gradient.
template <typename A> struct PairBias {
  const A* table = nullptr;  // this head's table, then >= 16 readable values
  A* grad = nullptr;
  const int32_t* pos = nullptr;
  int64_t centre = 0, row_scale = -1, run = 0, span = 0;  // span: the last key's position + 1
  // Scratch for the gradient, span + 16 values each, zero off the keys' positions: one query's dS
  // by position, two queries in flight (a query's spread is added while the next one's is stored).
  A* spread[2] = {nullptr, nullptr};
};

// s[j] = the bias of (query i, key j) for the n keys, for the score product to accumulate onto:
// each run's slice stored by whole vectors, stores only (a run's overhang is overwritten by the next
// run; the last one's lands past n, which mask_padding then sets to -inf, at most a vector past the
// row: the score panels have that much room after their last row).
template <typename A, int VB> LOGO_INLINE void fill_pair_bias(A* s, int64_t i, int64_t n, const PairBias<A>& bias) {
  constexpr int L = lanes<A, VB>;
  const A* line = bias.table + bias.centre + bias.row_scale * bias.pos[i];
  for (int64_t j0 = 0; j0 < n; j0 += bias.run)
    for (int64_t x = 0; x < bias.run; x += L) store<A, VB>(s + j0 + x, load<A, VB>(line + bias.pos[j0] + x));
}

// spread[pos[j]] = ds[j] for the n keys: each run stored by whole vectors with the lanes past the run
// zero, so the positions between runs stay zero. The loads of ds past a run's end stay in the
// workspace (at most a vector past the score panels) and their lanes are discarded.
template <typename A, int VB> LOGO_INLINE void spread_pair_grad(A* spread, const A* ds, int64_t n,
                                                                const PairBias<A>& bias) {
  using I = std::conditional_t<sizeof(A) == 4, int32_t, int64_t>;
  constexpr int L = lanes<A, VB>;
  vec<I, VB> lane;
  for (int l = 0; l < L; ++l) lane[l] = l;
  for (int64_t j0 = 0; j0 < n; j0 += bias.run)
    for (int64_t x = 0; x < bias.run; x += L)
      store<A, VB>(spread + bias.pos[j0] + x, lane + I(x) < I(bias.run) ? load<A, VB>(ds + j0 + x) : vec<A, VB>{});
}

// grad[centre + row_scale * pos[i] + u] += spread[u] over the span: query i's dS added by offset (or slot).
template <typename A, int VB> LOGO_INLINE void add_pair_grad(const A* spread, int64_t i, const PairBias<A>& bias) {
  constexpr int L = lanes<A, VB>;
  A* line = bias.grad + bias.centre + bias.row_scale * bias.pos[i];
  int64_t u = 0;
  for (; u + L <= bias.span; u += L) store<A, VB>(line + u, load<A, VB>(line + u) + load<A, VB>(spread + u));
  for (; u < bias.span; ++u) line[u] += spread[u];
}

// Query rows per block: the block's scores (and, in backward, their gradients) stay in L2.
inline int64_t query_block(int64_t keys) { return pad_to_vectors<float>(keys) <= 256 ? 128 : 48; }

// The panels of one task, allocated once per chunk of tasks and reused by every task in it.
template <typename A> struct AttnWorkspace {
  static constexpr int64_t kRoom = 64 / sizeof(A);
  int64_t keys_padded, dim_padded, block;
  std::unique_ptr<A[], void (*)(A*)> storage{nullptr, [](A* p) { ::operator delete[](p, std::align_val_t(64)); }};
  A *kt, *k, *vt, *v, *dk, *dv;  // key-side panels: Kᵀ, K, Vᵀ (d x keys_padded), V, dK, dV (keys x dim_padded)
  A *q, *dout, *out;             // block x dim_padded: scaled Q, dO, and O or dQ before their store
  A *s, *ds;                     // block x keys_padded: scores / probabilities, their gradients
  A* row;                        // 3 x block: row maxima, sums (then their inverses), lse (forward)

  AttnWorkspace(int64_t max_keys, int64_t head_dim) {
    keys_padded = pad_to_vectors<A>(max_keys);
    dim_padded = pad_to_vectors<A>(head_dim);
    block = query_block(max_keys);
    const int64_t key_panel = keys_padded * dim_padded, q_panel = block * dim_padded;
    const int64_t score_panel = block * keys_padded;
    // kRoom values after each score panel: the bias fills and dS loads run up to a vector past a row.
    const int64_t total = 6 * key_panel + 3 * q_panel + 2 * (score_panel + kRoom) + 3 * pad_to_vectors<A>(block);
    A* p = static_cast<A*>(::operator new[](sizeof(A) * total, std::align_val_t(64)));
    std::fill(p, p + total, A(0));  // every read is of written values; zeros keep it so if one is not
    storage.reset(p);
    for (A** panel : {&kt, &k, &vt, &v, &dk, &dv}) *panel = p, p += key_panel;
    for (A** panel : {&q, &dout, &out}) *panel = p, p += q_panel;
    for (A** panel : {&s, &ds}) *panel = p, p += score_panel + kRoom;
    row = p;
  }
};

// dst[i][c] = scale * src.row(ids[i])[c] for c < d, and 0 for the padding columns up to ld.
template <int VB, typename T, typename A>
LOGO_INLINE void pack_rows(Rows<const T> src, const int64_t* ids, int64_t n, int64_t d, A* dst, int64_t ld, A scale) {
  for (int64_t i = 0; i < n; ++i) {
    A* o = dst + i * ld;
    widen_row<VB>(src.row(ids[i]), d, scale, o);
    std::fill(o + d, o + ld, A(0));
  }
}

// dst[c][i] = src.row(ids[i])[c]: the transposed panel (d x ld), columns n..ld zero. Eight source
// rows at a time, so each panel row gets 8 consecutive values per store instead of scattered ones;
// 16-bit rows are widened a vector of columns at a time (one value at a time, fp16's conversion
// took ~40 % of the fp16 local forward on an AVX2 EPYC).
template <int VB, typename T, typename A>
LOGO_INLINE void pack_columns(Rows<const T> src, const int64_t* ids, int64_t n, int64_t d, A* dst, int64_t ld) {
  constexpr int kRows = 8;
  constexpr int64_t L = kSixteenBit<T> ? lanes<float, VB> : 1;  // columns widened at once
  for (int64_t i0 = 0; i0 < n; i0 += kRows) {
    const T* rows[kRows];
    for (int r = 0; r < kRows; ++r) rows[r] = src.row(ids[std::min(i0 + r, n - 1)]);  // tail: repeat the last
    int64_t c = 0;
    if constexpr (L > 1) {
      for (; c + L <= d; c += L) {
        alignas(64) float wide[kRows][L];
        for (int r = 0; r < kRows; ++r) store<float, VB>(wide[r], widen<VB>(rows[r] + c));
        for (int64_t l = 0; l < L; ++l)
          for (int r = 0; r < kRows; ++r) dst[(c + l) * ld + i0 + r] = wide[r][l];
      }
    }
    for (; c < d; ++c) {
      A* o = dst + c * ld + i0;  // ld is a multiple of 16: the tail's extra values stay in the padding
      for (int r = 0; r < kRows; ++r) o[r] = to_acc(rows[r][c]);
    }
  }
  for (int64_t c = 0; c < d; ++c) std::fill(dst + c * ld + n, dst + (c + 1) * ld, A(0));
}

// dst.row(ids[i])[c] = src[i][c] * scale * (row_scale ? row_scale[i] : 1), rounded to T.
template <int VB, typename T, typename A>
LOGO_INLINE void store_rows(const A* src, int64_t ld, int64_t n, int64_t d, Rows<T> dst, const int64_t* ids, A scale,
                            const A* row_scale) {
  for (int64_t i = 0; i < n; ++i)
    narrow_row<VB>(src + i * ld, d, row_scale ? scale * row_scale[i] : scale, dst.row(ids[i]));
}

// A row of scores (keys [0, n), padding up to ld): the padding set to -inf, which the exponentials
// turn into exact zeros. A vector select on the last vectors: scalar stores there would stall the
// vector loads that follow (failed store forwarding).
template <typename A, int VB> LOGO_INLINE void mask_padding(A* s, int64_t n, int64_t ld) {
  using I = std::conditional_t<sizeof(A) == 4, int32_t, int64_t>;
  constexpr int L = lanes<A, VB>;
  vec<I, VB> lane;
  for (int l = 0; l < L; ++l) lane[l] = l;
  const vec<A, VB> minus_inf = splat<A, VB>(-std::numeric_limits<A>::infinity());
  for (int64_t j = n / L * L; j < ld; j += L) {
    const vec<A, VB> v = load<A, VB>(s + j);
    store<A, VB>(s + j, lane + I(j) < I(n) ? v : minus_inf);
  }
}

// A row of n scores (padded to np) becomes exp(s - max), with its maximum and the sum.
template <typename A, int VB> LOGO_INLINE void softmax_numerators(A* s, int64_t n, int64_t np, A& max, A& sum) {
  mask_padding<A, VB>(s, n, np);
  max = max_of<A, VB>(s, np);
  exp_inplace<A, VB>(s, np, max);
  sum = sum_of<A, VB>(s, np);
}

// Forward: out rows qids and lse[qids] (lse points at this slice's N values) from keys kids.
template <int VB, typename T>
LOGO_INLINE void attention_fwd_tile(Rows<const T> q, Rows<const T> k, Rows<const T> v, Rows<T> out, acc_t<T>* lse,
                                    const int64_t* qids, int64_t n_q, const int64_t* kids, int64_t n_k, int64_t d,
                                    acc_t<T> scale, const PairBias<acc_t<T>>& bias, AttnWorkspace<acc_t<T>>& ws,
                                    const NextRows& next) {
  using A = acc_t<T>;
  const int64_t np = pad_to_vectors<A>(n_k), dp = ws.dim_padded;
  pack_columns<VB>(k, kids, n_k, d, ws.kt, np);
  pack_rows<VB>(v, kids, n_k, d, ws.v, dp, A(1));
  for (int64_t q0 = 0; q0 < n_q; q0 += ws.block) {
    const int64_t m = std::min(ws.block, n_q - q0);
    const int64_t* ids = qids + q0;
    pack_rows<VB>(q, ids, m, d, ws.q, dp, scale);
    if (bias.table)  // S = bias + (scale Q) Kᵀ: the product accumulates onto the biases
      for (int64_t i = 0; i < m; ++i) fill_pair_bias<A, VB>(ws.s + i * np, q0 + i, n_k, bias);
    matmul<A, VB>(m, np, d, ws.q, dp, 1, ws.kt, np, ws.s, np, bias.table != nullptr);
    A *row_max = ws.row, *row_sum = ws.row + ws.block, *row_lse = ws.row + 2 * ws.block;
    for (int64_t i = 0; i < m; ++i) {
      softmax_numerators<A, VB>(ws.s + i * np, n_k, np, row_max[i], row_sum[i]);
      next.fetch(q0 + i);
    }
    finish_softmax_rows<A, VB>(row_max, row_sum, row_lse, m);  // row_sum becomes 1 / sum
    for (int64_t i = 0; i < m; ++i) lse[ids[i]] = row_lse[i];
    matmul<A, VB>(m, dp, n_k, ws.s, np, 1, ws.v, dp, ws.out, dp, false);
    store_rows<VB>(ws.out, dp, m, d, out, ids, A(1), row_sum);
  }
  for (int64_t i = n_q; i < next.n; ++i) next.fetch(i);
}

// Backward: dq rows qids, and dK, dV of keys kids summed over these queries into ws.dk / ws.dv
// (n_k x dim_padded, in the accumulation type) for the caller to store or reduce; with a bias, its
// dS summed by offset into bias.grad.
//   P = exp(S - lse), dV = Pᵀ dO, dS = P * (dO Vᵀ - rowsum(dO * O)), dQ = scale dS K, dK = scale dSᵀ Q
// The forward output is not needed: every key of a query is in its row of P, so
// rowsum(dO * O) = rowsum(P * dO Vᵀ) is computed from what backward has anyway.
template <int VB, typename T>
LOGO_INLINE void attention_bwd_tile(Rows<const T> dout, Rows<const T> q, Rows<const T> k, Rows<const T> v,
                                    const acc_t<T>* lse, Rows<T> dq, const int64_t* qids,
                                    int64_t n_q, const int64_t* kids, int64_t n_k, int64_t d, acc_t<T> scale,
                                    const PairBias<acc_t<T>>& bias, AttnWorkspace<acc_t<T>>& ws,
                                    const NextRows& next) {
  using A = acc_t<T>;
  const int64_t np = pad_to_vectors<A>(n_k), dp = ws.dim_padded;
  pack_columns<VB>(k, kids, n_k, d, ws.kt, np);
  pack_rows<VB>(k, kids, n_k, d, ws.k, dp, A(1));
  pack_columns<VB>(v, kids, n_k, d, ws.vt, np);
  if (n_q == 0) {  // no query: dK = dV = 0 (the loop below would leave the previous task's sums)
    std::fill(ws.dk, ws.dk + n_k * dp, A(0));
    std::fill(ws.dv, ws.dv + n_k * dp, A(0));
  }
  for (int64_t q0 = 0; q0 < n_q; q0 += ws.block) {
    const int64_t m = std::min(ws.block, n_q - q0);
    const int64_t* ids = qids + q0;
    pack_rows<VB>(q, ids, m, d, ws.q, dp, scale);  // scaled: S = (scale Q) Kᵀ and dK = dSᵀ (scale Q)
    pack_rows<VB>(dout, ids, m, d, ws.dout, dp, A(1));
    if (bias.table)
      for (int64_t i = 0; i < m; ++i) fill_pair_bias<A, VB>(ws.s + i * np, q0 + i, n_k, bias);
    matmul<A, VB>(m, np, d, ws.q, dp, 1, ws.kt, np, ws.s, np, bias.table != nullptr);
    matmul<A, VB>(m, np, d, ws.dout, dp, 1, ws.vt, np, ws.ds, np, false);
    for (int64_t i = 0; i < m; ++i) {
      A* p = ws.s + i * np;
      A* g = ws.ds + i * np;
      mask_padding<A, VB>(p, n_k, np);
      exp_inplace<A, VB>(p, np, lse[ids[i]]);
      // rowsum(dO * O) = sum_j P_ij dP_ij, as O = P V: all keys are in this row, so `out` is not read.
      const vec<A, VB> delta = splat<A, VB>(dot_of<A, VB>(p, g, np));
      for (int64_t j = 0; j < np; j += lanes<A, VB>)
        store<A, VB>(g + j, load<A, VB>(p + j) * (load<A, VB>(g + j) - delta));
      if (bias.grad) {  // row i's dS spread by position now, added by offset after the next row's
        spread_pair_grad<A, VB>(bias.spread[i & 1], g, n_k, bias);
        if (i > 0) add_pair_grad<A, VB>(bias.spread[(i - 1) & 1], q0 + i - 1, bias);
      }
      next.fetch(q0 + i);
    }
    if (bias.grad) add_pair_grad<A, VB>(bias.spread[(m - 1) & 1], q0 + m - 1, bias);
    const bool accumulate = q0 > 0;
    matmul<A, VB>(n_k, dp, m, ws.s, 1, np, ws.dout, dp, ws.dv, dp, accumulate);  // Pᵀ dO
    matmul<A, VB>(n_k, dp, m, ws.ds, 1, np, ws.q, dp, ws.dk, dp, accumulate);    // dSᵀ (scale Q)
    matmul<A, VB>(m, dp, n_k, ws.ds, np, 1, ws.k, dp, ws.out, dp, false);
    store_rows<VB>(ws.out, dp, m, d, dq, ids, scale, static_cast<const A*>(nullptr));
  }
  for (int64_t i = n_q; i < next.n; ++i) next.fetch(i);
}

}  // namespace logo_attn::cpu
