// Argument checks shared by the CPU and CUDA glue (ops.cpp in cpu/ and cuda/). The public Python
// ops validate first and raise ValueError/TypeError; these checks guard direct calls of
// torch.ops.logo_attn_C.* so a wrong call fails with a message instead of reading out of bounds.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>

#include <algorithm>
#include <array>
#include <cstdint>

namespace logo_attn {

// Head dim (the last axis) must be contiguous for the kernels; any other stride, including 0, is
// read in place. Returns t, or a contiguous copy when its last axis is strided (e.g. the stride-0
// gradient of .sum()).
inline at::Tensor rows_contiguous(const at::Tensor& t) {
  return t.size(-1) == 1 || t.stride(-1) == 1 ? t : t.contiguous();
}

inline void check_same(const char* op, const at::Tensor& ref, const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), op, ": ", name, " has dtype ", t.scalar_type(),
              " but q has ", ref.scalar_type());
  TORCH_CHECK(t.device() == ref.device(), op, ": ", name, " is on ", t.device(), " but q is on ", ref.device());
}

// q (B, Nq, heads, d), k and v (B, Nk, heads, d), all of one dtype and device.
inline void check_attention(const char* op, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  for (auto [t, name] : {std::pair{&q, "q"}, {&k, "k"}, {&v, "v"}}) {
    TORCH_CHECK(t->dim() == 4, op, ": ", name, " must be 4-D (B, N, heads, head_dim), got ", t->sizes());
    check_same(op, q, *t, name);
  }
  TORCH_CHECK(k.sizes() == v.sizes(), op, ": k and v must have the same shape, got ", k.sizes(), " and ", v.sizes());
  TORCH_CHECK(q.size(0) == k.size(0) && q.size(2) == k.size(2) && q.size(3) == k.size(3), op,
              ": q and k must agree in batch, heads and head_dim, got ", q.sizes(), " and ", k.sizes());
  TORCH_CHECK(q.size(3) >= 1 && k.size(1) >= 1, op, ": head_dim and the number of keys must be >= 1");
}

// The tensors backward gets besides q, k, v: dout and out like q, lse (B, heads, Nq) in `lse_dtype`.
inline void check_attention_bwd(const char* op, const at::Tensor& dout, const at::Tensor& q, const at::Tensor& out,
                                const at::Tensor& lse, at::ScalarType lse_dtype) {
  for (auto [t, name] : {std::pair{&dout, "dout"}, {&out, "out"}}) {
    TORCH_CHECK(t->sizes() == q.sizes(), op, ": ", name, " must have q's shape ", q.sizes(), ", got ", t->sizes());
    check_same(op, q, *t, name);
  }
  TORCH_CHECK(lse.dim() == 3 && lse.size(0) == q.size(0) && lse.size(1) == q.size(2) && lse.size(2) == q.size(1), op,
              ": lse must be (B, heads, N) = (", q.size(0), ", ", q.size(2), ", ", q.size(1), "), got ", lse.sizes());
  TORCH_CHECK(lse.scalar_type() == lse_dtype, op, ": lse must be ", lse_dtype, ", got ", lse.scalar_type());
  TORCH_CHECK(lse.device() == q.device(), op, ": lse is on ", lse.device(), " but q is on ", q.device());
}

struct Windows {
  std::array<int64_t, 3> grid, window;
  int64_t tokens() const { return grid[0] * grid[1] * grid[2]; }
  int64_t count() const {
    int64_t m = 1;
    for (int a = 0; a < 3; ++a) m *= (grid[a] + window[a] - 1) / window[a];
    return m;
  }
};

// grid and window as 3 positive ints each, the window clipped to the grid (DESIGN §1).
inline Windows check_windows(const char* op, c10::IntArrayRef grid, c10::IntArrayRef window) {
  TORCH_CHECK(grid.size() == 3, op, ": grid must hold 3 ints (F, H, W), got ", grid);
  TORCH_CHECK(window.size() == 3, op, ": window must hold 3 ints (f, h, w), got ", window);
  Windows w;
  for (int a = 0; a < 3; ++a) {
    TORCH_CHECK(grid[a] >= 1 && window[a] >= 1, op, ": grid and window entries must be >= 1, got ", grid, " and ",
                window);
    w.grid[a] = grid[a];
    w.window[a] = std::min(window[a], grid[a]);
  }
  return w;
}

inline at::ScalarType accumulation_dtype(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

}  // namespace logo_attn
