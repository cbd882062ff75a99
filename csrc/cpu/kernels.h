// The CPU kernels as plain C++ (no torch header): raw pointers, sizes and strides in, tasks out.
//
// Each op is split into independent tasks; `*_tasks` says how many, and the kernel functions run a
// range [begin, end) of them, so the torch glue (ops.cpp) hands ranges to
// at::parallel_for. A task writes only its own rows, so no two threads write the same memory and
// the results do not depend on the thread count (bitwise determinism, no atomics).
#pragma once

#include <cstdint>

#include "../kernel_args.h"

namespace logo_attn::cpu {

// Backward reads dout, q, k, v and lse, not the forward output: with all of a query's keys in one
// task, rowsum(dO * O) = rowsum(P * dO Vᵀ) comes from what backward computes anyway.

// Local attention. Forward: one task per (batch, window, head). Backward: one task per (chunk,
// head), a chunk being a fixed range of consecutive (batch, window) items: one item each unless a
// dense bias's gradient is computed, whose T x T partials would otherwise take items x heads x T^2
// memory; then a count chosen from the shapes alone (local_attn_bwd_chunks). With a.dbias_partial,
// each task sums its dS by table entry (or slot pair) there, and the reduction (tasks:
// local_attn_dbias_tasks, blocks of entries of each head) adds the chunks, in order, into a.dbias.
int64_t local_attn_fwd_tasks(const AttnArgs& a);
void local_attn_fwd(const AttnArgs& a, int64_t begin, int64_t end);
int64_t local_attn_bwd_chunks(const AttnArgs& a, bool bias_grad);
int64_t local_attn_bwd_tasks(const AttnArgs& a);
void local_attn_bwd(const AttnArgs& a, int64_t begin, int64_t end);
int64_t local_attn_dbias_tasks(const AttnArgs& a);
void local_attn_dbias_reduce(const AttnArgs& a, int64_t begin, int64_t end);

// Global attention. Forward: one task per (batch, block of queries, head).
int64_t global_attn_fwd_tasks(const AttnArgs& a);
void global_attn_fwd(const AttnArgs& a, int64_t begin, int64_t end);
// Backward: a.splits query ranges per (batch, head) (a choice made from the shapes only, so the
// summation order is fixed); each task writes its dQ rows and its partial dK/dV to a.partial
// (B, heads, splits, 2, k_tokens, head_dim), then one reduction task per (batch, head) sums the
// partials in order into dk and dv.
int64_t global_attn_bwd_splits(int64_t batch, int64_t heads, int64_t q_tokens);
void global_attn_bwd(const AttnArgs& a, int64_t begin, int64_t end);   // tasks: batch * heads * splits
void global_attn_bwd_reduce(const AttnArgs& a, int64_t begin, int64_t end);  // tasks: batch * heads

// Window pooling: one task per (batch, window, block of channels).
int64_t window_pool_tasks(const PoolArgs& a);
void window_pool_fwd(const PoolArgs& a, int64_t begin, int64_t end);
void window_pool_bwd(const PoolArgs& a, int64_t begin, int64_t end);

// Which instruction set the kernels run with on this CPU ("avx512", "avx2" or "baseline").
const char* cpu_isa_name();

}  // namespace logo_attn::cpu
