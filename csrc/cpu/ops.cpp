// The CPU implementations of the logo_attn_C ops: argument checks, output allocation, and the task
// ranges of the kernels (kernels.h) spread over ATen's intra-op threads with at::parallel_for.
//
// at::parallel_for is header-inline: its `#pragma omp parallel` is compiled into this extension,
// which is why setup.py builds it with -fopenmp (without it, every op would run on one thread).
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <tuple>

#include "../checks.h"
#include "kernels.h"

namespace logo_attn {
namespace {

cpu::Dtype kernel_dtype(const char* op, const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return cpu::Dtype::float32;
    case at::kDouble: return cpu::Dtype::float64;
    case at::kBFloat16: return cpu::Dtype::bfloat16;
    default: TORCH_CHECK(false, op, ": the CPU kernels compute float32, float64 and bfloat16, got ", t.scalar_type());
  }
}

cpu::Tensor4 view(const at::Tensor& t) {
  return {const_cast<void*>(t.data_ptr()), t.stride(0), t.stride(1), t.stride(2)};
}

// Runs kernel(args, begin, end) over [0, tasks) on ATen's intra-op threads.
template <class Args> void run_tasks(void (*kernel)(const Args&, int64_t, int64_t), const Args& args, int64_t tasks) {
  at::parallel_for(0, tasks, 1, [&](int64_t begin, int64_t end) { kernel(args, begin, end); });
}

cpu::AttnArgs attn_args(const char* op, const at::Tensor& q, const at::Tensor& k, double scale) {
  cpu::AttnArgs a{};
  a.dtype = kernel_dtype(op, q);
  a.batch = q.size(0), a.heads = q.size(2), a.head_dim = q.size(3), a.q_tokens = q.size(1), a.k_tokens = k.size(1);
  a.scale = scale;
  return a;
}

void set_windows(cpu::AttnArgs& a, const Windows& w) {
  for (int i = 0; i < 3; ++i) a.grid[i] = w.grid[i], a.window[i] = w.window[i];
}

at::Tensor new_lse(const at::Tensor& q) {
  return at::empty({q.size(0), q.size(2), q.size(1)}, q.options().dtype(accumulation_dtype(q.scalar_type())));
}

std::tuple<at::Tensor, at::Tensor> local_attn_fwd(const at::Tensor& q_, const at::Tensor& k_, const at::Tensor& v_,
                                                  c10::IntArrayRef grid, c10::IntArrayRef window, double scale) {
  const char* op = "local_attn_fwd";
  check_attention(op, q_, k_, v_);
  TORCH_CHECK(k_.size(1) == q_.size(1), op, ": q and k must have the same number of tokens, got ", q_.size(1),
              " and ", k_.size(1));
  const Windows w = check_windows(op, grid, window);
  TORCH_CHECK(q_.size(1) == w.tokens(), op, ": grid ", grid, " has F*H*W = ", w.tokens(), " tokens but q has ",
              q_.size(1));
  const at::Tensor q = rows_contiguous(q_), k = rows_contiguous(k_), v = rows_contiguous(v_);
  at::Tensor out = at::empty(q.sizes(), q.options()), lse = new_lse(q);
  cpu::AttnArgs a = attn_args(op, q, k, scale);
  set_windows(a, w);
  a.q = view(q), a.k = view(k), a.v = view(v), a.out = view(out), a.lse = lse.data_ptr();
  run_tasks(cpu::local_attn_fwd, a, cpu::local_attn_tasks(a));
  return {out, lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> local_attn_bwd(
    const at::Tensor& dout_, const at::Tensor& q_, const at::Tensor& k_, const at::Tensor& v_, const at::Tensor& out_,
    const at::Tensor& lse_, c10::IntArrayRef grid, c10::IntArrayRef window, double scale) {
  const char* op = "local_attn_bwd";
  check_attention(op, q_, k_, v_);
  TORCH_CHECK(k_.size(1) == q_.size(1), op, ": q and k must have the same number of tokens, got ", q_.size(1),
              " and ", k_.size(1));
  check_attention_bwd(op, dout_, q_, out_, lse_, accumulation_dtype(q_.scalar_type()));
  const Windows w = check_windows(op, grid, window);
  TORCH_CHECK(q_.size(1) == w.tokens(), op, ": grid ", grid, " has F*H*W = ", w.tokens(), " tokens but q has ",
              q_.size(1));
  const at::Tensor dout = rows_contiguous(dout_), q = rows_contiguous(q_), k = rows_contiguous(k_),
                   v = rows_contiguous(v_), out = rows_contiguous(out_), lse = lse_.contiguous();
  at::Tensor dq = at::empty(q.sizes(), q.options()), dk = at::empty(k.sizes(), k.options()),
             dv = at::empty(v.sizes(), v.options());
  cpu::AttnArgs a = attn_args(op, q, k, scale);
  set_windows(a, w);
  a.dout = view(dout), a.q = view(q), a.k = view(k), a.v = view(v), a.out = view(out);
  a.dq = view(dq), a.dk = view(dk), a.dv = view(dv), a.lse = lse.data_ptr();
  run_tasks(cpu::local_attn_bwd, a, cpu::local_attn_tasks(a));
  return {dq, dk, dv};
}

std::tuple<at::Tensor, at::Tensor> global_attn_fwd(const at::Tensor& q_, const at::Tensor& k_, const at::Tensor& v_,
                                                   double scale) {
  const char* op = "global_attn_fwd";
  check_attention(op, q_, k_, v_);
  const at::Tensor q = rows_contiguous(q_), k = rows_contiguous(k_), v = rows_contiguous(v_);
  at::Tensor out = at::empty(q.sizes(), q.options()), lse = new_lse(q);
  cpu::AttnArgs a = attn_args(op, q, k, scale);
  a.q = view(q), a.k = view(k), a.v = view(v), a.out = view(out), a.lse = lse.data_ptr();
  run_tasks(cpu::global_attn_fwd, a, cpu::global_attn_fwd_tasks(a));
  return {out, lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> global_attn_bwd(const at::Tensor& dout_, const at::Tensor& q_,
                                                               const at::Tensor& k_, const at::Tensor& v_,
                                                               const at::Tensor& out_, const at::Tensor& lse_,
                                                               double scale) {
  const char* op = "global_attn_bwd";
  check_attention(op, q_, k_, v_);
  check_attention_bwd(op, dout_, q_, out_, lse_, accumulation_dtype(q_.scalar_type()));
  const at::Tensor dout = rows_contiguous(dout_), q = rows_contiguous(q_), k = rows_contiguous(k_),
                   v = rows_contiguous(v_), out = rows_contiguous(out_), lse = lse_.contiguous();
  at::Tensor dq = at::empty(q.sizes(), q.options()), dk = at::empty(k.sizes(), k.options()),
             dv = at::empty(v.sizes(), v.options());
  cpu::AttnArgs a = attn_args(op, q, k, scale);
  a.dout = view(dout), a.q = view(q), a.k = view(k), a.v = view(v), a.out = view(out);
  a.dq = view(dq), a.dk = view(dk), a.dv = view(dv), a.lse = lse.data_ptr();
  a.splits = cpu::global_attn_bwd_splits(a.batch, a.heads, a.q_tokens);
  at::Tensor partial;
  if (a.splits > 1) {
    partial = at::empty({a.batch, a.heads, a.splits, 2, a.k_tokens, a.head_dim}, lse.options());
    a.partial = partial.data_ptr();
  }
  run_tasks(cpu::global_attn_bwd, a, a.batch * a.heads * a.splits);
  if (a.splits > 1) run_tasks(cpu::global_attn_bwd_reduce, a, a.batch * a.heads);
  return {dq, dk, dv};
}

cpu::PoolArgs pool_args(const char* op, const at::Tensor& in, const Windows& w) {
  cpu::PoolArgs a{};
  a.dtype = kernel_dtype(op, in);
  a.batch = in.size(0), a.channels = in.size(2);
  for (int i = 0; i < 3; ++i) a.grid[i] = w.grid[i], a.window[i] = w.window[i];
  a.in = in.data_ptr(), a.in_batch_stride = in.stride(0), a.in_token_stride = in.stride(1);
  return a;
}

at::Tensor window_pool_fwd(const at::Tensor& x_, c10::IntArrayRef grid, c10::IntArrayRef window) {
  const char* op = "window_pool_fwd";
  TORCH_CHECK(x_.dim() == 3, op, ": x must be 3-D (B, F*H*W, C), got ", x_.sizes());
  const Windows w = check_windows(op, grid, window);
  TORCH_CHECK(x_.size(1) == w.tokens(), op, ": grid ", grid, " has F*H*W = ", w.tokens(), " tokens but x has ",
              x_.size(1));
  const at::Tensor x = rows_contiguous(x_);
  at::Tensor out = at::empty({x.size(0), w.count(), x.size(2)}, x.options());
  cpu::PoolArgs a = pool_args(op, x, w);
  a.out = out.data_ptr();
  run_tasks(cpu::window_pool_fwd, a, cpu::window_pool_tasks(a));
  return out;
}

at::Tensor window_pool_bwd(const at::Tensor& dout_, c10::IntArrayRef grid, c10::IntArrayRef window) {
  const char* op = "window_pool_bwd";
  TORCH_CHECK(dout_.dim() == 3, op, ": dout must be 3-D (B, windows, C), got ", dout_.sizes());
  const Windows w = check_windows(op, grid, window);
  TORCH_CHECK(dout_.size(1) == w.count(), op, ": dout must have one row per window, ", w.count(), " for grid ", grid,
              " and window ", window, ", got ", dout_.size(1));
  const at::Tensor dout = rows_contiguous(dout_);
  at::Tensor dx = at::empty({dout.size(0), w.tokens(), dout.size(2)}, dout.options());
  cpu::PoolArgs a = pool_args(op, dout, w);
  a.out = dx.data_ptr();
  run_tasks(cpu::window_pool_bwd, a, cpu::window_pool_tasks(a));
  return dx;
}

}  // namespace

TORCH_LIBRARY_IMPL(logo_attn_C, CPU, m) {
  m.impl("local_attn_fwd", &local_attn_fwd);
  m.impl("local_attn_bwd", &local_attn_bwd);
  m.impl("global_attn_fwd", &global_attn_fwd);
  m.impl("global_attn_bwd", &global_attn_bwd);
  m.impl("window_pool_fwd", &window_pool_fwd);
  m.impl("window_pool_bwd", &window_pool_bwd);
}

}  // namespace logo_attn
