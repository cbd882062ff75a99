// Global attention on CPU: every query over a short key set (the pooled windows and prefix tokens).
//
// Up to kFewKeys keys in fp32/bf16/fp16 (the usual case), few_keys.h's row kernels: forward tasks are
// (batch, block of tokens) over every head, backward tasks (batch, token range) over every head.
// With more keys, or in fp64, attention_tile.h's panels: forward tasks (batch, block of queries,
// head), backward tasks (batch, query range, head). Backward tasks write their own dQ rows and the
// dK/dV sums of their range; with one range per batch element (or (batch, head)) those are dK/dV,
// else a second pass adds the ranges' partial sums in range order. Either way the result is the
// same bitwise for any number of threads.
#include <initializer_list>
#include <numeric>
#include <type_traits>
#include <vector>

#include "dispatch.h"
#include "few_keys.h"
#include "isa.h"

namespace logo_attn::cpu {
namespace {

// 0, 1, ..., n - 1: the token indices of a contiguous range are offsets into this.
inline std::vector<int64_t> iota(int64_t n) {
  std::vector<int64_t> ids(n);
  std::iota(ids.begin(), ids.end(), int64_t(0));
  return ids;
}

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

// The few-keys path takes fp32, bf16 and fp16 (fp64, the gradcheck dtype, keeps the tile path's libm exp).
bool uses_few_keys(const AttnArgs& a) { return a.dtype != Dtype::float64 && few_keys(a.k_tokens); }

// Few-keys forward tasks: (batch, block of kTokenBlock tokens), every head.
constexpr int64_t kTokenBlock = 64;
int64_t token_blocks(const AttnArgs& a) { return (a.q_tokens + kTokenBlock - 1) / kTokenBlock; }

// Few-keys backward: token ranges per batch element, from the shapes only (the summation order is
// fixed): at least 16 tasks where the tokens allow, each range at least 128 tokens long.
int64_t few_keys_splits(const AttnArgs& a) {
  if (a.batch == 0) return 1;
  const int64_t wanted = (16 + a.batch - 1) / a.batch;
  return std::max<int64_t>(1, std::min(wanted, a.q_tokens / 128));
}

template <typename T> void head_rows(const Tensor4& t, int64_t b, int64_t heads, std::vector<Rows<const T>>& rows) {
  rows.resize(heads);
  for (int64_t h = 0; h < heads; ++h) rows[h] = slice<const T>(t, b, h);
}

template <int VB, int CH, typename T>
LOGO_INLINE void few_keys_fwd(const AttnArgs& a, int64_t begin, int64_t end) {
  FewKeyPanels ws(a.k_tokens, a.head_dim, a.heads);
  std::vector<Rows<const T>> k, v;
  const int64_t blocks = token_blocks(a);
  for (int64_t task = begin; task < end; ++task) {
    const int64_t b = task / blocks, n_end = std::min(a.q_tokens, (task % blocks + 1) * kTokenBlock);
    head_rows(a.k, b, a.heads, k), head_rows(a.v, b, a.heads, v);
    ws.pack(k.data(), v.data(), b, /*transposed_v=*/false);
    for (int64_t n0 = task % blocks * kTokenBlock; n0 < n_end; n0 += kGroup) {
      const int rows = int(std::min<int64_t>(kGroup, n_end - n0));
      const int64_t next_end = std::min(n_end, n0 + 2 * kGroup);
      for (int64_t h = 0; h < a.heads; ++h) {
        prefetch_group(slice<const T>(a.q, b, h), n0 + kGroup, next_end, a.head_dim, false);
        prefetch_group(slice<T>(a.out, b, h), n0 + kGroup, next_end, a.head_dim, true);
        few_keys_fwd_group<VB, CH, T>(slice<const T>(a.q, b, h), slice<T>(a.out, b, h),
                                      lse_slice<float>(a, b, h) + n0, n0, rows, float(a.scale), ws, h);
      }
    }
  }
}

// Partial dK (then dV) sums of split s of (b, h): k_tokens x head_dim each, in the accumulation type.
template <typename A> LOGO_INLINE A* partial_slice(const AttnArgs& a, int64_t bh, int64_t s) {
  return static_cast<A*>(a.partial) + ((bh * a.splits + s) * 2) * a.k_tokens * a.head_dim;
}

template <int VB, int CH, typename T>
LOGO_INLINE void few_keys_bwd(const AttnArgs& a, int64_t begin, int64_t end) {
  FewKeyPanels ws(a.k_tokens, a.head_dim, a.heads);
  std::vector<Rows<const T>> k, v;
  const int64_t n_k = a.k_tokens, d = a.head_dim, dp = ws.dp;
  const std::vector<int64_t> ids = iota(n_k);
  for (int64_t task = begin; task < end; ++task) {
    const int64_t b = task / a.splits, r = task % a.splits;
    head_rows(a.k, b, a.heads, k), head_rows(a.v, b, a.heads, v);
    ws.pack(k.data(), v.data(), b, /*transposed_v=*/true);
    std::fill(ws.dk, ws.dk + 2 * a.heads * ws.key_rows, 0.0f);  // dk and dv are adjacent
    const int64_t n_end = (r + 1) * a.q_tokens / a.splits;
    for (int64_t n0 = r * a.q_tokens / a.splits; n0 < n_end; n0 += kGroup) {
      const int rows = int(std::min<int64_t>(kGroup, n_end - n0));
      const int64_t next_end = std::min(n_end, n0 + 2 * kGroup);
      for (int64_t h = 0; h < a.heads; ++h) {
        prefetch_group(slice<const T>(a.q, b, h), n0 + kGroup, next_end, a.head_dim, false);
        prefetch_group(slice<const T>(a.dout, b, h), n0 + kGroup, next_end, a.head_dim, false);
        prefetch_group(slice<T>(a.dq, b, h), n0 + kGroup, next_end, a.head_dim, true);
        few_keys_bwd_group<VB, CH, T>(slice<const T>(a.dout, b, h), slice<const T>(a.q, b, h), slice<T>(a.dq, b, h),
                                      lse_slice<const float>(a, b, h) + n0, n0, rows, float(a.scale), ws, h);
      }
    }
    for (int64_t h = 0; h < a.heads; ++h) {
      const float* dk = ws.dk + h * ws.key_rows;
      const float* dv = ws.dv + h * ws.key_rows;
      if (a.splits == 1) {
        store_rows(dk, dp, n_k, d, slice<T>(a.dk, b, h), ids.data(), 1.0f, static_cast<float*>(nullptr));
        store_rows(dv, dp, n_k, d, slice<T>(a.dv, b, h), ids.data(), 1.0f, static_cast<float*>(nullptr));
      } else {
        float* pk = partial_slice<float>(a, b * a.heads + h, r);
        float* pv = pk + n_k * d;
        for (int64_t j = 0; j < n_k; ++j)
          for (int64_t c = 0; c < d; ++c) pk[j * d + c] = dk[j * dp + c], pv[j * d + c] = dv[j * dp + c];
      }
    }
  }
}

// Calls FN<VB, CH, T> for the number CH of 8-key chunks that a.k_tokens (<= kFewKeys) needs.
#define LOGO_ATTN_SWITCH_CHUNKS(FN, ...)                          \
  switch ((a.k_tokens + kKeyLanes - 1) / kKeyLanes) {             \
    case 1: return FN<VB, 1, T>(__VA_ARGS__);                     \
    case 2: return FN<VB, 2, T>(__VA_ARGS__);                     \
    case 3: return FN<VB, 3, T>(__VA_ARGS__);                     \
    default: return FN<VB, 4, T>(__VA_ARGS__);                    \
  }

template <int VB, typename T> LOGO_INLINE void global_fwd(const AttnArgs& a, int64_t begin, int64_t end) {
  if constexpr (!std::is_same_v<T, double>)
    if (uses_few_keys(a)) LOGO_ATTN_SWITCH_CHUNKS(few_keys_fwd, a, begin, end)
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
  if constexpr (!std::is_same_v<T, double>)
    if (uses_few_keys(a)) LOGO_ATTN_SWITCH_CHUNKS(few_keys_bwd, a, begin, end)
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
      store_rows(ws.dk, dp, n_k, d, slice<T>(a.dk, b, h), ids.data(), A(1), static_cast<A*>(nullptr));
      store_rows(ws.dv, dp, n_k, d, slice<T>(a.dv, b, h), ids.data(), A(1), static_cast<A*>(nullptr));
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
  return uses_few_keys(a) ? a.batch * token_blocks(a) : a.batch * a.heads * fwd_blocks(a);
}

// Tile path: at least 32 (batch, head, range) tasks, so a many-core CPU has work for every core,
// and no splitting when batch x heads already gives that many (then backward is one pass, without
// partial sums); each range at least 256 queries long. Shapes only, never the thread count, so the
// summation order is fixed. An empty batch or zero heads has no task: one range.
int64_t global_attn_bwd_splits(const AttnArgs& a) {
  if (uses_few_keys(a)) return few_keys_splits(a);
  const int64_t slices = a.batch * a.heads;
  if (slices == 0) return 1;
  const int64_t wanted = (32 + slices - 1) / slices;
  return std::max<int64_t>(1, std::min(wanted, a.q_tokens / 256));
}

int64_t global_attn_bwd_tasks(const AttnArgs& a) {
  return uses_few_keys(a) ? a.batch * a.splits : a.batch * a.splits * a.heads;
}

void global_attn_fwd(const AttnArgs& a, int64_t begin, int64_t end) { run_for_cpu<GlobalFwdKernel>(&a, begin, end); }
void global_attn_bwd(const AttnArgs& a, int64_t begin, int64_t end) { run_for_cpu<GlobalBwdKernel>(&a, begin, end); }
void global_attn_bwd_reduce(const AttnArgs& a, int64_t begin, int64_t end) {
  run_for_cpu<GlobalBwdReduceKernel>(&a, begin, end);
}

}  // namespace logo_attn::cpu
