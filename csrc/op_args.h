// From the torch op arguments to kernel arguments, for the CPU and the CUDA glue (cpu/ops.cpp,
// cuda/ops.cpp): argument checks, rows made contiguous where needed, outputs allocated, AttnArgs /
// PoolArgs filled. The public Python ops validate first and raise ValueError/TypeError; these
// checks guard direct calls of torch.ops.logo_attn_C.* so a wrong call fails with a message
// instead of reading out of bounds.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/flip.h>
#include <ATen/ops/zeros.h>
#include <c10/util/ArrayRef.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <optional>
#include <utility>

#include "kernel_args.h"
#include "window_geometry.h"

namespace logo_attn {

// Head dim (the last axis) must be contiguous for the kernels; any other stride, including 0, is
// read in place. Returns t, or a contiguous copy when its last axis is strided (e.g. the stride-0
// gradient of .sum()).
inline at::Tensor rows_contiguous(const at::Tensor& t) {
  return t.size(-1) == 1 || t.stride(-1) == 1 ? t : t.contiguous();
}

inline at::ScalarType accumulation_dtype(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

// The kernels' dtype for t, if `kernels` (e.g. "CPU") compute it.
inline Dtype kernel_dtype(const char* op, const at::Tensor& t, std::initializer_list<at::ScalarType> computed,
                          const char* kernels) {
  const at::ScalarType s = t.scalar_type();
  TORCH_CHECK(std::find(computed.begin(), computed.end(), s) != computed.end(), op, ": the ", kernels,
              " kernels do not compute ", s);
  switch (s) {
    case at::kHalf: return Dtype::float16;
    case at::kBFloat16: return Dtype::bfloat16;
    case at::kDouble: return Dtype::float64;
    default: return Dtype::float32;
  }
}

inline Tensor4 view(const at::Tensor& t) {
  return {const_cast<void*>(t.data_ptr()), t.stride(0), t.stride(1), t.stride(2)};
}

inline void check_same(const char* op, const at::Tensor& ref, const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), op, ": ", name, " has dtype ", t.scalar_type(),
              " but q has ", ref.scalar_type());
  TORCH_CHECK(t.device() == ref.device(), op, ": ", name, " is on ", t.device(), " but q is on ", ref.device());
}

struct Windows {
  int64_t grid[3], window[3], shift[3] = {0, 0, 0};
  int64_t tokens() const { return grid[0] * grid[1] * grid[2]; }
  int64_t count() const { return WindowPartition(grid, window, shift).windows(); }
};

// grid and window as 3 positive ints each, the window clipped to the grid (a window larger than the
// grid covers that whole axis), and the grid's token count equal to `tokens`.
inline Windows check_windows(const char* op, c10::IntArrayRef grid, c10::IntArrayRef window, int64_t tokens,
                             const char* name) {
  TORCH_CHECK(grid.size() == 3, op, ": grid must hold 3 ints (F, H, W), got ", grid);
  TORCH_CHECK(window.size() == 3, op, ": window must hold 3 ints (f, h, w), got ", window);
  Windows w;
  for (int a = 0; a < 3; ++a) {
    TORCH_CHECK(grid[a] >= 1 && window[a] >= 1, op, ": grid and window entries must be >= 1, got ", grid, " and ",
                window);
    w.grid[a] = grid[a];
    w.window[a] = std::min(window[a], grid[a]);
  }
  TORCH_CHECK(tokens == w.tokens(), op, ": grid ", grid, " has F*H*W = ", w.tokens(), " tokens but ", name, " has ",
              tokens);
  return w;
}

// The tensors of one attention op call, kept alive for the kernels, and their AttnArgs.
struct AttnCall {
  at::Tensor dout, q, k, v, out, lse, dq, dk, dv;
  at::Tensor bias, dbias_partial, dbias;  // local attention with a bias: see attach_bias
  AttnArgs args{};
};

using Computed = std::initializer_list<at::ScalarType>;

