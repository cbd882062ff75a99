// Local attention on CPU: one task per (batch, window, head) computes the window's exact softmax
// attention with the scores in cache, forward and backward. A window's queries are exactly its keys,
// so in backward the task owns the window's dQ, dK and dV rows: nothing to reduce, nothing atomic.
// With a relative position bias, the task adds it to its scores and, for the bias gradient, sums
// its dS by offset into its own partial table; a second pass adds the partials of every batch item
// and window in that order, per head (the same bits for any thread count, no atomics).
#include <algorithm>
#include <initializer_list>
#include <vector>

#include "dispatch.h"
#include "isa.h"
#include "windows.h"

namespace logo_attn::cpu {
namespace {

// Task = (b * windows + w) * heads + h: consecutive tasks are the heads of one window and share its
// token list, which is built once per window; two are kept (this task's and the next one's).
class LocalTasks {
 public:
  struct Task {
    int64_t b, h, n;
    const int64_t* ids;
    const int32_t* pos;  // with a bias only: the tokens' offset-box positions
    int64_t run;         // with a bias only: the window's length along the last axis
  };

  explicit LocalTasks(const AttnArgs& a) : a_(a), grid_(a.grid, a.window, a.shift) {
    for (int slot = 0; slot < 2; ++slot) {
      ids_[slot].resize(grid_.max_tokens());
      if (a.bias) pos_[slot].resize(grid_.max_tokens());
    }
  }
  int64_t max_tokens() const { return grid_.max_tokens(); }

  Task get(int64_t task) {
    const int64_t bw = task / a_.heads;
    int slot = bw == window_[0] ? 0 : bw == window_[1] ? 1 : -1;
    if (slot < 0) {  // evict the other window than the last one asked for, which is still in use
      slot = 1 - last_;
      window_[slot] = bw;
      count_[slot] = grid_.tokens(bw % grid_.windows(), ids_[slot].data(), a_.bias ? pos_[slot].data() : nullptr,
                                  &run_[slot]);
    }
    last_ = slot;
    return {bw / grid_.windows(), task % a_.heads, count_[slot], ids_[slot].data(), pos_[slot].data(), run_[slot]};
  }

