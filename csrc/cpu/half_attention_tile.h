// A local-attention task (one window and head) in bf16/fp16 with its five products on a 16-bit
// matrix unit (HalfGemm, kernel_args.h: PyTorch's oneDNN brgemm, AMX where could_pack says so):
// attention_tile.h's computation with the operands kept in the input dtype instead of converted to
// fp32. Scores, softmax, dS and the bias and its gradient stay in fp32 as there; P and scale * dS
// are rounded to the input dtype for the products they enter, as PyTorch's CPU flash attention does.
//
// Operand layouts: a left operand (A) is row-major with its K padded to even with zeros; a right
// operand (B) is row-major, or in VNNI pairs (value (k, n) at ((k / 2) * N + n) * 2 + k % 2), with
// the same zero padding, and the B of the score products has the padded key count np as its N, so
// every score row is written whole, as in the fp32 tile (mask_padding then sets the padding to -inf).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>

#include "../kernel_args.h"
#include "attention_tile.h"

namespace logo_attn::cpu {

LOGO_INLINE int64_t even(int64_t k) { return (k + 1) & ~int64_t(1); }

// The panels of one task, allocated once per chunk of tasks. Key-side panels hold up to max_keys
// keys, query-side ones a query block.
template <typename T> struct HalfWorkspace {
  static constexpr int64_t kRoom = 16;  // floats after each score row set: bias fills overhang a vector
  int64_t keys_padded, dim_padded, block;
  std::unique_ptr<char[], void (*)(char*)> storage{nullptr, [](char* p) { ::operator delete[](p, std::align_val_t(64)); }};
  T *kt, *vt;       // B of S = Q Kᵀ and dP = dO Vᵀ: Kᵀ, Vᵀ (even(d) x keys_padded)
  T *k, *v;         // B of dQ = dS K and O = P V: K, V (even(keys) x d)
  T *q, *dout;      // A of S and dP: Q, dO (block x even(d))
  T *qb, *doutb;    // B of dK = dSᵀ Q and dV = Pᵀ dO: Q, dO (even(block) x d)
  T *p, *ds;        // A of O and dQ: P, scale dS (block x even(keys))
  T *pt, *dst;      // A of dV and dK: Pᵀ, scale dSᵀ (keys x even(block))
  float *s, *dp;    // block x keys_padded: scores / probabilities, dP then dS
  float* out;       // block x dim_padded: O or dQ before their store
  float *dk, *dv;   // keys x dim_padded: the task's dK, dV sums
  float* bias;      // keys_padded + kRoom: one query's biases
  float* row;       // 3 x block: row maxima, sums (then their inverses), lse
  int64_t* iota;    // 0, 1, ..., block - 1: the rows of a gathered panel
  T* zeros;         // head_dim zero values: the padding rows of the packed operands

  HalfWorkspace(int64_t max_keys, int64_t head_dim) {
    keys_padded = pad_to_vectors<float>(max_keys);
    dim_padded = pad_to_vectors<float>(head_dim);
    block = query_block(max_keys);
    const int64_t de = even(head_dim), ke = even(max_keys), be = even(block);
    const int64_t halves[] = {de * keys_padded, de * keys_padded, ke * head_dim, ke * head_dim, block * de,
                              block * de, be * head_dim, be * head_dim, block * ke, block * ke,
                              max_keys * be, max_keys * be};
    const int64_t floats[] = {block * keys_padded + kRoom, block * keys_padded + kRoom, block * dim_padded,
                              max_keys * dim_padded, max_keys * dim_padded, keys_padded + kRoom, 3 * block};
    int64_t bytes = 0;
    for (int64_t n : halves) bytes += pad_to_vectors<T>(n) * int64_t(sizeof(T));
    for (int64_t n : floats) bytes += pad_to_vectors<float>(n) * int64_t(sizeof(float));
    bytes += block * int64_t(sizeof(int64_t)) + pad_to_vectors<T>(head_dim) * int64_t(sizeof(T));
    char* cursor = static_cast<char*>(::operator new[](bytes, std::align_val_t(64)));
    std::memset(cursor, 0, bytes);  // every read is of written values; zeros keep it so if one is not
    storage.reset(cursor);
    int next = 0;
    for (T** panel : {&kt, &vt, &k, &v, &q, &dout, &qb, &doutb, &p, &ds, &pt, &dst})
      *panel = reinterpret_cast<T*>(cursor), cursor += pad_to_vectors<T>(halves[next++]) * int64_t(sizeof(T));
    next = 0;
    for (float** panel : {&s, &dp, &out, &dk, &dv, &bias, &row})
      *panel = reinterpret_cast<float*>(cursor), cursor += pad_to_vectors<float>(floats[next++]) * int64_t(sizeof(float));
    iota = reinterpret_cast<int64_t*>(cursor);
    for (int64_t i = 0; i < block; ++i) iota[i] = i;
    zeros = reinterpret_cast<T*>(iota + block);
  }
};

// a[i][c] = src.row(ids[i])[c] for c < d, zero up to ld: the A operand of n rows.
template <typename T> LOGO_INLINE void gather_rows(Rows<const T> src, const int64_t* ids, int64_t n, int64_t d, T* a,
                                                   int64_t ld) {
  for (int64_t i = 0; i < n; ++i) {
    std::memcpy(a + i * ld, src.row(ids[i]), d * sizeof(T));
    std::fill(a + i * ld + d, a + (i + 1) * ld, T{0});
  }
}

// B = srcᵀ (K = even(d), N = np, a multiple of 16 >= n): b(c, j) = src.row(ids[j])[c], zero for
// c >= d or j >= n (`zeros`: d zero values, the rows past n). Eight source rows at a time, so each
// B row gets 8 consecutive values (VNNI: 8 pairs) per store instead of scattered ones.
template <typename T> LOGO_INLINE void pack_transposed_b(Rows<const T> src, const int64_t* ids, int64_t n, int64_t d,
                                                         int64_t np, T* b, bool vnni, const T* zeros) {
  constexpr int kRows = 8;
  for (int64_t j0 = 0; j0 < np; j0 += kRows) {
    const T* rows[kRows];
    for (int r = 0; r < kRows; ++r) rows[r] = j0 + r < n ? src.row(ids[j0 + r]) : zeros;
    if (vnni) {
      for (int64_t c = 0; c + 1 < d; c += 2) {
        T* o = b + ((c / 2) * np + j0) * 2;
        for (int r = 0; r < kRows; ++r) o[2 * r] = rows[r][c], o[2 * r + 1] = rows[r][c + 1];
      }
      if (d % 2) {  // the last pair is (d - 1, padding)
        T* o = b + ((d / 2) * np + j0) * 2;
        for (int r = 0; r < kRows; ++r) o[2 * r] = rows[r][d - 1], o[2 * r + 1] = T{0};
      }
    } else {
      for (int64_t c = 0; c < d; ++c)
        for (int r = 0; r < kRows; ++r) b[c * np + j0 + r] = rows[r][c];
      if (d % 2) std::fill(b + d * np + j0, b + d * np + j0 + kRows, T{0});
    }
  }
}

// B = src (K = even(n), N = d): b(j, c) = src.row(ids[j])[c], zero for j >= n (`zeros`: d zero
// values). By pairs of rows, which VNNI interleaves.
template <typename T> LOGO_INLINE void pack_rows_b(Rows<const T> src, const int64_t* ids, int64_t n, int64_t d, T* b,
                                                   bool vnni, const T* zeros) {
  for (int64_t j = 0; j < n; j += 2) {
    const T* r0 = src.row(ids[j]);
    const T* r1 = j + 1 < n ? src.row(ids[j + 1]) : zeros;
    T* o = b + j * d;
    if (vnni) {
      for (int64_t c = 0; c < d; ++c) o[2 * c] = r0[c], o[2 * c + 1] = r1[c];
    } else {
      std::memcpy(o, r0, d * sizeof(T));
      std::memcpy(o + d, r1, d * sizeof(T));
    }
  }
}

// a[i][j] = T(scale * x[i][j]) for j < n, zero up to lda: m rows of x (row stride ldx) rounded.
template <typename T> LOGO_INLINE void round_rows(const float* x, int64_t ldx, int64_t m, int64_t n, float scale, T* a,
                                                  int64_t lda) {
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) a[i * lda + j] = from_acc<T>(scale * x[i * ldx + j]);
    std::fill(a + i * lda + n, a + (i + 1) * lda, T{0});
  }
}