// q (B, Nq, heads, d), k and v (B, Nk, heads, d), all of one dtype and device; for local attention
// (windows given) Nq == Nk == F*H*W.
inline AttnCall attention_call(const char* op, Computed computed, const char* kernels, const at::Tensor& q,
                               const at::Tensor& k, const at::Tensor& v, double scale, const Windows* windows) {
  for (auto [t, name] : {std::pair{&q, "q"}, {&k, "k"}, {&v, "v"}}) {
    TORCH_CHECK(t->dim() == 4, op, ": ", name, " must be 4-D (B, N, heads, head_dim), got ", t->sizes());
    check_same(op, q, *t, name);
  }
  TORCH_CHECK(k.sizes() == v.sizes(), op, ": k and v must have the same shape, got ", k.sizes(), " and ", v.sizes());
  TORCH_CHECK(q.size(0) == k.size(0) && q.size(2) == k.size(2) && q.size(3) == k.size(3), op,
              ": q and k must agree in batch, heads and head_dim, got ", q.sizes(), " and ", k.sizes());
  TORCH_CHECK(q.size(3) >= 1 && k.size(1) >= 1, op, ": head_dim and the number of keys must be >= 1");
  AttnCall c;
  AttnArgs& a = c.args;
  a.dtype = kernel_dtype(op, q, computed, kernels);
  if (windows) {
    TORCH_CHECK(k.size(1) == q.size(1), op, ": q and k must have the same number of tokens, got ", q.size(1), " and ",
                k.size(1));
    for (int i = 0; i < 3; ++i)
      a.grid[i] = windows->grid[i], a.window[i] = windows->window[i], a.shift[i] = windows->shift[i];
  }
  c.q = rows_contiguous(q), c.k = rows_contiguous(k), c.v = rows_contiguous(v);
  a.batch = q.size(0), a.heads = q.size(2), a.head_dim = q.size(3), a.q_tokens = q.size(1), a.k_tokens = k.size(1);
  a.scale = scale;
  a.q = view(c.q), a.k = view(c.k), a.v = view(c.v);
  return c;
}

// Forward: also allocates out (like q, contiguous) and lse (B, heads, Nq) in the accumulation type.
inline AttnCall attention_fwd_call(const char* op, Computed computed, const char* kernels, const at::Tensor& q,
                                   const at::Tensor& k, const at::Tensor& v, double scale, const Windows* windows) {
  AttnCall c = attention_call(op, computed, kernels, q, k, v, scale, windows);
  c.out = at::empty(q.sizes(), q.options());
  c.lse = at::empty({q.size(0), q.size(2), q.size(1)}, q.options().dtype(accumulation_dtype(q.scalar_type())));
  c.args.out = view(c.out), c.args.lse = c.lse.data_ptr();
  return c;
}

// Whether a backward kernel reads the forward output: the CUDA kernels take rowsum(dO * O) from it;
// the CPU kernels have all of a query's keys in one task and get that sum from P and dO Vᵀ instead.
enum class ReadsOut : bool { no = false, yes = true };

// Backward: dout and out like q, lse as the forward made it; allocates dq, dk, dv. `out` is checked
// either way but handed to the kernels (made row-contiguous if needed) only when they read it.
inline AttnCall attention_bwd_call(const char* op, Computed computed, const char* kernels, const at::Tensor& dout,
                                   const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
                                   const at::Tensor& lse, double scale, const Windows* windows, ReadsOut reads_out) {
  AttnCall c = attention_call(op, computed, kernels, q, k, v, scale, windows);
  for (auto [t, name] : {std::pair{&dout, "dout"}, {&out, "out"}}) {
    TORCH_CHECK(t->sizes() == q.sizes(), op, ": ", name, " must have q's shape ", q.sizes(), ", got ", t->sizes());
    check_same(op, q, *t, name);
  }
  TORCH_CHECK(lse.dim() == 3 && lse.size(0) == q.size(0) && lse.size(1) == q.size(2) && lse.size(2) == q.size(1), op,
              ": lse must be (B, heads, N) = (", q.size(0), ", ", q.size(2), ", ", q.size(1), "), got ", lse.sizes());
  TORCH_CHECK(lse.scalar_type() == accumulation_dtype(q.scalar_type()), op, ": lse must be ",
              accumulation_dtype(q.scalar_type()), ", got ", lse.scalar_type());
  TORCH_CHECK(lse.device() == q.device(), op, ": lse is on ", lse.device(), " but q is on ", q.device());
  c.dout = rows_contiguous(dout), c.lse = lse.contiguous();
  if (reads_out == ReadsOut::yes) c.out = rows_contiguous(out);
  c.dq = at::empty(q.sizes(), q.options()), c.dk = at::empty(k.sizes(), k.options());
  c.dv = at::empty(v.sizes(), v.options());
  AttnArgs& a = c.args;
  a.dout = view(c.dout), a.lse = c.lse.data_ptr();
  if (reads_out == ReadsOut::yes) a.out = view(c.out);
  a.dq = view(c.dq), a.dk = view(c.dk), a.dv = view(c.dv);
  return c;
}

