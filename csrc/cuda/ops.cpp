// The CUDA implementations of the logo_attn_C ops: checked arguments (../op_args.h), fp32 scratch
// buffers, the current device and stream, and the launchers of kernels.h. The split of flash-attn's
// flash_api.cpp: only this file includes torch's CUDA headers, so the .cu files compile anywhere.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <optional>
#include <tuple>
#include <vector>

#include "../capabilities.h"
#include "../op_args.h"
#include "kernels.h"

namespace logo_attn {
namespace {

constexpr Computed kComputed = {at::kHalf, at::kBFloat16, at::kFloat};
constexpr const char* kKernels = "CUDA";
const DeclareCapability kCapability("cuda", {std::vector<at::ScalarType>(kComputed), cuda::kMaxHeadDim});

void check_launch(const char* op, cudaError_t error) {
  TORCH_CHECK(error == cudaSuccess, op, ": CUDA kernel failed to launch: ", cudaGetErrorString(error));
}

void check_head_dim(const char* op, const AttnCall& c) {
  TORCH_CHECK(c.args.head_dim <= cuda::kMaxHeadDim, op, ": the CUDA kernels support head_dim up to ",
              cuda::kMaxHeadDim, ", got ", c.args.head_dim);
}

// rowsum(dout * out) per query, (B, heads, q_tokens) fp32: the backward kernels' scratch.
at::Tensor delta_scratch(AttnCall& c) {
  at::Tensor delta = at::empty({c.args.batch, c.args.heads, c.args.q_tokens}, c.q.options().dtype(at::kFloat));
  c.args.delta = delta.data_ptr();
  return delta;
}

cudaStream_t stream() { return c10::cuda::getCurrentCUDAStream(); }

std::tuple<at::Tensor, at::Tensor> local_attn_fwd(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                  c10::IntArrayRef grid, c10::IntArrayRef window,
                                                  c10::IntArrayRef shift, const std::optional<at::Tensor>& bias,
                                                  double scale) {
  const char* op = "local_attn_fwd";
  const c10::cuda::CUDAGuard guard(q.device());
  const Windows w = local_windows(op, q, grid, window, shift);
  AttnCall c = attention_fwd_call(op, kComputed, kKernels, q, k, v, scale, &w);
  check_head_dim(op, c);
  if (bias) attach_bias(op, c, *bias, w);
  check_launch(op, cuda::local_attn_fwd(c.args, stream()));
  return {c.out, c.lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> local_attn_bwd(
    const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
    const at::Tensor& lse, c10::IntArrayRef grid, c10::IntArrayRef window, c10::IntArrayRef shift,
    const std::optional<at::Tensor>& bias, double scale, bool bias_grad) {
  const char* op = "local_attn_bwd";
  const c10::cuda::CUDAGuard guard(q.device());
  const Windows w = local_windows(op, q, grid, window, shift);
  AttnCall c = attention_bwd_call(op, kComputed, kKernels, dout, q, k, v, out, lse, scale, &w, ReadsOut::yes);
  check_head_dim(op, c);
  if (bias) attach_bias(op, c, *bias, w);
  // A table's gradient has a partial per (batch, window); a dense bias's kernel sums every window itself.
  if (bias && bias_grad) attach_bias_grad(c, c.args.bias_slots ? 0 : c.args.batch * w.count());
  const at::Tensor delta = delta_scratch(c);
  check_launch(op, cuda::local_attn_bwd(c.args, stream()));
  return {c.dq, c.dk, c.dv, bias_grad_output(c, bias)};
}

std::tuple<at::Tensor, at::Tensor> global_attn_fwd(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                   double scale) {
  const char* op = "global_attn_fwd";
  const c10::cuda::CUDAGuard guard(q.device());
  AttnCall c = attention_fwd_call(op, kComputed, kKernels, q, k, v, scale, nullptr);
  check_head_dim(op, c);
  check_launch(op, cuda::global_attn_fwd(c.args, stream()));
  return {c.out, c.lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> global_attn_bwd(const at::Tensor& dout, const at::Tensor& q,
                                                               const at::Tensor& k, const at::Tensor& v,
                                                               const at::Tensor& out, const at::Tensor& lse,
                                                               double scale) {
  const char* op = "global_attn_bwd";
  const c10::cuda::CUDAGuard guard(q.device());
  AttnCall c = attention_bwd_call(op, kComputed, kKernels, dout, q, k, v, out, lse, scale, nullptr, ReadsOut::yes);
  check_head_dim(op, c);
  const at::Tensor delta = delta_scratch(c);
  AttnArgs& a = c.args;
  a.splits = cuda::global_attn_bwd_splits(a);
  at::Tensor partial;
  if (a.splits > 1) {
    partial = at::empty({a.batch, a.heads, a.splits, 2, a.k_tokens, a.head_dim}, c.q.options().dtype(at::kFloat));
    a.partial = partial.data_ptr();
  }
  check_launch(op, cuda::global_attn_bwd(a, stream()));
  return {c.dq, c.dk, c.dv};
}

at::Tensor window_pool_fwd(const at::Tensor& x, c10::IntArrayRef grid, c10::IntArrayRef window) {
  const char* op = "window_pool_fwd";
  const c10::cuda::CUDAGuard guard(x.device());
  PoolCall c = pool_call(op, kComputed, kKernels, x, grid, window, /*backward=*/false);
  check_launch(op, cuda::window_pool_fwd(c.args, stream()));
  return c.out;
}

at::Tensor window_pool_bwd(const at::Tensor& dout, c10::IntArrayRef grid, c10::IntArrayRef window) {
  const char* op = "window_pool_bwd";
  const c10::cuda::CUDAGuard guard(dout.device());
  PoolCall c = pool_call(op, kComputed, kKernels, dout, grid, window, /*backward=*/true);
  check_launch(op, cuda::window_pool_bwd(c.args, stream()));
  return c.out;
}

}  // namespace

TORCH_LIBRARY_IMPL(logo_attn_C, CUDA, m) {
  m.impl("local_attn_fwd", &local_attn_fwd);
  m.impl("local_attn_bwd", &local_attn_bwd);
  m.impl("global_attn_fwd", &global_attn_fwd);
  m.impl("global_attn_bwd", &global_attn_bwd);
  m.impl("window_pool_fwd", &window_pool_fwd);
  m.impl("window_pool_bwd", &window_pool_bwd);
}

}  // namespace logo_attn
