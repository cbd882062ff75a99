// Local attention on CPU: one task per (batch, window, head) computes the window's exact softmax
// attention with the scores in cache, forward and backward. A window's queries are exactly its keys,
// so in backward the task owns the window's dQ, dK and dV rows: nothing to reduce, nothing atomic.
// With a bias (a relative-position table or a dense slot-pair bias), the task adds it to its scores
// and, for the bias gradient, sums its dS by table entry (or slot pair) into its chunk's own partial
// gradient, a backward task being a fixed chunk of consecutive windows of one head (one window,
// except for a dense bias's T x T gradient: kernels.h); a second pass adds the partials of every
// chunk in order, per head (the same bits for any thread count, no atomics). bf16/fp16 tasks run
// half_attention_tile.h's tiles when the op glue passes a HalfGemm (AMX), else attention_tile.h's.
#include <algorithm>
#include <initializer_list>
#include <type_traits>
#include <vector>

#include "dispatch.h"
#include "half_attention_tile.h"
#include "isa.h"
#include "windows.h"

namespace logo_attn::cpu {
namespace {

// Unit = (b * windows + w) * heads + h: consecutive units are the heads of one window and share its
// token list, which is built once per window; two are kept (this unit's and the next one's).
class LocalTasks {
 public:
  struct Task {
    int64_t b, h, n;
    const int64_t* ids;
    const int32_t* pos;  // with a bias only: the tokens' offset-box positions or dense-bias slots
    int64_t run;         // with a bias only: the window's length along the last axis
  };

  explicit LocalTasks(const AttnArgs& a) : a_(a), grid_(a.grid, a.window, a.shift, a.bias_slots > 0) {
    for (int slot = 0; slot < 2; ++slot) {
      ids_[slot].resize(grid_.max_tokens());
      if (a.bias) pos_[slot].resize(grid_.max_tokens());
    }
  }
  int64_t max_tokens() const { return grid_.max_tokens(); }

  Task get(int64_t unit) {
    const int64_t bw = unit / a_.heads;
    int slot = bw == window_[0] ? 0 : bw == window_[1] ? 1 : -1;
    if (slot < 0) {  // evict the other window than the last one asked for, which is still in use
      slot = 1 - last_;
      window_[slot] = bw;
      count_[slot] = grid_.tokens(bw % grid_.windows(), ids_[slot].data(), a_.bias ? pos_[slot].data() : nullptr,
                                  &run_[slot]);
    }
    last_ = slot;
    return {bw / grid_.windows(), unit % a_.heads, count_[slot], ids_[slot].data(), pos_[slot].data(), run_[slot]};
  }

  // The rows unit `next` touches (nothing when it is negative); call after get() of the current unit.
  template <typename T> NextRows prefetch(int64_t next, std::initializer_list<const Tensor4*> reads,
                                          std::initializer_list<const Tensor4*> writes) {
    if (next < 0) return {};
    const Task t = get(next);
    return task_rows<T>(t.b, t.h, t.ids, t.n, a_.head_dim, reads, writes);
  }

