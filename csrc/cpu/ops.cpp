// The CPU implementations of the logo_attn_C ops: checked arguments (../op_args.h), and the task
// ranges of the kernels (kernels.h) spread over ATen's intra-op threads with at::parallel_for.
//
// at::parallel_for is header-inline: its `#pragma omp parallel` is compiled into this extension,
// which is why setup.py builds it with -fopenmp (without it, every op would run on one thread).
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <optional>
#include <tuple>
#include <vector>

#include "../capabilities.h"
#include "../op_args.h"
#include "half_gemm.h"
#include "kernels.h"

namespace logo_attn {
namespace {

constexpr Computed kComputed = {at::kFloat, at::kDouble, at::kBFloat16, at::kHalf};
constexpr const char* kKernels = "CPU";
const DeclareCapability kCapability("cpu", {std::vector<at::ScalarType>(kComputed), /*max_head_dim=*/0});

// Runs kernel(args, begin, end) over [0, tasks) on ATen's intra-op threads.
template <class Args> void run_tasks(void (*kernel)(const Args&, int64_t, int64_t), const Args& args, int64_t tasks) {
  at::parallel_for(0, tasks, 1, [&](int64_t begin, int64_t end) { kernel(args, begin, end); });
}

std::tuple<at::Tensor, at::Tensor> local_attn_fwd(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                  c10::IntArrayRef grid, c10::IntArrayRef window,
                                                  c10::IntArrayRef shift, const std::optional<at::Tensor>& bias,
                                                  double scale) {
  const char* op = "local_attn_fwd";
  const Windows w = local_windows(op, q, grid, window, shift);
  AttnCall c = attention_fwd_call(op, kComputed, kKernels, q, k, v, scale, &w);
  if (bias) attach_bias(op, c, *bias, w);
  c.args.half_gemm = cpu::half_gemm_for(q.scalar_type());
  run_tasks(cpu::local_attn_fwd, c.args, cpu::local_attn_fwd_tasks(c.args));
  return {c.out, c.lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> local_attn_bwd(
    const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
    const at::Tensor& lse, c10::IntArrayRef grid, c10::IntArrayRef window, c10::IntArrayRef shift,
    const std::optional<at::Tensor>& bias, double scale, bool bias_grad) {
  const char* op = "local_attn_bwd";
  const Windows w = local_windows(op, q, grid, window, shift);
  AttnCall c = attention_bwd_call(op, kComputed, kKernels, dout, q, k, v, out, lse, scale, &w, ReadsOut::no);
  if (bias) attach_bias(op, c, *bias, w);
  if (bias && bias_grad) attach_bias_grad(c, cpu::local_attn_bwd_chunks(c.args, /*bias_grad=*/true));
  c.args.half_gemm = cpu::half_gemm_for(q.scalar_type());
  run_tasks(cpu::local_attn_bwd, c.args, cpu::local_attn_bwd_tasks(c.args));
  if (c.args.dbias) run_tasks(cpu::local_attn_dbias_reduce, c.args, cpu::local_attn_dbias_tasks(c.args));
  return {c.dq, c.dk, c.dv, bias_grad_output(c, bias)};
}

std::tuple<at::Tensor, at::Tensor> global_attn_fwd(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                   double scale) {
  AttnCall c = attention_fwd_call("global_attn_fwd", kComputed, kKernels, q, k, v, scale, nullptr);
  run_tasks(cpu::global_attn_fwd, c.args, cpu::global_attn_fwd_tasks(c.args));
  return {c.out, c.lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> global_attn_bwd(const at::Tensor& dout, const at::Tensor& q,
                                                               const at::Tensor& k, const at::Tensor& v,
                                                               const at::Tensor& out, const at::Tensor& lse,
                                                               double scale) {
  AttnCall c =
      attention_bwd_call("global_attn_bwd", kComputed, kKernels, dout, q, k, v, out, lse, scale, nullptr, ReadsOut::no);
  AttnArgs& a = c.args;
  a.splits = cpu::global_attn_bwd_splits(a);
  at::Tensor partial;
  if (a.splits > 1) {
    partial = at::empty({a.batch, a.heads, a.splits, 2, a.k_tokens, a.head_dim}, c.lse.options());
    a.partial = partial.data_ptr();
  }
  run_tasks(cpu::global_attn_bwd, a, cpu::global_attn_bwd_tasks(a));
  if (a.splits > 1) run_tasks(cpu::global_attn_bwd_reduce, a, a.batch * a.heads);
  return {c.dq, c.dk, c.dv};
}

at::Tensor window_pool_fwd(const at::Tensor& x, c10::IntArrayRef grid, c10::IntArrayRef window) {
  PoolCall c = pool_call("window_pool_fwd", kComputed, kKernels, x, grid, window, /*backward=*/false);
  run_tasks(cpu::window_pool_fwd, c.args, cpu::window_pool_tasks(c.args));
  return c.out;
}

at::Tensor window_pool_bwd(const at::Tensor& dout, c10::IntArrayRef grid, c10::IntArrayRef window) {
  PoolCall c = pool_call("window_pool_bwd", kComputed, kKernels, dout, grid, window, /*backward=*/true);
  run_tasks(cpu::window_pool_bwd, c.args, cpu::window_pool_tasks(c.args));
  return c.out;
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