// a[j][i] = T(scale * x[i][j]) for i < m, zero up to lda: the transpose of round_rows, n rows.
template <typename T> LOGO_INLINE void round_transposed(const float* x, int64_t ldx, int64_t m, int64_t n, float scale,
                                                        T* a, int64_t lda) {
  for (int64_t j = 0; j < n; ++j) {
    for (int64_t i = 0; i < m; ++i) a[j * lda + i] = from_acc<T>(scale * x[i * ldx + j]);
    std::fill(a + j * lda + m, a + (j + 1) * lda, T{0});
  }
}

// s = scale * s + the biases of query i over the padded row (whose padding is masked after).
template <int VB> LOGO_INLINE void scale_scores(float* s, int64_t i, int64_t n, int64_t np, float scale,
                                                const PairBias<float>& bias, float* scratch) {
  constexpr int L = lanes<float, VB>;
  const vec<float, VB> f = splat<float, VB>(scale);
  if (bias.table) {
    fill_pair_bias<float, VB>(scratch, i, n, bias);
    for (int64_t j = 0; j < np; j += L) store<float, VB>(s + j, load<float, VB>(s + j) * f + load<float, VB>(scratch + j));
  } else {
    for (int64_t j = 0; j < np; j += L) store<float, VB>(s + j, load<float, VB>(s + j) * f);
  }
}

