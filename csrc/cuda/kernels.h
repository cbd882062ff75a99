// The CUDA kernels' launchers: raw pointers, sizes and strides (kernel_args.h) and a stream in, a
// cudaError_t out. This header and the .cu files include CUDA headers only (no torch), so plain
// `nvcc -c` compiles them on a machine without a CUDA PyTorch; ops.cpp does the rest.
//
// Every kernel accumulates in fp32 and computes fp16, bf16 and fp32 tensors with head_dim <= 256.
// No atomics: each output element is written by exactly one thread, and the global backward's
// partial dK/dV sums are added in a fixed order, so results are deterministic.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "../kernel_args.h"

namespace logo_attn::cuda {

constexpr int64_t kMaxHeadDim = 256;

// Shifted windows and the bias table as kernel_args.h describes them (fp32, the accumulation type).
cudaError_t local_attn_fwd(const AttnArgs& a, cudaStream_t stream);
// Needs a.delta: (B, heads, N) fp32 scratch; with a.dbias, a.dbias_partial too (kernel_args.h).
cudaError_t local_attn_bwd(const AttnArgs& a, cudaStream_t stream);

cudaError_t global_attn_fwd(const AttnArgs& a, cudaStream_t stream);
// Query ranges the global backward splits each (batch, head) into (from the shapes only); when it
// is more than 1, a.splits must be set to it and a.partial must hold
// (B, heads, splits, 2, k_tokens, head_dim) fp32.
int64_t global_attn_bwd_splits(const AttnArgs& a);
// Needs a.delta: (B, heads, q_tokens) fp32 scratch.
cudaError_t global_attn_bwd(const AttnArgs& a, cudaStream_t stream);

cudaError_t window_pool_fwd(const PoolArgs& a, cudaStream_t stream);
cudaError_t window_pool_bwd(const PoolArgs& a, cudaStream_t stream);

}  // namespace logo_attn::cuda
