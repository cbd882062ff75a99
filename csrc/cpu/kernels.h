// The CPU kernels as plain C++ (no torch header): raw pointers, sizes and strides in, tasks out.
//
// Each op is split into independent tasks; `*_tasks` says how many, and the kernel functions run a
// range [begin, end) of them, so the torch glue (local_attn.cpp, ...) hands ranges to
// at::parallel_for. A task writes only its own rows, so no two threads write the same memory and
// the results do not depend on the thread count (bitwise determinism, no atomics).
#pragma once

#include <cstdint>

namespace logo_attn::cpu {

enum class Dtype { float32, float64, bfloat16 };

// A (B, N, heads, d) tensor with contiguous head_dim: element (b, n, h, c) at
// data + b * batch_stride + n * token_stride + h * head_stride + c (strides in elements).
struct Tensor4 {
  void* data;
  int64_t batch_stride, token_stride, head_stride;
};

struct AttnArgs {
  Dtype dtype;
  int64_t batch, heads, head_dim, q_tokens, k_tokens;
  double scale;
  int64_t grid[3], window[3];             // local attention only; window already clipped to grid
  Tensor4 q, k, v, out, dout, dq, dk, dv;  // backward reads dout, q, k, v, out; forward writes out
  void* lse;                              // (B, heads, q_tokens), contiguous, fp32 (fp64 for fp64)
  void* partial;                          // global backward: (B, heads, splits, k_tokens, head_dim) sums
  int64_t splits;                         // global backward: query ranges per (batch, head)
};

// Local attention: one task per (batch, window, head).
int64_t local_attn_tasks(const AttnArgs& a);
void local_attn_fwd(const AttnArgs& a, int64_t begin, int64_t end);
void local_attn_bwd(const AttnArgs& a, int64_t begin, int64_t end);

// Global attention. Forward: one task per (batch, head, block of queries).
int64_t global_attn_fwd_tasks(const AttnArgs& a);
void global_attn_fwd(const AttnArgs& a, int64_t begin, int64_t end);
// Backward: a.splits query ranges per (batch, head) (a choice made from the shapes only, so the
// summation order is fixed); each task writes its dQ rows and its partial dK/dV to a.partial, then
// one reduction task per (batch, head) sums the partials in order into dk and dv.
int64_t global_attn_bwd_splits(int64_t batch, int64_t heads, int64_t q_tokens);
void global_attn_bwd(const AttnArgs& a, int64_t begin, int64_t end);   // tasks: batch * heads * splits
void global_attn_bwd_reduce(const AttnArgs& a, int64_t begin, int64_t end);  // tasks: batch * heads

// Window pooling on (B, N, C) tensors with contiguous channels; one task per (batch, window,
// block of channels).
struct PoolArgs {
  Dtype dtype;
  int64_t batch, channels;
  int64_t grid[3], window[3];
  const void* in;  // forward: x (B, N, C); backward: dout (B, M, C)
  int64_t in_batch_stride, in_token_stride;
  void* out;  // forward: (B, M, C); backward: dx (B, N, C); contiguous
};
int64_t window_pool_tasks(const PoolArgs& a);
void window_pool_fwd(const PoolArgs& a, int64_t begin, int64_t end);
void window_pool_bwd(const PoolArgs& a, int64_t begin, int64_t end);

// Which instruction set the kernels run with on this CPU ("avx512", "avx2" or "baseline").
const char* cpu_isa_name();

}  // namespace logo_attn::cpu
