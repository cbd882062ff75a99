// Global attention over a few keys (at most kFewKeys: the pooled windows and prefix tokens), query
// row by query row, in the accumulation type float (fp32, bf16 and fp16 inputs).
//
// With so few keys the op moves far more bytes than it computes (each query row is read once and
// meets 8-32 keys), so it is laid out for one pass over memory: a task walks consecutive tokens
// and, for each group of kGroup tokens, every head, so q, out (dout, dq) are read and written as the
// whole rows they are in memory; the keys of all heads of the batch stay packed in L1/L2 for the
// task. A query's scores are 8-lane vectors (one per 8 keys, no padding to 16) built by broadcasting
// its values onto Kᵀ, so there is no horizontal sum per key; the 8 rows of a group share every key
// load and are independent FMA chains. Softmax, the log-sum-exp and the backward's P and dS stay in
// registers or a few hundred bytes of stack. fp32 rows of whole vectors are read and written in
// place (the softmax scale is folded into Kᵀ, so a query row needs no scaled copy): a copy into L1
// and back per group cost ~15 % of the forward and ~10 % of the backward.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <memory>
#include <new>
#include <type_traits>
#include <vector>

#include "dispatch.h"
#include "isa.h"

namespace logo_attn::cpu {

constexpr int64_t kFewKeys = 32;
using KeyVec = vec<float, 32>;  // 8 scores
constexpr int kKeyLanes = 8;
constexpr int kGroup = 8;  // query rows computed together: one lane each in a vector of row sums
static_assert(kGroup == kKeyLanes);

inline bool few_keys(int64_t keys) { return keys <= kFewKeys; }

// The key-side panels of every head of one batch element: per head Kᵀ and Vᵀ (d x chunks*8, the
// padding keys zero) for the products with a query row, K and V (keys x dim_padded) for the
// products that give one; plus the group's scratch. Packed again only when the batch changes.
struct FewKeyPanels {
  int64_t keys, chunks, d, dp, heads, packed_batch = -1;
  int64_t key_t, key_rows;  // floats per head of a transposed panel and of a row panel
  int64_t sum_rows;         // floats per head of dK's and dV's sums: every key of the chunks, padding too
  std::unique_ptr<float[], void (*)(float*)> storage{nullptr, [](float* p) { ::operator delete[](p, std::align_val_t(64)); }};
  float *kt, *vt, *k, *v;  // heads consecutive panels each
  float *dk, *dv;          // backward: this task's sums, heads x chunks*8 x dp
  float *qp, *gp, *op;     // kGroup x dp: Q, dO, and O (dQ), where they are converted (group_rows)
  float* zero;             // dp zeros: the rows past a group's end

  FewKeyPanels(int64_t n_keys, int64_t head_dim, int64_t n_heads)
      : keys(n_keys), chunks((n_keys + kKeyLanes - 1) / kKeyLanes), d(head_dim), dp(pad_to_vectors<float>(head_dim)),
        heads(n_heads) {
    key_t = d * chunks * kKeyLanes, key_rows = keys * dp, sum_rows = chunks * kKeyLanes * dp;
    const int64_t total = heads * (2 * key_t + 2 * key_rows + 2 * sum_rows) + (3 * kGroup + 1) * dp;
    float* p = static_cast<float*>(::operator new[](sizeof(float) * total, std::align_val_t(64)));
    std::fill(p, p + total, 0.0f);  // the padding columns and keys stay zero
    storage.reset(p);
    kt = p, vt = kt + heads * key_t, k = vt + heads * key_t, v = k + heads * key_rows;
    dk = v + heads * key_rows, dv = dk + heads * sum_rows;
    qp = dv + heads * sum_rows, gp = qp + kGroup * dp, op = gp + kGroup * dp, zero = op + kGroup * dp;
  }

  // scale Kᵀ (the scores' operand: the scale is folded there, so that query rows are read as they
  // are), K, V and Vᵀ (when `transposed_v`) of batch b's heads from the inputs.
  template <typename T> void pack(const Rows<const T>* k_heads, const Rows<const T>* v_heads, int64_t b,
                                  bool transposed_v, float scale) {
    if (packed_batch == b) return;
    packed_batch = b;
    const int64_t ld = chunks * kKeyLanes;
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t j = 0; j < keys; ++j) {
        const T* kr = k_heads[h].row(j);
        const T* vr = v_heads[h].row(j);
        for (int64_t c = 0; c < d; ++c) {
          const float kc = to_acc(kr[c]), vc = to_acc(vr[c]);
          kt[h * key_t + c * ld + j] = kc * scale, k[h * key_rows + j * dp + c] = kc;
          v[h * key_rows + j * dp + c] = vc;
          if (transposed_v) vt[h * key_t + c * ld + j] = vc;
        }
      }
  }
};