// The tensors of one window_pool call and their PoolArgs.
struct PoolCall {
  at::Tensor in, out;
  PoolArgs args{};
};

// Forward (backward = false): x (B, F*H*W, C) -> (B, M, C). Backward: dout (B, M, C) -> dx (B, F*H*W, C).
inline PoolCall pool_call(const char* op, Computed computed, const char* kernels, const at::Tensor& in,
                          c10::IntArrayRef grid, c10::IntArrayRef window, bool backward) {
  const char* name = backward ? "dout" : "x";
  TORCH_CHECK(in.dim() == 3, op, ": ", name, " must be 3-D (B, ", backward ? "windows" : "F*H*W", ", C), got ",
              in.sizes());
  const int64_t tokens = grid.size() == 3 ? grid[0] * grid[1] * grid[2] : -1;
  const Windows w = check_windows(op, grid, window, backward ? tokens : in.size(1), name);
  TORCH_CHECK(!backward || in.size(1) == w.count(), op, ": dout must have one row per window, ", w.count(),
              " for grid ", grid, " and window ", window, ", got ", in.size(1));
  PoolCall c;
  PoolArgs& a = c.args;
  a.dtype = kernel_dtype(op, in, computed, kernels);
  c.in = rows_contiguous(in);
  c.out = at::empty({in.size(0), backward ? w.tokens() : w.count(), in.size(2)}, in.options());
  a.batch = in.size(0), a.channels = in.size(2);
  for (int i = 0; i < 3; ++i) a.grid[i] = w.grid[i], a.window[i] = w.window[i];
  a.in = c.in.data_ptr(), a.in_batch_stride = c.in.stride(0), a.in_token_stride = c.in.stride(1);
  a.out = c.out.data_ptr();
  return c;
}

// Local attention's windows: grid and window checked against q's token count, and the shift: 3
// ints with 0 <= shift < window (the clipped one), 0 on an axis whose window covers the grid.
inline Windows local_windows(const char* op, const at::Tensor& q, c10::IntArrayRef grid, c10::IntArrayRef window,
                             c10::IntArrayRef shift) {
  TORCH_CHECK(q.dim() == 4, op, ": q must be 4-D (B, N, heads, head_dim), got ", q.sizes());
  Windows w = check_windows(op, grid, window, q.size(1), "q");
  TORCH_CHECK(shift.size() == 3, op, ": shift must hold 3 ints (sf, sh, sw), got ", shift);
  for (int a = 0; a < 3; ++a) {
    TORCH_CHECK(shift[a] >= 0 && shift[a] < w.window[a], op, ": shift entries must satisfy 0 <= shift < window ",
                "(the window clipped to the grid), got shift ", shift, " for window ", window, " and grid ", grid);
    TORCH_CHECK(shift[a] == 0 || w.window[a] < w.grid[a], op, ": shift must be 0 on an axis whose window covers ",
                "the whole grid, got shift ", shift, " for window ", window, " and grid ", grid);
    w.shift[a] = shift[a];
  }
  return w;
}

// (2f-1, 2h-1, 2w-1): the relative offsets the clipped window's pairs reach, per axis.
template <class HasWindow> std::array<int64_t, 3> reach_shape(const HasWindow& w) {
  return {2 * w.window[0] - 1, 2 * w.window[1] - 1, 2 * w.window[2] - 1};
}

// Local attention's bias, checked, as the kernels read it (kernel_args.h): dtype q's or the
// accumulation type, on q's device, and either a table or a dense bias.
//
// A table is (heads, 2f'-1, 2h'-1, 2w'-1) for the window (f', h', w') the user passed, so f' >= the
// clipped f. The kernels get the entries the clipped window's pairs reach (the (2f-1, 2h-1, 2w-1)
// box around the centre) in the accumulation type, each head's box in reversed order, followed by
// kBiasPadding readable values (the CPU kernels read whole vectors).
//
// A dense bias is (heads, T, T) with T = f h w of the clipped window; the kernels get a contiguous
// copy in the accumulation type, followed by kBiasPadding readable values.
constexpr int64_t kBiasPadding = 16;