// Forward of the task whose queries and keys are the n tokens ids: out rows and lse[ids].
template <int VB, typename T>
LOGO_INLINE void half_attention_fwd_tile(Rows<const T> q, Rows<const T> k, Rows<const T> v, Rows<T> out, float* lse,
                                         const int64_t* ids, int64_t n, int64_t d, float scale,
                                         const PairBias<float>& bias, HalfWorkspace<T>& ws, const HalfGemm& g,
                                         const NextRows& next) {
  const int64_t np = pad_to_vectors<float>(n), ne = even(n), de = even(d), dp = ws.dim_padded;
  pack_transposed_b(k, ids, n, d, np, ws.kt, g.vnni, ws.zeros);
  pack_rows_b(v, ids, n, d, ws.v, g.vnni, ws.zeros);
  for (int64_t q0 = 0; q0 < n; q0 += ws.block) {
    const int64_t m = std::min(ws.block, n - q0);
    const int64_t* qids = ids + q0;
    gather_rows(q, qids, m, d, ws.q, de);
    g.multiply(m, np, de, de, np, np, false, ws.q, ws.kt, ws.s);
    float *row_max = ws.row, *row_sum = ws.row + ws.block, *row_lse = ws.row + 2 * ws.block;
    for (int64_t i = 0; i < m; ++i) {
      scale_scores<VB>(ws.s + i * np, q0 + i, n, np, scale, bias, ws.bias);
      softmax_numerators<float, VB>(ws.s + i * np, n, np, row_max[i], row_sum[i]);
      next.fetch(q0 + i);
    }
    finish_softmax_rows<float, VB>(row_max, row_sum, row_lse, m);  // row_sum becomes 1 / sum
    for (int64_t i = 0; i < m; ++i) lse[qids[i]] = row_lse[i];
    round_rows(ws.s, np, m, n, 1.0f, ws.p, ne);
    g.multiply(m, d, ne, ne, d, dp, false, ws.p, ws.v, ws.out);
    store_rows<VB>(ws.out, dp, m, d, out, qids, 1.0f, row_sum);
  }
  for (int64_t i = n; i < next.n; ++i) next.fetch(i);
}

