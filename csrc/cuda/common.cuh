// Device helpers shared by the CUDA kernels: storage-type conversions, warp reductions, strided row
// access, the window geometry, and the dtype / head-dim dispatch of the launchers.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "../kernel_args.h"

namespace logo_attn::cuda {

constexpr unsigned kFullMask = 0xffffffffu;
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T> __device__ __forceinline__ T from_float(float x) {
  if constexpr (std::is_same_v<T, __half>) return __float2half_rn(x);
  else if constexpr (std::is_same_v<T, __nv_bfloat16>) return __float2bfloat16_rn(x);
  else return x;
}

// Butterfly reductions: every lane ends with the same value, summed in the same order.
__device__ __forceinline__ float warp_max(float x) {
  for (int offset = 16; offset > 0; offset /= 2) x = fmaxf(x, __shfl_xor_sync(kFullMask, x, offset));
  return x;
}
__device__ __forceinline__ float warp_sum(float x) {
  for (int offset = 16; offset > 0; offset /= 2) x += __shfl_xor_sync(kFullMask, x, offset);
  return x;
}

// One (batch, head) slice of a (B, N, heads, d) tensor: row n at data + n * stride, d contiguous.
template <typename T> struct Rows {
  T* data;
  int64_t stride;
  __device__ __forceinline__ T* row(int64_t n) const { return data + n * stride; }
};

template <typename T> __device__ __forceinline__ Rows<T> slice(const Tensor4& t, int64_t b, int64_t h) {
  return {static_cast<T*>(t.data) + b * t.batch_stride + h * t.head_stride, t.token_stride};
}

__host__ __device__ __forceinline__ int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Window `index` (row-major over the grid of windows) of an F x H x W grid: its first token's
// coordinates and its size, clipped at the grid's border.
struct Window {
  int64_t origin[3], size[3], grid[3];

  __host__ __device__ Window(const int64_t (&g)[3], const int64_t (&w)[3], int64_t index) {
    const int64_t count[3] = {ceil_div(g[0], w[0]), ceil_div(g[1], w[1]), ceil_div(g[2], w[2])};
    const int64_t cell[3] = {index / (count[1] * count[2]), index / count[2] % count[1], index % count[2]};
    for (int axis = 0; axis < 3; ++axis) {
      grid[axis] = g[axis];
      origin[axis] = cell[axis] * w[axis];
      size[axis] = g[axis] - origin[axis] < w[axis] ? g[axis] - origin[axis] : w[axis];
    }
  }
  __host__ __device__ static int64_t count(const int64_t (&g)[3], const int64_t (&w)[3]) {
    return ceil_div(g[0], w[0]) * ceil_div(g[1], w[1]) * ceil_div(g[2], w[2]);
  }
  __device__ __forceinline__ int64_t tokens() const { return size[0] * size[1] * size[2]; }
  // The grid token of the window's i-th token (row-major inside the window).
  // A window's token count fits in 32 bits (the op's tensors could not hold more), so the
  // decomposition uses 32-bit divisions; the grid index is 64-bit.
  __device__ __forceinline__ int64_t token(int64_t i) const {
    const int w = int(size[2]), hw = int(size[1]) * w, j = int(i);
    const int t = j / hw, y = j % hw / w, x = j % w;
    return ((origin[0] + t) * grid[1] + origin[1] + y) * grid[2] + origin[2] + x;
  }
};

template <typename T> struct Tag {
  using type = T;
};
template <int N> using Int = std::integral_constant<int, N>;

// f(Tag<storage type>, Int<ceil(head_dim / 32)>) for the dtypes and head dims the kernels compute;
// each lane of a warp holds that many values of a row.
template <class F> cudaError_t dispatch_dtype(Dtype dtype, F&& f) {
  switch (dtype) {
    case Dtype::float32: return f(Tag<float>{});
    case Dtype::float16: return f(Tag<__half>{});
    case Dtype::bfloat16: return f(Tag<__nv_bfloat16>{});
    default: return cudaErrorInvalidValue;
  }
}
template <class F> cudaError_t dispatch_dtype_and_dim(Dtype dtype, int64_t head_dim, F&& f) {
  return dispatch_dtype(dtype, [&](auto tag) -> cudaError_t {
    if (head_dim <= 32) return f(tag, Int<1>{});
    if (head_dim <= 64) return f(tag, Int<2>{});
    if (head_dim <= 128) return f(tag, Int<4>{});
    if (head_dim <= 256) return f(tag, Int<8>{});
    return cudaErrorInvalidValue;
  });
}

// kernel<<<blocks, threads, smem_floats * 4, stream>>>(args...) on a 1-D grid, raising the dynamic
// shared-memory limit first when it is above the default 48 KiB (head dims above 64).
template <int threads, class Kernel, class... Args>
cudaError_t launch(Kernel kernel, int64_t blocks, int64_t smem_floats, cudaStream_t stream, Args... args) {
  if (blocks == 0) return cudaSuccess;
  if (blocks > 0x7fffffff) return cudaErrorInvalidConfiguration;
  const int smem = int(smem_floats * sizeof(float));
  if (smem > 48 * 1024) {
    const cudaError_t error = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    if (error != cudaSuccess) return error;
  }
  kernel<<<unsigned(blocks), threads, smem, stream>>>(args...);
  return cudaGetLastError();
}

}  // namespace logo_attn::cuda