  // The rows task `next` touches (nothing when it lies outside [., end)); call after get(next - 1).
  template <typename T> NextRows prefetch(int64_t next, int64_t end, std::initializer_list<const Tensor4*> reads,
                                          std::initializer_list<const Tensor4*> writes) {
    if (next >= end) return {};
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

// Each task's PairBias (none without a bias): its head's table and, for the gradient, its own
// partial table (task = (b * windows + w) * heads + h), zeroed here, and this chunk's scratch.
template <typename A> class TaskBias {
 public:
  explicit TaskBias(const AttnArgs& a) : a_(a), box_(a.window) {
    if (a.dbias_partial) spread_.resize(2 * (box_.size + 16));
  }

  PairBias<A> get(int64_t task, const LocalTasks::Task& t) {
    PairBias<A> bias;
    if (!a_.bias) return bias;
    bias.table = static_cast<const A*>(a_.bias) + t.h * box_.size;
    bias.pos = t.pos, bias.centre = box_.centre, bias.run = t.run, bias.span = t.pos[t.n - 1] + 1;
    if (a_.dbias_partial) {
      bias.grad = static_cast<A*>(a_.dbias_partial) + task * box_.size;
      std::fill(bias.grad, bias.grad + box_.size, A(0));
      std::fill(spread_.begin(), spread_.end(), A(0));  // zero off this window's keys
      bias.spread[0] = spread_.data(), bias.spread[1] = spread_.data() + box_.size + 16;
    }
    return bias;
  }

 private:
  const AttnArgs& a_;
  OffsetBox box_;
  std::vector<A> spread_;
};

template <int VB, typename T> LOGO_INLINE void local_fwd(const AttnArgs& a, int64_t begin, int64_t end) {
  using A = acc_t<T>;
  LocalTasks tasks(a);
  AttnWorkspace<A> ws(tasks.max_tokens(), a.head_dim);
  TaskBias<A> biases(a);
  for (int64_t task = begin; task < end; ++task) {
    const LocalTasks::Task t = tasks.get(task);
    const NextRows next = tasks.prefetch<T>(task + 1, end, {&a.q, &a.k, &a.v}, {&a.out});
    attention_fwd_tile<VB, T>(slice<const T>(a.q, t.b, t.h), slice<const T>(a.k, t.b, t.h),
                              slice<const T>(a.v, t.b, t.h), slice<T>(a.out, t.b, t.h), lse_slice<A>(a, t.b, t.h),
                              t.ids, t.n, t.ids, t.n, a.head_dim, A(a.scale), biases.get(task, t), ws, next);
  }
}

template <int VB, typename T> LOGO_INLINE void local_bwd(const AttnArgs& a, int64_t begin, int64_t end) {
  using A = acc_t<T>;
  LocalTasks tasks(a);
  AttnWorkspace<A> ws(tasks.max_tokens(), a.head_dim);
  TaskBias<A> biases(a);
  for (int64_t task = begin; task < end; ++task) {
    const LocalTasks::Task t = tasks.get(task);
    const NextRows next =
        tasks.prefetch<T>(task + 1, end, {&a.dout, &a.q, &a.k, &a.v}, {&a.dq, &a.dk, &a.dv});
    const int64_t b = t.b, h = t.h;
    attention_bwd_tile<VB, T>(slice<const T>(a.dout, b, h), slice<const T>(a.q, b, h), slice<const T>(a.k, b, h),
                              slice<const T>(a.v, b, h), lse_slice<const A>(a, b, h),
                              slice<T>(a.dq, b, h), t.ids, t.n, t.ids, t.n, a.head_dim, A(a.scale),
                              biases.get(task, t), ws, next);
    store_rows(ws.dk, ws.dim_padded, t.n, a.head_dim, slice<T>(a.dk, b, h), t.ids, A(1), static_cast<A*>(nullptr));
    store_rows(ws.dv, ws.dim_padded, t.n, a.head_dim, slice<T>(a.dv, b, h), t.ids, A(1), static_cast<A*>(nullptr));
  }
}

// Offsets of the bias table per reduction task.
constexpr int64_t kOffsetBlock = 256;

int64_t offset_blocks(const AttnArgs& a) { return (OffsetBox(a.window).size + kOffsetBlock - 1) / kOffsetBlock; }

// dbias[h, o] = sum over (b, w) in order of partial[b, w, h, o], for one head's block of offsets.
template <int VB, typename T> LOGO_INLINE void local_dbias_reduce(const AttnArgs& a, int64_t begin, int64_t end) {
  using A = acc_t<T>;
  const int64_t box = OffsetBox(a.window).size, blocks = offset_blocks(a);
  const int64_t items = a.batch * WindowPartition(a.grid, a.window, a.shift).windows();
  const A* partial = static_cast<const A*>(a.dbias_partial);
  for (int64_t task = begin; task < end; ++task) {
    const int64_t h = task / blocks, o0 = task % blocks * kOffsetBlock, width = std::min(kOffsetBlock, box - o0);
    A* sum = static_cast<A*>(a.dbias) + h * box + o0;
    std::fill(sum, sum + width, A(0));
    for (int64_t bw = 0; bw < items; ++bw) {
      const A* part = partial + (bw * a.heads + h) * box + o0;
      for (int64_t o = 0; o < width; ++o) sum[o] += part[o];
    }
  }
}

LOGO_ATTN_CPU_KERNEL(LocalFwdKernel, local_fwd, AttnArgs);
LOGO_ATTN_CPU_KERNEL(LocalBwdKernel, local_bwd, AttnArgs);
LOGO_ATTN_CPU_KERNEL(LocalDbiasReduceKernel, local_dbias_reduce, AttnArgs);

}  // namespace

int64_t local_attn_tasks(const AttnArgs& a) {
  return a.batch * WindowPartition(a.grid, a.window, a.shift).windows() * a.heads;
}
int64_t local_attn_dbias_tasks(const AttnArgs& a) { return a.heads * offset_blocks(a); }

void local_attn_fwd(const AttnArgs& a, int64_t begin, int64_t end) { run_for_cpu<LocalFwdKernel>(&a, begin, end); }
void local_attn_bwd(const AttnArgs& a, int64_t begin, int64_t end) { run_for_cpu<LocalBwdKernel>(&a, begin, end); }
void local_attn_dbias_reduce(const AttnArgs& a, int64_t begin, int64_t end) {
  run_for_cpu<LocalDbiasReduceKernel>(&a, begin, end);
}

const char* cpu_isa_name() { return isa_name(cpu_isa()); }

}  // namespace logo_attn::cpu
