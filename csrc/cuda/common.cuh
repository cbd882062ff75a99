// Device helpers shared by the CUDA kernels: storage-type conversions, warp reductions, strided row
// access, the window geometry, and the dtype / head-dim dispatch of the launchers.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "../kernel_args.h"
#include "../window_geometry.h"

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

// Window `index` (row-major over the grid of windows, window_geometry.h) of an F x H x W grid,
// shifted or not: its first token's coordinates and its size, clipped at the grid's border.
struct Window {
  int64_t origin[3], size[3], grid[3];
  int64_t lead[3];  // how far the origin lies past the nominal window's start (a leading partial window)

  __host__ __device__ Window(const WindowPartition& partition, int64_t index) {
    int64_t lo[3], hi[3];
    partition.segments(index, lo, hi, lead);
    for (int axis = 0; axis < 3; ++axis) {
      grid[axis] = partition.axis[axis].size, origin[axis] = lo[axis], size[axis] = hi[axis] - lo[axis];
    }
  }
  __device__ __forceinline__ int64_t tokens() const { return size[0] * size[1] * size[2]; }
  // The window-relative coordinates of the window's i-th token (row-major inside the window).
  // A window's token count fits in 32 bits (the op's tensors could not hold more), so the
  // decomposition uses 32-bit divisions.
  __device__ __forceinline__ void coords(int64_t i, int (&c)[3]) const {
    const int w = int(size[2]), hw = int(size[1]) * w, j = int(i);
    c[0] = j / hw, c[1] = j % hw / w, c[2] = j % w;
  }
  // The grid token at window-relative coordinates c (64-bit: the grid may be large).
  __device__ __forceinline__ int64_t token_at(const int (&c)[3]) const {
    return ((origin[0] + c[0]) * grid[1] + origin[1] + c[1]) * grid[2] + origin[2] + c[2];
  }
  // The grid token of the window's i-th token.
  __device__ __forceinline__ int64_t token(int64_t i) const {
    int c[3];
    coords(i, c);
    return token_at(c);
  }
  // The window's i-th token's position in the offset box (the bias tables' coordinates).
  __device__ __forceinline__ int64_t position(int64_t i, const OffsetBox& box) const {
    int c[3];
    coords(i, c);
    return box.position(c[0], c[1], c[2]);
  }
  // The window's i-th token's slot in a dense (heads, T, T) bias (its place in the nominal window).
  __device__ __forceinline__ int64_t slot(int64_t i, const SlotIndex& slots) const {
    int c[3];
    coords(i, c);
    return slots.position(c[0] + lead[0], c[1] + lead[1], c[2] + lead[2]);
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