inline void attach_dense_bias(const char* op, AttnCall& c, const at::Tensor& bias, const Windows& w) {
  const int64_t heads = c.q.size(2), slots = SlotIndex(w.window).slots;
  TORCH_CHECK(bias.size(0) == heads && bias.size(1) == slots && bias.size(2) == slots, op,
              ": a dense bias must be (heads, T, T) = (", heads, ", ", slots, ", ", slots, ") for the window (",
              w.window[0], ", ", w.window[1], ", ", w.window[2], ") clipped to the grid, got ", bias.sizes());
  TORCH_CHECK(slots * slots <= std::numeric_limits<int32_t>::max(), op, ": a dense bias of ", slots,
              " slots has more slot pairs than the kernels index (2^31)");
  c.bias = at::zeros({heads * slots * slots + kBiasPadding}, c.q.options().dtype(accumulation_dtype(c.q.scalar_type())));
  c.bias.narrow(0, 0, heads * slots * slots).view({heads, slots, slots}).copy_(bias);
  c.args.bias = c.bias.data_ptr(), c.args.bias_slots = slots;
}

inline void attach_bias(const char* op, AttnCall& c, const at::Tensor& bias, const Windows& w) {
  const at::Tensor& q = c.q;
  TORCH_CHECK((bias.dim() == 4 || bias.dim() == 3) && bias.size(0) == q.size(2), op,
              ": bias must be a (heads, 2f-1, 2h-1, 2w-1) table or a dense (heads, T, T) bias with heads = ",
              q.size(2), ", got ", bias.sizes());
  const at::ScalarType acc = accumulation_dtype(q.scalar_type());
  TORCH_CHECK(bias.scalar_type() == q.scalar_type() || bias.scalar_type() == acc, op, ": bias must have q's dtype ",
              q.scalar_type(), " or ", acc, ", got ", bias.scalar_type());
  TORCH_CHECK(bias.device() == q.device(), op, ": bias is on ", bias.device(), " but q is on ", q.device());
  if (bias.dim() == 3) return attach_dense_bias(op, c, bias, w);
  const std::array<int64_t, 3> reach = reach_shape(w);
  at::Tensor box = bias;
  for (int a = 0; a < 3; ++a) {
    const int64_t extent = bias.size(a + 1);
    TORCH_CHECK(extent % 2 == 1 && extent >= reach[a], op, ": bias must be (heads, 2f-1, 2h-1, 2w-1) for a ",
                "window at least as large as the clipped window (", w.window[0], ", ", w.window[1], ", ",
                w.window[2], "), got ", bias.sizes());
    box = box.narrow(a + 1, (extent - reach[a]) / 2, reach[a]);
  }
  const int64_t size = OffsetBox(w.window).size, heads = bias.size(0);
  TORCH_CHECK(size <= std::numeric_limits<int32_t>::max(), op, ": window ", w.window[0], "x", w.window[1], "x",
              w.window[2], " has more relative offsets than the kernels index (2^31)");
  c.bias = at::zeros({heads * size + kBiasPadding}, q.options().dtype(acc));
  c.bias.narrow(0, 0, heads * size).view({heads, reach[0], reach[1], reach[2]}).copy_(box.flip({1, 2, 3}));
  c.args.bias = c.bias.data_ptr();
}

// Backward with the bias gradient: `chunks` partial gradients per head (kernel_args.h; none for
// chunks = 0) and their sum per head, in the accumulation type (boxes in reversed order, like the table).
inline void attach_bias_grad(AttnCall& c, int64_t chunks) {
  const auto acc = c.bias.options();
  const int64_t entries = bias_grad_entries(c.args);
  if (chunks > 0) {
    c.dbias_partial = at::empty({chunks, c.args.heads, entries}, acc);
    c.args.dbias_partial = c.dbias_partial.data_ptr();
  }
  c.args.dbias_chunks = chunks;
  c.dbias = at::empty({c.args.heads, entries}, acc);
  c.args.dbias = c.dbias.data_ptr();
}

// The 4th output of the local backward: dbias shaped and typed like bias (for a table, zero where no
// pair of the clipped window reaches), or an empty tensor when it was not computed.
inline at::Tensor bias_grad_output(const AttnCall& c, const std::optional<at::Tensor>& bias) {
  if (!c.dbias.defined()) return at::empty({0}, c.q.options());
  if (c.args.bias_slots) return c.dbias.view(bias->sizes()).to(bias->scalar_type());
  const std::array<int64_t, 3> reach = reach_shape(c.args);
  at::Tensor dbias = at::zeros(bias->sizes(), c.dbias.options());
  at::Tensor box = dbias;
  for (int a = 0; a < 3; ++a) {
    const int64_t extent = bias->size(a + 1);
    box = box.narrow(a + 1, (extent - reach[a]) / 2, reach[a]);
  }
  box.copy_(c.dbias.view({c.args.heads, reach[0], reach[1], reach[2]}).flip({1, 2, 3}));
  return dbias.to(bias->scalar_type());
}

}  // namespace logo_attn
