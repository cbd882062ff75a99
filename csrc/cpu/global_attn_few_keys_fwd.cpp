// Global attention over a few keys, forward: tasks (batch, block of kTokenBlock tokens), every head,
// each computing its tokens' output rows and log-sum-exp group by group (few_keys.h).
#include <vector>

#include "dispatch.h"
#include "global_attn_few_keys.h"
#include "isa.h"

namespace logo_attn::cpu {
namespace {

template <int VB, int CH, typename T>
LOGO_INLINE void few_keys_fwd(const AttnArgs& a, int64_t begin, int64_t end) {
  FewKeyPanels ws(a.k_tokens, a.head_dim, a.heads);
  std::vector<Rows<const T>> k, v;
  const int64_t blocks = token_blocks(a);
  for (int64_t task = begin; task < end; ++task) {
    const int64_t b = task / blocks, n_end = std::min(a.q_tokens, (task % blocks + 1) * kTokenBlock);
    head_rows(a.k, b, a.heads, k), head_rows(a.v, b, a.heads, v);
    ws.pack(k.data(), v.data(), b, /*transposed_v=*/false, float(a.scale));
    for (int64_t n0 = task % blocks * kTokenBlock; n0 < n_end; n0 += kGroup) {
      const int rows = int(std::min<int64_t>(kGroup, n_end - n0));
      const int64_t next_end = std::min(n_end, n0 + 2 * kGroup);
      for (int64_t h = 0; h < a.heads; ++h) {
        prefetch_group(slice<const T>(a.q, b, h), n0 + kGroup, next_end, a.head_dim, false);
        prefetch_group(slice<T>(a.out, b, h), n0 + kGroup, next_end, a.head_dim, true);
        few_keys_fwd_group<VB, CH, T>(slice<const T>(a.q, b, h), slice<T>(a.out, b, h),
                                      lse_slice<float>(a, b, h) + n0, n0, rows, ws, h);
      }
    }
  }
}

template <int VB, typename T> LOGO_INLINE void fwd_chunks(const AttnArgs& a, int64_t begin, int64_t end) {
  LOGO_ATTN_SWITCH_CHUNKS(few_keys_fwd, a, begin, end)
}

LOGO_ATTN_CPU_KERNEL(FewKeysFwdKernel, fwd_chunks, AttnArgs);

}  // namespace

void global_few_keys_fwd(const AttnArgs& a, int64_t begin, int64_t end) {
  run_for_cpu<FewKeysFwdKernel>(&a, begin, end);
}

}  // namespace logo_attn::cpu