 private:
  const AttnArgs& a_;
  WindowGrid grid_;
  std::vector<int64_t> ids_[2];
  std::vector<int32_t> pos_[2];
  int64_t window_[2] = {-1, -1}, count_[2] = {0, 0}, run_[2] = {0, 0};
  int last_ = 0;
};

// The (batch, window) items of the backward's chunks: chunk c holds items [c * per_chunk, ...).
struct BwdChunks {
  int64_t items, per_chunk;
  explicit BwdChunks(const AttnArgs& a)
      : items(a.batch * WindowPartition(a.grid, a.window, a.shift).windows()),
        per_chunk(a.dbias_chunks ? (items + a.dbias_chunks - 1) / a.dbias_chunks : 1) {}
  int64_t first(int64_t chunk) const { return chunk * per_chunk; }
  int64_t last(int64_t chunk) const { return std::min(items, (chunk + 1) * per_chunk); }
};

// Each task's PairBias (none without a bias): its head's table and, for the gradient, its chunk's
// partial gradient (zeroed at the chunk's first window) and this thread's scratch.
template <typename A> class TaskBias {
 public:
  explicit TaskBias(const AttnArgs& a) : a_(a), box_(a.window) {
    entries_ = a.bias_slots ? a.bias_slots * a.bias_slots : box_.size;
    if (a.dbias_partial) spread_.resize(2 * (span_room() + 16));
  }

  // `partial`: the index of the task's partial gradient; `first`: whether this is its first window.
  PairBias<A> get(int64_t partial, bool first, const LocalTasks::Task& t) {
    PairBias<A> bias;
    if (!a_.bias) return bias;
    bias.table = static_cast<const A*>(a_.bias) + t.h * entries_;
    bias.centre = a_.bias_slots ? 0 : box_.centre, bias.row_scale = a_.bias_slots ? a_.bias_slots : -1;
    bias.pos = t.pos, bias.run = t.run, bias.span = t.pos[t.n - 1] + 1;
    if (a_.dbias_partial) {
      bias.grad = static_cast<A*>(a_.dbias_partial) + partial * entries_;
      if (first) std::fill(bias.grad, bias.grad + entries_, A(0));
      std::fill(spread_.begin(), spread_.end(), A(0));  // zero off this window's keys
      bias.spread[0] = spread_.data(), bias.spread[1] = spread_.data() + span_room() + 16;
    }
    return bias;
  }

 private:
  int64_t span_room() const { return a_.bias_slots ? a_.bias_slots : box_.size; }  // >= any span
  const AttnArgs& a_;
  OffsetBox box_;
  int64_t entries_;
  std::vector<A> spread_;
};

// The fp32 tiles' workspace, or with a HalfGemm (bf16/fp16 only) the 16-bit tiles'.
template <typename T, bool kHalf>
using LocalWorkspace = std::conditional_t<kHalf, HalfWorkspace<T>, AttnWorkspace<acc_t<T>>>;

template <int VB, typename T, bool kHalf> LOGO_INLINE void local_fwd_on(const AttnArgs& a, int64_t begin, int64_t end) {
  using A = acc_t<T>;
  LocalTasks tasks(a);
  LocalWorkspace<T, kHalf> ws(tasks.max_tokens(), a.head_dim);
  TaskBias<A> biases(a);
  for (int64_t task = begin; task < end; ++task) {
    const LocalTasks::Task t = tasks.get(task);
    const NextRows next = tasks.prefetch<T>(task + 1 < end ? task + 1 : -1, {&a.q, &a.k, &a.v}, {&a.out});
    const Rows<const T> q = slice<const T>(a.q, t.b, t.h), k = slice<const T>(a.k, t.b, t.h),
                        v = slice<const T>(a.v, t.b, t.h);
    const PairBias<A> bias = biases.get(task, true, t);
    if constexpr (kHalf)
      half_attention_fwd_tile<VB, T>(q, k, v, slice<T>(a.out, t.b, t.h), lse_slice<A>(a, t.b, t.h), t.ids, t.n,
                                     a.head_dim, A(a.scale), bias, ws, *a.half_gemm, next);
    else
      attention_fwd_tile<VB, T>(q, k, v, slice<T>(a.out, t.b, t.h), lse_slice<A>(a, t.b, t.h), t.ids, t.n, t.ids,
                                t.n, a.head_dim, A(a.scale), bias, ws, next);
  }
  if constexpr (kHalf) a.half_gemm->release();
}

// Task = chunk * heads + h runs the units (item * heads + h) of its chunk's items in order.
template <int VB, typename T, bool kHalf> LOGO_INLINE void local_bwd_on(const AttnArgs& a, int64_t begin, int64_t end) {
  using A = acc_t<T>;
  LocalTasks tasks(a);
  LocalWorkspace<T, kHalf> ws(tasks.max_tokens(), a.head_dim);
  TaskBias<A> biases(a);
  const BwdChunks chunks(a);
  for (int64_t task = begin; task < end; ++task) {
    const int64_t chunk = task / a.heads, h = task % a.heads, last = chunks.last(chunk);
    for (int64_t item = chunks.first(chunk); item < last; ++item) {
      const LocalTasks::Task t = tasks.get(item * a.heads + h);
      const int64_t next_task = task + 1 < end ? chunks.first((task + 1) / a.heads) * a.heads + (task + 1) % a.heads : -1;
      const NextRows next = tasks.prefetch<T>(item + 1 < last ? (item + 1) * a.heads + h : next_task,
                                              {&a.dout, &a.q, &a.k, &a.v}, {&a.dq, &a.dk, &a.dv});
      const int64_t b = t.b;
      const Rows<const T> dout = slice<const T>(a.dout, b, h), q = slice<const T>(a.q, b, h),
                          k = slice<const T>(a.k, b, h), v = slice<const T>(a.v, b, h);
      const PairBias<A> bias = biases.get(task, item == chunks.first(chunk), t);
      if constexpr (kHalf)
        half_attention_bwd_tile<VB, T>(dout, q, k, v, lse_slice<const A>(a, b, h), slice<T>(a.dq, b, h), t.ids, t.n,
                                       a.head_dim, A(a.scale), bias, ws, *a.half_gemm, next);
      else
        attention_bwd_tile<VB, T>(dout, q, k, v, lse_slice<const A>(a, b, h), slice<T>(a.dq, b, h), t.ids, t.n,
                                  t.ids, t.n, a.head_dim, A(a.scale), bias, ws, next);
      store_rows<VB>(ws.dk, ws.dim_padded, t.n, a.head_dim, slice<T>(a.dk, b, h), t.ids, A(1), static_cast<A*>(nullptr));
      store_rows<VB>(ws.dv, ws.dim_padded, t.n, a.head_dim, slice<T>(a.dv, b, h), t.ids, A(1), static_cast<A*>(nullptr));
    }
  }
  if constexpr (kHalf) a.half_gemm->release();
}

// bf16/fp16 run on the HalfGemm where the op glue gave one; everything else on the fp32 tiles.
template <int VB, typename T> LOGO_INLINE void local_fwd(const AttnArgs& a, int64_t begin, int64_t end) {
  if constexpr (sizeof(T) == 2)
    if (a.half_gemm) return local_fwd_on<VB, T, true>(a, begin, end);
  local_fwd_on<VB, T, false>(a, begin, end);
}
template <int VB, typename T> LOGO_INLINE void local_bwd(const AttnArgs& a, int64_t begin, int64_t end) {
  if constexpr (sizeof(T) == 2)
    if (a.half_gemm) return local_bwd_on<VB, T, true>(a, begin, end);
  local_bwd_on<VB, T, false>(a, begin, end);
}

// Entries of the bias gradient per reduction task.
constexpr int64_t kEntryBlock = 256;

int64_t entry_blocks(const AttnArgs& a) { return (bias_grad_entries(a) + kEntryBlock - 1) / kEntryBlock; }

// dbias[h, e] = sum over chunks in order of partial[chunk, h, e], for one head's block of entries.
template <int VB, typename T> LOGO_INLINE void local_dbias_reduce(const AttnArgs& a, int64_t begin, int64_t end) {
  using A = acc_t<T>;
  const int64_t entries = bias_grad_entries(a), blocks = entry_blocks(a);
  const A* partial = static_cast<const A*>(a.dbias_partial);
  for (int64_t task = begin; task < end; ++task) {
    const int64_t h = task / blocks, e0 = task % blocks * kEntryBlock, width = std::min(kEntryBlock, entries - e0);
    A* sum = static_cast<A*>(a.dbias) + h * entries + e0;
    std::fill(sum, sum + width, A(0));
    for (int64_t chunk = 0; chunk < a.dbias_chunks; ++chunk) {
      const A* part = partial + (chunk * a.heads + h) * entries + e0;
      for (int64_t e = 0; e < width; ++e) sum[e] += part[e];
    }
  }
}

LOGO_ATTN_CPU_KERNEL(LocalFwdKernel, local_fwd, AttnArgs);
LOGO_ATTN_CPU_KERNEL(LocalBwdKernel, local_bwd, AttnArgs);
LOGO_ATTN_CPU_KERNEL(LocalDbiasReduceKernel, local_dbias_reduce, AttnArgs);

}  // namespace

int64_t local_attn_fwd_tasks(const AttnArgs& a) {
  return a.batch * WindowPartition(a.grid, a.window, a.shift).windows() * a.heads;
}

// A dense bias's chunks: enough tasks to keep the cores busy (64, counting heads) and partial
// gradients of at most 8M values; the shapes alone decide, so the sums do not depend on the threads.
constexpr int64_t kDenseGradTasks = 64, kDenseGradValues = int64_t(1) << 23;

int64_t local_attn_bwd_chunks(const AttnArgs& a, bool bias_grad) {
  const int64_t items = a.batch * WindowPartition(a.grid, a.window, a.shift).windows();
  if (!bias_grad || !a.bias_slots || a.heads == 0 || items == 0) return items;
  const int64_t per_chunk = a.heads * a.bias_slots * a.bias_slots;
  const int64_t wanted = std::max<int64_t>(1, std::min((kDenseGradTasks + a.heads - 1) / a.heads,
                                                       kDenseGradValues / per_chunk));
  const int64_t items_per_chunk = (items + wanted - 1) / wanted;
  return (items + items_per_chunk - 1) / items_per_chunk;  // none empty (BwdChunks' split)
}

int64_t local_attn_bwd_tasks(const AttnArgs& a) {
  return (a.dbias_chunks ? a.dbias_chunks : local_attn_bwd_chunks(a, false)) * a.heads;
}
int64_t local_attn_dbias_tasks(const AttnArgs& a) { return a.heads * entry_blocks(a); }

void local_attn_fwd(const AttnArgs& a, int64_t begin, int64_t end) { run_for_cpu<LocalFwdKernel>(&a, begin, end); }
void local_attn_bwd(const AttnArgs& a, int64_t begin, int64_t end) { run_for_cpu<LocalBwdKernel>(&a, begin, end); }
void local_attn_dbias_reduce(const AttnArgs& a, int64_t begin, int64_t end) {
  run_for_cpu<LocalDbiasReduceKernel>(&a, begin, end);
}

const char* cpu_isa_name() { return isa_name(cpu_isa()); }
bool cpu_has_avx512_bf16() { return has_avx512_bf16(); }

}  // namespace logo_attn::cpu