// Rows of each head of batch element b of t.
template <typename T> void head_rows(const Tensor4& t, int64_t b, int64_t heads, std::vector<Rows<const T>>& rows) {
  rows.resize(heads);
  for (int64_t h = 0; h < heads; ++h) rows[h] = slice<const T>(t, b, h);
}

// Calls FN<VB, CH, T> for the number CH of 8-key chunks that a.k_tokens (<= kFewKeys) needs; nothing
// for fp64 or x86's SSE2 fallback, which never take the few-keys path (global_uses_few_keys), so
// their instances are not compiled.
#define LOGO_ATTN_SWITCH_CHUNKS(FN, ...)                          \
  if constexpr (!std::is_same_v<T, double> && kTunedLevel<VB>) { \
    switch ((a.k_tokens + kKeyLanes - 1) / kKeyLanes) {           \
      case 1: return FN<VB, 1, T>(__VA_ARGS__);                   \
      case 2: return FN<VB, 2, T>(__VA_ARGS__);                   \
      case 3: return FN<VB, 3, T>(__VA_ARGS__);                   \
      default: return FN<VB, 4, T>(__VA_ARGS__);                  \
    }                                                             \
  }

// The float rows of a group: where the input is fp32 and its rows hold whole vectors (d == dp), the
// input rows themselves, read in place; else converted into `buf` (kGroup x dp). Rows past the
// group's end read zeros: their results are computed and dropped, and their gradient shares are zero.
template <int VB, typename T>
LOGO_INLINE void group_rows(Rows<const T> src, int64_t n0, int rows, const FewKeyPanels& ws, float* buf,
                            const float* (&x)[kGroup]) {
  const int64_t d = ws.d, dp = ws.dp;
  if constexpr (std::is_same_v<T, float>) {
    if (d == dp) {
      for (int r = 0; r < kGroup; ++r) x[r] = r < rows ? src.row(n0 + r) : ws.zero;
      return;
    }
  }
  for (int r = 0; r < rows; ++r) widen_row<VB>(src.row(n0 + r), d, 1.0f, buf + r * dp);
  std::fill(buf + rows * dp, buf + kGroup * dp, 0.0f);
  for (int r = 0; r < kGroup; ++r) x[r] = buf + r * dp;
}

// Where a group's float results go: the output rows themselves where group_rows would read them in
// place, else `buf`, which store_group then converts.
template <typename T> LOGO_INLINE bool stores_in_place(const FewKeyPanels& ws) {
  return std::is_same_v<T, float> && ws.d == ws.dp;
}
template <typename T>
LOGO_INLINE void group_outputs(Rows<T> dst, int64_t n0, int rows, const FewKeyPanels& ws, float* (&o)[kGroup]) {
  for (int r = 0; r < kGroup; ++r) {
    if constexpr (std::is_same_v<T, float>) {
      if (stores_in_place<T>(ws)) {
        o[r] = r < rows ? dst.row(n0 + r) : nullptr;
        continue;
      }
    }
    o[r] = ws.op + r * ws.dp;
  }
}

template <int VB, typename T>
LOGO_INLINE void store_group(const float* src, int64_t dp, int rows, int64_t d, Rows<T> dst, int64_t n0) {
  for (int r = 0; r < rows; ++r) narrow_row<VB>(src + r * dp, d, 1.0f, dst.row(n0 + r));
}

// Rows [n0, n_end) of one head's slice (at most a group) fetched into L2 a group ahead: a group
// reads a head's d values of 8 rows that lie a token row apart, which the hardware prefetchers miss.
template <typename T> LOGO_INLINE void prefetch_group(Rows<T> x, int64_t n0, int64_t n_end, int64_t d, bool write) {
  for (int64_t n = n0; n < n_end; ++n) {
    const char* p = reinterpret_cast<const char*>(x.row(n));
    for (int64_t offset = 0; offset < d * int64_t(sizeof(T)); offset += 64) {
      if (write) __builtin_prefetch(p + offset, 1, 2);
      else __builtin_prefetch(p + offset, 0, 2);
    }
  }
}

