// Window pooling on CPU: one task per (batch, window, block of channels). Forward sums the window's
// token rows in fp32 (fp64) and divides by the window's own token count; backward writes that
// 1/count share of the window's gradient to each of its tokens. Both are memory-bound streams over
// contiguous channels, vectorised by the compiler for the ISA of the trampoline.
#include <type_traits>
#include <vector>

#include "dispatch.h"
#include "isa.h"
#include "windows.h"

namespace logo_attn::cpu {
namespace {

// Channels per task: a few KiB of each row, so tasks are many and each row access is contiguous.
constexpr int64_t kChannelBlock = 512;
// Pooling windows are never shifted.
constexpr int64_t kNoShift[3] = {0, 0, 0};

int64_t channel_blocks(const PoolArgs& a) { return (a.channels + kChannelBlock - 1) / kChannelBlock; }

// Decodes task = ((b * windows + w) * channel_blocks + cb) and fills the window's token list.
struct PoolTask {
  int64_t b, window, c0, width, n;
  PoolTask(const PoolArgs& a, const WindowGrid& g, int64_t task, int64_t* ids) {
    const int64_t blocks = channel_blocks(a), cb = task % blocks, bw = task / blocks;
    b = bw / g.windows(), window = bw % g.windows();
    c0 = cb * kChannelBlock, width = std::min(kChannelBlock, a.channels - c0);
    n = g.tokens(window, ids);
  }
};

// lanes<A, VB> values of p in the accumulation type A.
template <int VB, typename T, typename A = acc_t<T>> LOGO_INLINE vec<A, VB> load_acc(const T* p) {
  if constexpr (std::is_same_v<T, A>) return load<A, VB>(p);
  else return widen<VB>(p);
}

// out[0, NV * V) = inv * the sum of rows ids[0, n) of x, its NV vectors of sums held in registers
// over all the rows: a sum row kept on the stack, loaded and stored once per row, made the forward
// 1.7x slower on an AVX2 EPYC (written as a plain loop over channels, GCC jams two rows into a
// scalar loop).
template <int VB, int NV, typename T, typename A>
LOGO_INLINE void mean_rows(const T* x, const int64_t* ids, int64_t n, int64_t token_stride, A inv, T* out) {
  constexpr int V = lanes<A, VB>;
  vec<A, VB> sum[NV] = {};
  for (int64_t i = 0; i < n; ++i) {
    const T* row = x + ids[i] * token_stride;
    for (int k = 0; k < NV; ++k) sum[k] += load_acc<VB>(row + k * V);
  }
  for (int k = 0; k < NV; ++k) {
    if constexpr (std::is_same_v<T, A>) store<A, VB>(out + k * V, sum[k] * inv);
    else narrow<VB>(sum[k] * inv, out + k * V);
  }
}

template <int VB, typename T> LOGO_INLINE void pool_fwd(const PoolArgs& a, int64_t begin, int64_t end) {
  using A = acc_t<T>;
  constexpr int64_t V = lanes<A, VB>, W = 8 * V;  // channels per vector; per mean_rows<8> call
  static_assert(kChannelBlock % W == 0);
  const WindowGrid g(a.grid, a.window, kNoShift);
  std::vector<int64_t> ids(g.max_tokens());
  for (int64_t task = begin; task < end; ++task) {
    const PoolTask t(a, g, task, ids.data());
    const T* x = static_cast<const T*>(a.in) + t.b * a.in_batch_stride + t.c0;
    T* out = static_cast<T*>(a.out) + (t.b * g.windows() + t.window) * a.channels + t.c0;
    const A inv = A(1) / A(t.n);
    int64_t c = 0;
    for (; c + W <= t.width; c += W) mean_rows<VB, 8>(x + c, ids.data(), t.n, a.in_token_stride, inv, out + c);
    for (; c + V <= t.width; c += V) mean_rows<VB, 1>(x + c, ids.data(), t.n, a.in_token_stride, inv, out + c);
    for (; c < t.width; ++c) {  // the last channels, fewer than a vector
      A sum = 0;
      for (int64_t i = 0; i < t.n; ++i) sum += to_acc(x[ids[i] * a.in_token_stride + c]);
      out[c] = from_acc<T>(sum * inv);
    }
  }
}

template <int VB, typename T> LOGO_INLINE void pool_bwd(const PoolArgs& a, int64_t begin, int64_t end) {
  using A = acc_t<T>;
  const WindowGrid g(a.grid, a.window, kNoShift);
  const int64_t tokens = g.grid[0] * g.grid[1] * g.grid[2];
  std::vector<int64_t> ids(g.max_tokens());
  T share[kChannelBlock];
  for (int64_t task = begin; task < end; ++task) {
    const PoolTask t(a, g, task, ids.data());
    const T* dout = static_cast<const T*>(a.in) + t.b * a.in_batch_stride + t.window * a.in_token_stride + t.c0;
    const A inv = A(1) / A(t.n);
    for (int64_t c = 0; c < t.width; ++c) share[c] = from_acc<T>(to_acc(dout[c]) * inv);
    T* dx = static_cast<T*>(a.out) + t.b * tokens * a.channels + t.c0;
    for (int64_t i = 0; i < t.n; ++i) std::copy(share, share + t.width, dx + ids[i] * a.channels);
  }
}

LOGO_ATTN_CPU_KERNEL(PoolFwdKernel, pool_fwd, PoolArgs);
LOGO_ATTN_CPU_KERNEL(PoolBwdKernel, pool_bwd, PoolArgs);

}  // namespace

int64_t window_pool_tasks(const PoolArgs& a) {
  return a.batch * WindowPartition(a.grid, a.window, kNoShift).windows() * channel_blocks(a);
}

void window_pool_fwd(const PoolArgs& a, int64_t begin, int64_t end) { run_for_cpu<PoolFwdKernel>(&a, begin, end); }
void window_pool_bwd(const PoolArgs& a, int64_t begin, int64_t end) { run_for_cpu<PoolBwdKernel>(&a, begin, end); }

}  // namespace logo_attn::cpu
