// Window pooling on CUDA: one thread per output element, consecutive threads on consecutive
// channels so every row access is coalesced; fp32 sums, each window divided by its own token count.
#include "common.cuh"
#include "kernels.h"

namespace logo_attn::cuda {
namespace {

constexpr int kThreads = 256;

// Pooling windows are never shifted.
__host__ __device__ __forceinline__ WindowPartition pool_windows(const PoolArgs& a) {
  const int64_t no_shift[3] = {0, 0, 0};
  return WindowPartition(a.grid, a.window, no_shift);
}

// out[b, m, c] = mean over window m's tokens n of x[b, n, c].
template <typename T> __global__ void __launch_bounds__(kThreads) window_pool_fwd_kernel(const PoolArgs a) {
  const WindowPartition partition = pool_windows(a);
  const int64_t windows = partition.windows();
  const int64_t x = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  if (x >= a.batch * windows * a.channels) return;
  const int64_t c = x % a.channels, m = x / a.channels % windows, b = x / a.channels / windows;
  const Window w(partition, m);
  const T* in = static_cast<const T*>(a.in) + b * a.in_batch_stride + c;
  float sum = 0.f;
  for (int64_t i = 0; i < w.tokens(); ++i) sum += to_float(in[w.token(i) * a.in_token_stride]);
  static_cast<T*>(a.out)[x] = from_float<T>(sum / float(w.tokens()));
}

// dx[b, n, c] = dout[b, window of n, c] / that window's token count.
template <typename T> __global__ void __launch_bounds__(kThreads) window_pool_bwd_kernel(const PoolArgs a) {
  const int64_t tokens = a.grid[0] * a.grid[1] * a.grid[2];
  const int64_t x = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  if (x >= a.batch * tokens * a.channels) return;
  const int64_t c = x % a.channels, n = x / a.channels % tokens, b = x / a.channels / tokens;
  const int64_t coord[3] = {n / (a.grid[1] * a.grid[2]), n / a.grid[2] % a.grid[1], n % a.grid[2]};
  const WindowPartition partition = pool_windows(a);
  const int64_t m = partition.window_of(coord);
  const Window w(partition, m);
  const T* dout = static_cast<const T*>(a.in) + b * a.in_batch_stride + m * a.in_token_stride + c;
  static_cast<T*>(a.out)[x] = from_float<T>(to_float(*dout) / float(w.tokens()));
}

}  // namespace

cudaError_t window_pool_fwd(const PoolArgs& a, cudaStream_t stream) {
  return dispatch_dtype(a.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const int64_t elements = a.batch * pool_windows(a).windows() * a.channels;
    return launch<kThreads>(window_pool_fwd_kernel<T>, ceil_div(elements, kThreads), 0, stream, a);
  });
}

cudaError_t window_pool_bwd(const PoolArgs& a, cudaStream_t stream) {
  return dispatch_dtype(a.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const int64_t elements = a.batch * a.grid[0] * a.grid[1] * a.grid[2] * a.channels;
    return launch<kThreads>(window_pool_bwd_kernel<T>, ceil_div(elements, kThreads), 0, stream, a);
  });
}

}  // namespace logo_attn::cuda
