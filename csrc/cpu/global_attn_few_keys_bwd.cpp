// Global attention over a few keys, backward: tasks (batch, token range), every head, each writing its
// dQ rows and its range's dK/dV sums (the sums themselves with one range, else partials that
// global_attn_kernel.cpp's reduction adds in range order).
#include <vector>

#include "dispatch.h"
#include "global_attn_few_keys.h"
#include "isa.h"

namespace logo_attn::cpu {
namespace {

template <int VB, int CH, typename T>
LOGO_INLINE void few_keys_bwd(const AttnArgs& a, int64_t begin, int64_t end) {
  FewKeyPanels ws(a.k_tokens, a.head_dim, a.heads);
  std::vector<Rows<const T>> k, v;
  const int64_t n_k = a.k_tokens, d = a.head_dim, dp = ws.dp;
  const float scale = float(a.scale);  // dK's: its sums are of dSᵀ Q
  const std::vector<int64_t> ids = iota(n_k);
  for (int64_t task = begin; task < end; ++task) {
    const int64_t b = task / a.splits, r = task % a.splits;
    head_rows(a.k, b, a.heads, k), head_rows(a.v, b, a.heads, v);
    ws.pack(k.data(), v.data(), b, /*transposed_v=*/true, scale);
    std::fill(ws.dk, ws.dk + 2 * a.heads * ws.sum_rows, 0.0f);  // dk and dv are adjacent
    const int64_t n_end = (r + 1) * a.q_tokens / a.splits;
    for (int64_t n0 = r * a.q_tokens / a.splits; n0 < n_end; n0 += kGroup) {
      const int rows = int(std::min<int64_t>(kGroup, n_end - n0));
      const int64_t next_end = std::min(n_end, n0 + 2 * kGroup);
      for (int64_t h = 0; h < a.heads; ++h) {
        prefetch_group(slice<const T>(a.q, b, h), n0 + kGroup, next_end, a.head_dim, false);
        prefetch_group(slice<const T>(a.dout, b, h), n0 + kGroup, next_end, a.head_dim, false);
        prefetch_group(slice<T>(a.dq, b, h), n0 + kGroup, next_end, a.head_dim, true);
        few_keys_bwd_group<VB, CH, T>(slice<const T>(a.dout, b, h), slice<const T>(a.q, b, h), slice<T>(a.dq, b, h),
                                      lse_slice<const float>(a, b, h) + n0, n0, rows, scale, ws, h);
      }
    }
    for (int64_t h = 0; h < a.heads; ++h) {
      const float* dk = ws.dk + h * ws.sum_rows;
      const float* dv = ws.dv + h * ws.sum_rows;
      if (a.splits == 1) {
        store_rows<VB>(dk, dp, n_k, d, slice<T>(a.dk, b, h), ids.data(), scale, static_cast<float*>(nullptr));
        store_rows<VB>(dv, dp, n_k, d, slice<T>(a.dv, b, h), ids.data(), 1.0f, static_cast<float*>(nullptr));
      } else {
        float* pk = partial_slice<float>(a, b * a.heads + h, r);
        float* pv = pk + n_k * d;
        for (int64_t j = 0; j < n_k; ++j)
          for (int64_t c = 0; c < d; ++c) pk[j * d + c] = dk[j * dp + c] * scale, pv[j * d + c] = dv[j * dp + c];
      }
    }
  }
}

template <int VB, typename T> LOGO_INLINE void bwd_chunks(const AttnArgs& a, int64_t begin, int64_t end) {
  LOGO_ATTN_SWITCH_CHUNKS(few_keys_bwd, a, begin, end)
}

LOGO_ATTN_CPU_KERNEL(FewKeysBwdKernel, bwd_chunks, AttnArgs);

}  // namespace

void global_few_keys_bwd(const AttnArgs& a, int64_t begin, int64_t end) {
  run_for_cpu<FewKeysBwdKernel>(&a, begin, end);
}

}  // namespace logo_attn::cpu
