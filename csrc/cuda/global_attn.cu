// Global attention on CUDA: all queries over a short key set (attention.cuh with one problem per
// batch). The keys are few, so backward splits the queries of each (batch, head) into ranges to
// keep the GPU busy; each range writes fp32 partial dK/dV sums that a last kernel adds in range
// order (deterministic, no atomics).
#include <algorithm>

#include "attention.cuh"
#include "kernels.h"

namespace logo_attn::cuda {

cudaError_t global_attn_fwd(const AttnArgs& a, cudaStream_t stream) { return attention_fwd<GlobalSet>(a, stream); }

// Enough blocks for a large GPU (~512 dK/dV blocks), each range at least 256 queries long; from
// the shapes only, so the summation order never depends on the device.
int64_t global_attn_bwd_splits(const AttnArgs& a) {
  const int64_t blocks = a.batch * a.heads * ceil_div(a.k_tokens, kOwnedRows);
  const int64_t wanted = blocks > 0 ? ceil_div(512, blocks) : 1, most = a.q_tokens / 256;
  return std::max<int64_t>(1, std::min(wanted, most));
}

// dk, dv = the sum over ranges of the partial sums, in range order; one thread per element.
template <typename T> __global__ void __launch_bounds__(kThreads) global_attn_bwd_reduce_kernel(const AttnArgs a) {
  const int64_t d = a.head_dim, per_head = a.k_tokens * d;
  const int64_t x = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  if (x >= a.batch * a.heads * per_head) return;
  const int64_t bh = x / per_head, j = x % per_head / d, c = x % d;
  const float* part = static_cast<const float*>(a.partial) + bh * a.splits * 2 * per_head + j * d + c;
  float dk = 0.f, dv = 0.f;
  for (int64_t s = 0; s < a.splits; ++s) dk += part[2 * s * per_head], dv += part[(2 * s + 1) * per_head];
  const int64_t b = bh / a.heads, h = bh % a.heads;
  slice<T>(a.dk, b, h).row(j)[c] = from_float<T>(dk * float(a.scale));
  slice<T>(a.dv, b, h).row(j)[c] = from_float<T>(dv);
}

cudaError_t global_attn_bwd(const AttnArgs& a, cudaStream_t stream) {
  const cudaError_t error = attention_bwd<GlobalSet>(a, a.splits, stream);
  if (error != cudaSuccess || a.splits == 1) return error;
  return dispatch_dtype(a.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const int64_t elements = a.batch * a.heads * a.k_tokens * a.head_dim;
    return launch<kThreads>(global_attn_bwd_reduce_kernel<T>, ceil_div(elements, kThreads), 0, stream, a);
  });
}

}  // namespace logo_attn::cuda
