// Local attention on CPU: one task per (batch, window, head) computes the window's exact softmax
// attention with the scores in cache, forward and backward. A window's queries are exactly its keys,
// so in backward the task owns the window's dQ, dK and dV rows: nothing to reduce, nothing atomic.
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
  };

  explicit LocalTasks(const AttnArgs& a)
      : a_(a), grid_(a.grid, a.window), ids_{std::vector<int64_t>(grid_.max_tokens()), std::vector<int64_t>(grid_.max_tokens())} {}
  int64_t max_tokens() const { return grid_.max_tokens(); }

  Task get(int64_t task) {
    const int64_t bw = task / a_.heads;
    int slot = bw == window_[0] ? 0 : bw == window_[1] ? 1 : -1;
    if (slot < 0) {  // evict the other window than the last one asked for, which is still in use
      slot = 1 - last_;
      window_[slot] = bw;
      count_[slot] = grid_.tokens(bw % grid_.windows(), ids_[slot].data());
    }
    last_ = slot;
    return {bw / grid_.windows(), task % a_.heads, count_[slot], ids_[slot].data()};
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
  int64_t window_[2] = {-1, -1}, count_[2] = {0, 0};
  int last_ = 0;
};

template <int VB, typename T> LOGO_INLINE void local_fwd(const AttnArgs& a, int64_t begin, int64_t end) {
  using A = acc_t<T>;
  LocalTasks tasks(a);
  AttnWorkspace<A> ws(tasks.max_tokens(), a.head_dim);
  for (int64_t task = begin; task < end; ++task) {
    const LocalTasks::Task t = tasks.get(task);
    const NextRows next = tasks.prefetch<T>(task + 1, end, {&a.q, &a.k, &a.v}, {&a.out});
    attention_fwd_tile<VB, T>(slice<const T>(a.q, t.b, t.h), slice<const T>(a.k, t.b, t.h),
                              slice<const T>(a.v, t.b, t.h), slice<T>(a.out, t.b, t.h), lse_slice<A>(a, t.b, t.h),
                              t.ids, t.n, t.ids, t.n, a.head_dim, A(a.scale), ws, next);
  }
}

template <int VB, typename T> LOGO_INLINE void local_bwd(const AttnArgs& a, int64_t begin, int64_t end) {
  using A = acc_t<T>;
  LocalTasks tasks(a);
  AttnWorkspace<A> ws(tasks.max_tokens(), a.head_dim);
  for (int64_t task = begin; task < end; ++task) {
    const LocalTasks::Task t = tasks.get(task);
    const NextRows next =
        tasks.prefetch<T>(task + 1, end, {&a.dout, &a.q, &a.k, &a.v}, {&a.dq, &a.dk, &a.dv});
    const int64_t b = t.b, h = t.h;
    attention_bwd_tile<VB, T>(slice<const T>(a.dout, b, h), slice<const T>(a.q, b, h), slice<const T>(a.k, b, h),
                              slice<const T>(a.v, b, h), lse_slice<const A>(a, b, h),
                              slice<T>(a.dq, b, h), t.ids, t.n, t.ids, t.n, a.head_dim, A(a.scale), ws, next);
    store_rows(ws.dk, ws.dim_padded, t.n, a.head_dim, slice<T>(a.dk, b, h), t.ids, A(1), static_cast<A*>(nullptr));
    store_rows(ws.dv, ws.dim_padded, t.n, a.head_dim, slice<T>(a.dv, b, h), t.ids, A(1), static_cast<A*>(nullptr));
  }
}

LOGO_ATTN_CPU_KERNEL(LocalFwdKernel, local_fwd, AttnArgs);
LOGO_ATTN_CPU_KERNEL(LocalBwdKernel, local_bwd, AttnArgs);

}  // namespace

int64_t local_attn_tasks(const AttnArgs& a) {
  return a.batch * WindowGrid(a.grid, a.window).windows() * a.heads;
}

void local_attn_fwd(const AttnArgs& a, int64_t begin, int64_t end) { run_for_cpu<LocalFwdKernel>(&a, begin, end); }
void local_attn_bwd(const AttnArgs& a, int64_t begin, int64_t end) { run_for_cpu<LocalBwdKernel>(&a, begin, end); }

const char* cpu_isa_name() { return isa_name(cpu_isa()); }

}  // namespace logo_attn::cpu
