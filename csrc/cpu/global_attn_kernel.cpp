// Global attention on CPU: every query over a short key set (the pooled windows and prefix tokens).
//
// Up to kFewKeys keys in fp32/bf16/fp16 (the usual case), few_keys.h's row kernels
// (global_attn_few_keys_{fwd,bwd}.cpp): forward tasks are (batch, block of tokens) over every head,
// backward tasks (batch, token range) over every head. With more keys, or in fp64,
// attention_tile.h's panels: forward tasks (batch, block of queries, head), backward tasks (batch,
// query range, head). Backward tasks write their own dQ rows and the dK/dV sums of their range;
// with one range per batch element (or (batch, head)) those are dK/dV, else a second pass adds the
// ranges' partial sums in range order. Either way the result is the same bitwise for any number of
// threads.
#include <initializer_list>
#include <vector>

#include "dispatch.h"
#include "global_attn_few_keys.h"
#include "isa.h"

namespace logo_attn::cpu {
namespace {

int64_t fwd_blocks(const AttnArgs& a) {
  const int64_t block = query_block(a.k_tokens);
  return (a.q_tokens + block - 1) / block;
}

// A task's queries: batch b, head h, query rows [q0, q1). Task = (b * ranges + r) * heads + h, so
// consecutive tasks read the same query rows for the next head.
struct QueryTask {
  int64_t b, h, range, q0, q1;
};
inline QueryTask query_task(const AttnArgs& a, int64_t task, int64_t ranges, int64_t block) {
  const int64_t h = task % a.heads, r = task / a.heads % ranges, b = task / a.heads / ranges;
  if (block > 0) return {b, h, r, r * block, std::min((r + 1) * block, a.q_tokens)};
  return {b, h, r, r * a.q_tokens / ranges, (r + 1) * a.q_tokens / ranges};  // block 0: even split
}

template <typename T>
NextRows next_rows(const AttnArgs& a, const std::vector<int64_t>& ids, int64_t task, int64_t end, int64_t ranges,
                   int64_t block, std::initializer_list<const Tensor4*> reads,
                   std::initializer_list<const Tensor4*> writes) {
  if (task >= end) return {};
  const QueryTask t = query_task(a, task, ranges, block);
  return task_rows<T>(t.b, t.h, ids.data() + t.q0, t.q1 - t.q0, a.head_dim, reads, writes);
}

template <int VB, typename T> LOGO_INLINE void global_fwd(const AttnArgs& a, int64_t begin, int64_t end) {
  using A = acc_t<T>;
  AttnWorkspace<A> ws(a.k_tokens, a.head_dim);
  const std::vector<int64_t> ids = iota(std::max(a.q_tokens, a.k_tokens));
  const int64_t blocks = fwd_blocks(a);
  for (int64_t task = begin; task < end; ++task) {
    const QueryTask t = query_task(a, task, blocks, ws.block);
    const NextRows next = next_rows<T>(a, ids, task + 1, end, blocks, ws.block, {&a.q}, {&a.out});
    attention_fwd_tile<VB, T>(slice<const T>(a.q, t.b, t.h), slice<const T>(a.k, t.b, t.h),
                              slice<const T>(a.v, t.b, t.h), slice<T>(a.out, t.b, t.h), lse_slice<A>(a, t.b, t.h),
                              ids.data() + t.q0, t.q1 - t.q0, ids.data(), a.k_tokens, a.head_dim, A(a.scale),
                              PairBias<A>{}, ws, next);
  }
}

template <int VB, typename T> LOGO_INLINE void global_bwd(const AttnArgs& a, int64_t begin, int64_t end) {
  using A = acc_t<T>;
  AttnWorkspace<A> ws(a.k_tokens, a.head_dim);
  const std::vector<int64_t> ids = iota(std::max(a.q_tokens, a.k_tokens));
  const int64_t n_k = a.k_tokens, d = a.head_dim, dp = ws.dim_padded;
  for (int64_t task = begin; task < end; ++task) {
    const QueryTask t = query_task(a, task, a.splits, 0);
    const int64_t b = t.b, h = t.h;
    const NextRows next = next_rows<T>(a, ids, task + 1, end, a.splits, 0, {&a.dout, &a.q}, {&a.dq});
    attention_bwd_tile<VB, T>(slice<const T>(a.dout, b, h), slice<const T>(a.q, b, h), slice<const T>(a.k, b, h),
                              slice<const T>(a.v, b, h), lse_slice<const A>(a, b, h),
                              slice<T>(a.dq, b, h), ids.data() + t.q0, t.q1 - t.q0, ids.data(), n_k, d, A(a.scale),
                              PairBias<A>{}, ws, next);
    if (a.splits == 1) {
      store_rows<VB>(ws.dk, dp, n_k, d, slice<T>(a.dk, b, h), ids.data(), A(1), static_cast<A*>(nullptr));
      store_rows<VB>(ws.dv, dp, n_k, d, slice<T>(a.dv, b, h), ids.data(), A(1), static_cast<A*>(nullptr));
    } else {
      A* dk = partial_slice<A>(a, b * a.heads + h, t.range);
      A* dv = dk + n_k * d;
      for (int64_t j = 0; j < n_k; ++j)
        for (int64_t c = 0; c < d; ++c) dk[j * d + c] = ws.dk[j * dp + c], dv[j * d + c] = ws.dv[j * dp + c];
    }
  }
}

template <int VB, typename T> LOGO_INLINE void global_bwd_reduce(const AttnArgs& a, int64_t begin, int64_t end) {
  using A = acc_t<T>;
  const int64_t n = a.k_tokens * a.head_dim;
  std::vector<A> sum(2 * n);
  for (int64_t bh = begin; bh < end; ++bh) {
    std::copy(partial_slice<A>(a, bh, 0), partial_slice<A>(a, bh, 0) + 2 * n, sum.begin());
    for (int64_t s = 1; s < a.splits; ++s) {
      const A* part = partial_slice<A>(a, bh, s);
      for (int64_t i = 0; i < 2 * n; ++i) sum[i] += part[i];
    }
    const int64_t b = bh / a.heads, h = bh % a.heads;
    const Rows<T> dk = slice<T>(a.dk, b, h), dv = slice<T>(a.dv, b, h);
    for (int64_t j = 0; j < a.k_tokens; ++j)
      for (int64_t c = 0; c < a.head_dim; ++c)
        dk.row(j)[c] = from_acc<T>(sum[j * a.head_dim + c]), dv.row(j)[c] = from_acc<T>(sum[n + j * a.head_dim + c]);
  }
}

LOGO_ATTN_CPU_KERNEL(GlobalFwdKernel, global_fwd, AttnArgs);
LOGO_ATTN_CPU_KERNEL(GlobalBwdKernel, global_bwd, AttnArgs);
LOGO_ATTN_CPU_KERNEL(GlobalBwdReduceKernel, global_bwd_reduce, AttnArgs);

}  // namespace

int64_t global_attn_fwd_tasks(const AttnArgs& a) {
  return global_uses_few_keys(a) ? few_keys_fwd_tasks(a) : a.batch * a.heads * fwd_blocks(a);
}

// Tile path: at least 32 (batch, head, range) tasks, so a many-core CPU has work for every core,
// and no splitting when batch x heads already gives that many (then backward is one pass, without
// partial sums); each range at least 256 queries long. Shapes only, never the thread count, so the
// summation order is fixed. An empty batch or zero heads has no task: one range.
int64_t global_attn_bwd_splits(const AttnArgs& a) {
  if (global_uses_few_keys(a)) return few_keys_splits(a);
  const int64_t slices = a.batch * a.heads;
  if (slices == 0) return 1;
  const int64_t wanted = (32 + slices - 1) / slices;
  return std::max<int64_t>(1, std::min(wanted, a.q_tokens / 256));
}

int64_t global_attn_bwd_tasks(const AttnArgs& a) {
  return global_uses_few_keys(a) ? a.batch * a.splits : a.batch * a.splits * a.heads;
}

void global_attn_fwd(const AttnArgs& a, int64_t begin, int64_t end) {
  if (global_uses_few_keys(a)) return global_few_keys_fwd(a, begin, end);
  run_for_cpu<GlobalFwdKernel>(&a, begin, end);
}
void global_attn_bwd(const AttnArgs& a, int64_t begin, int64_t end) {
  if (global_uses_few_keys(a)) return global_few_keys_bwd(a, begin, end);
  run_for_cpu<GlobalBwdKernel>(&a, begin, end);
}
void global_attn_bwd_reduce(const AttnArgs& a, int64_t begin, int64_t end) {
  run_for_cpu<GlobalBwdReduceKernel>(&a, begin, end);
}

}  // namespace logo_attn::cpu