// Backward of the same task (n >= 1, as every window has): dq rows, and the task's dK, dV in ws.dk / ws.dv (n x dim_padded, fp32)
// for the caller to store; with a bias, its dS summed by offset into bias.grad (attention_bwd_tile's
// formulas: rowsum(dO * O) = rowsum(P * dP), so the forward output is not read).
template <int VB, typename T>
LOGO_INLINE void half_attention_bwd_tile(Rows<const T> dout, Rows<const T> q, Rows<const T> k, Rows<const T> v,
                                         const float* lse, Rows<T> dq, const int64_t* ids, int64_t n, int64_t d,
                                         float scale, const PairBias<float>& bias, HalfWorkspace<T>& ws,
                                         const HalfGemm& g, const NextRows& next) {
  const int64_t np = pad_to_vectors<float>(n), ne = even(n), de = even(d), dp = ws.dim_padded;
  pack_transposed_b(k, ids, n, d, np, ws.kt, g.vnni, ws.zeros);
  pack_transposed_b(v, ids, n, d, np, ws.vt, g.vnni, ws.zeros);
  pack_rows_b(k, ids, n, d, ws.k, g.vnni, ws.zeros);
  for (int64_t q0 = 0; q0 < n; q0 += ws.block) {
    const int64_t m = std::min(ws.block, n - q0), me = even(m);
    const int64_t* qids = ids + q0;
    gather_rows(q, qids, m, d, ws.q, de);
    gather_rows(dout, qids, m, d, ws.dout, de);
    pack_rows_b(Rows<const T>{ws.q, de}, ws.iota, m, d, ws.qb, g.vnni, ws.zeros);
    pack_rows_b(Rows<const T>{ws.dout, de}, ws.iota, m, d, ws.doutb, g.vnni, ws.zeros);
    g.multiply(m, np, de, de, np, np, false, ws.q, ws.kt, ws.s);
    g.multiply(m, np, de, de, np, np, false, ws.dout, ws.vt, ws.dp);
    for (int64_t i = 0; i < m; ++i) {
      float* p = ws.s + i * np;
      float* gr = ws.dp + i * np;
      scale_scores<VB>(p, q0 + i, n, np, scale, bias, ws.bias);
      mask_padding<float, VB>(p, n, np);
      exp_inplace<float, VB>(p, np, lse[qids[i]]);
      const vec<float, VB> delta = splat<float, VB>(dot_of<float, VB>(p, gr, np));
      for (int64_t j = 0; j < np; j += lanes<float, VB>)
        store<float, VB>(gr + j, load<float, VB>(p + j) * (load<float, VB>(gr + j) - delta));
      if (bias.grad) {  // as attention_bwd_tile: row i's dS spread now, added after the next row's
        spread_pair_grad<float, VB>(bias.spread[i & 1], gr, n, bias);
        if (i > 0) add_pair_grad<float, VB>(bias.spread[(i - 1) & 1], q0 + i - 1, bias);
      }
      next.fetch(q0 + i);
    }
    if (bias.grad) add_pair_grad<float, VB>(bias.spread[(m - 1) & 1], q0 + m - 1, bias);
    round_rows(ws.dp, np, m, n, scale, ws.ds, ne);  // dQ = (scale dS) K and dK = (scale dS)ᵀ Q
    round_transposed(ws.s, np, m, n, 1.0f, ws.pt, me);
    round_transposed(ws.dp, np, m, n, scale, ws.dst, me);
    const bool accumulate = q0 > 0;
    g.multiply(n, d, me, me, d, dp, accumulate, ws.pt, ws.doutb, ws.dv);
    g.multiply(n, d, me, me, d, dp, accumulate, ws.dst, ws.qb, ws.dk);
    g.multiply(m, d, ne, ne, d, dp, false, ws.ds, ws.k, ws.out);
    store_rows<VB>(ws.out, dp, m, d, dq, qids, 1.0f, static_cast<const float*>(nullptr));
  }
  for (int64_t i = n; i < next.n; ++i) next.fetch(i);
}

}  // namespace logo_attn::cpu
