// Window pooling on CPU: one task per (batch, window, block of channels). Forward sums the window's
// token rows into an fp32 (fp64) row and divides by the window's own token count; backward writes
// that 1/count share of the window's gradient to each of its tokens. Both are memory-bound streams
// over contiguous channels, vectorised by the compiler for the ISA of the trampoline.
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

template <int VB, typename T> LOGO_INLINE void pool_fwd(const PoolArgs& a, int64_t begin, int64_t end) {
  using A = acc_t<T>;
  const WindowGrid g(a.grid, a.window, kNoShift);
  std::vector<int64_t> ids(g.max_tokens());
  A sum[kChannelBlock];
  for (int64_t task = begin; task < end; ++task) {
    const PoolTask t(a, g, task, ids.data());
    const T* x = static_cast<const T*>(a.in) + t.b * a.in_batch_stride + t.c0;
    std::fill(sum, sum + t.width, A(0));
    for (int64_t i = 0; i < t.n; ++i) {
      const T* row = x + ids[i] * a.in_token_stride;
      for (int64_t c = 0; c < t.width; ++c) sum[c] += to_acc(row[c]);
    }
    const A inv = A(1) / A(t.n);
    T* out = static_cast<T*>(a.out) + (t.b * g.windows() + t.window) * a.channels + t.c0;
    for (int64_t c = 0; c < t.width; ++c) out[c] = from_acc<T>(sum[c] * inv);
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