// s[r][kc] = sum_c x[r][c] * panel[c][kc*8 .. kc*8+8): the group's rows against the keys of a
// transposed panel, CH chunks of 8 keys.
template <int CH>
LOGO_INLINE void group_scores(const float* const (&x)[kGroup], const float* panel, int64_t d, KeyVec (&s)[kGroup][CH]) {
  for (int r = 0; r < kGroup; ++r)
    for (int c = 0; c < CH; ++c) s[r][c] = KeyVec{};
  for (int64_t c = 0; c < d; ++c) {
    KeyVec key[CH];
    for (int j = 0; j < CH; ++j) key[j] = load<float, 32>(panel + (c * CH + j) * kKeyLanes);
    for (int r = 0; r < kGroup; ++r) {
      const float a = x[r][c];
      for (int j = 0; j < CH; ++j) s[r][j] += a * key[j];
    }
  }
}

// Scores of the padding keys (j >= keys) set to -inf, which exp turns into exact zeros.
template <int CH> LOGO_INLINE void mask_keys(KeyVec (&s)[CH], int64_t keys) {
  vec<int32_t, 32> lane;
  for (int l = 0; l < kKeyLanes; ++l) lane[l] = l;
  const KeyVec minus_inf = KeyVec{} - std::numeric_limits<float>::infinity();
  for (int j = 0; j < CH; ++j) s[j] = lane + int32_t(j * kKeyLanes) < int32_t(keys) ? s[j] : minus_inf;
}

// o[r][:] = scale * sum_j w[r][j] * panel[j][:] for the group's `rows` rows (w: kGroup x ldw weights,
// panel: keys x dp).
template <int VB>
LOGO_INLINE void group_mix(const float* w, int64_t ldw, const float* panel, int64_t keys, int64_t dp,
                           float* const (&o)[kGroup], int rows, float scale) {
  constexpr int L = lanes<float, VB>;
  using V = vec<float, VB>;
  for (int64_t c = 0; c < dp; c += L) {
    V acc[kGroup];
    for (int r = 0; r < kGroup; ++r) acc[r] = V{};
    for (int64_t j = 0; j < keys; ++j) {
      const V row = load<float, VB>(panel + j * dp + c);
      for (int r = 0; r < kGroup; ++r) acc[r] += w[r * ldw + j] * row;
    }
    for (int r = 0; r < rows; ++r) store<float, VB>(o[r] + c, acc[r] * scale);
  }
}

// sums[j][:] += sum_r w[r][j] * x[r][:] over the CH*8 keys (the padding keys' weights are zero): the
// group's share of dV (w = P, x = dO) or, unscaled, of dK (dS, Q). Eight keys' accumulators at a
// time, so that each x vector is loaded once for eight FMAs; each sum adds the rows in order r.
template <int VB, int CH>
LOGO_INLINE void group_outer(const float* w, const float* const (&x)[kGroup], int64_t dp, float* sums) {
  constexpr int L = lanes<float, VB>;
  constexpr int ld = CH * kKeyLanes;
  using V = vec<float, VB>;
  for (int kc = 0; kc < CH; ++kc)
    for (int64_t c = 0; c < dp; c += L) {
      float* s = sums + kc * kKeyLanes * dp + c;
      V acc[kKeyLanes];
      for (int j = 0; j < kKeyLanes; ++j) acc[j] = load<float, VB>(s + j * dp);
      for (int r = 0; r < kGroup; ++r) {
        const V xr = load<float, VB>(x[r] + c);
        for (int j = 0; j < kKeyLanes; ++j) acc[j] += w[r * ld + kc * kKeyLanes + j] * xr;
      }
      for (int j = 0; j < kKeyLanes; ++j) store<float, VB>(s + j * dp, acc[j]);
    }
}

// Forward of one group of rows and one head: out rows, and the rows' log-sum-exp into lse[0..rows).
// The scale is in the Kᵀ panel (FewKeyPanels::pack).
template <int VB, int CH, typename T>
LOGO_INLINE void few_keys_fwd_group(Rows<const T> q, Rows<T> out, float* lse, int64_t n0, int rows,
                                    const FewKeyPanels& ws, int64_t h) {
  const int64_t ld = CH * kKeyLanes;
  const float* x[kGroup];
  float* o[kGroup];
  group_rows<VB>(q, n0, rows, ws, ws.qp, x);
  group_outputs(out, n0, rows, ws, o);
  KeyVec s[kGroup][CH];
  group_scores<CH>(x, ws.kt + h * ws.key_t, ws.d, s);
  alignas(64) float p[kGroup][CH * kKeyLanes];
  KeyVec row_max, row_sum;
  for (int r = 0; r < kGroup; ++r) {
    mask_keys<CH>(s[r], ws.keys);
    KeyVec m = s[r][0];
    for (int j = 1; j < CH; ++j) m = s[r][j] > m ? s[r][j] : m;
    const float mx = horizontal_max<float, 32>(m);
    KeyVec sum{};
    for (int j = 0; j < CH; ++j) s[r][j] = exp_vec<32>(s[r][j] - mx), sum += s[r][j];
    row_max[r] = mx, row_sum[r] = horizontal_sum<float, 32>(sum);
  }
  const KeyVec inv = 1.0f / row_sum, row_lse = row_max + log_vec<32>(row_sum);
  for (int r = 0; r < kGroup; ++r)
    for (int j = 0; j < CH; ++j) store<float, 32>(p[r] + j * kKeyLanes, s[r][j] * inv[r]);
  for (int r = 0; r < rows; ++r) lse[r] = row_lse[r];
  group_mix<VB>(&p[0][0], ld, ws.v + h * ws.key_rows, ws.keys, ws.dp, o, rows, 1.0f);
  if (!stores_in_place<T>(ws)) store_group<VB>(ws.op, ws.dp, rows, ws.d, out, n0);
}

// Backward of one group and one head: dq rows, and the group's shares of dK (unscaled) and dV added
// to the task's sums. P = exp(S - lse), dS = P * (dO Vᵀ - rowsum(P * dO Vᵀ)) (rowsum(dO * O) without O).
template <int VB, int CH, typename T>
LOGO_INLINE void few_keys_bwd_group(Rows<const T> dout, Rows<const T> q, Rows<T> dq, const float* lse, int64_t n0,
                                    int rows, float scale, FewKeyPanels& ws, int64_t h) {
  const int64_t ld = CH * kKeyLanes;
  const float *x[kGroup], *gx[kGroup];
  float* o[kGroup];
  group_rows<VB>(q, n0, rows, ws, ws.qp, x);
  group_rows<VB>(dout, n0, rows, ws, ws.gp, gx);
  group_outputs(dq, n0, rows, ws, o);
  KeyVec s[kGroup][CH], g[kGroup][CH];
  group_scores<CH>(x, ws.kt + h * ws.key_t, ws.d, s);
  group_scores<CH>(gx, ws.vt + h * ws.key_t, ws.d, g);
  alignas(64) float p[kGroup][CH * kKeyLanes], ds[kGroup][CH * kKeyLanes];
  for (int r = 0; r < kGroup; ++r) {
    mask_keys<CH>(s[r], ws.keys);
    const float shift = r < rows ? lse[r] : 0.0f;  // the zero rows: finite, and their dS is zero
    KeyVec dot{};
    for (int j = 0; j < CH; ++j) s[r][j] = exp_vec<32>(s[r][j] - shift), dot += s[r][j] * g[r][j];
    const float delta = horizontal_sum<float, 32>(dot);
    for (int j = 0; j < CH; ++j) {
      store<float, 32>(p[r] + j * kKeyLanes, s[r][j]);
      store<float, 32>(ds[r] + j * kKeyLanes, s[r][j] * (g[r][j] - delta));
    }
  }
  group_mix<VB>(&ds[0][0], ld, ws.k + h * ws.key_rows, ws.keys, ws.dp, o, rows, scale);
  if (!stores_in_place<T>(ws)) store_group<VB>(ws.op, ws.dp, rows, ws.d, dq, n0);
  group_outer<VB, CH>(&p[0][0], gx, ws.dp, ws.dv + h * ws.sum_rows);
  group_outer<VB, CH>(&ds[0][0], x, ws.dp, ws.dk + h * ws.sum_rows);
}

}  // namespace logo_attn::cpu
