// Shared plumbing of the kernel files: dtype switch, (batch, head) slices of Tensor4 arguments and the
// rows a task prefetches.
#pragma once

#include <initializer_list>
#include <numeric>
#include <vector>

#include "attention_tile.h"
#include "kernels.h"

namespace logo_attn::cpu {

// Calls FN<VB, T>(args...) with T the storage type of `dtype` (inside a kernel's run<VB>, so
// the instance is compiled for that kernel's ISA; a lambda would not inherit the target).
#define LOGO_ATTN_SWITCH_DTYPE(dtype, FN, ...)                              \
  switch (dtype) {                                                          \
    case Dtype::float32: return FN<VB, float>(__VA_ARGS__);                 \
    case Dtype::float64: return FN<VB, double>(__VA_ARGS__);                \
    case Dtype::bfloat16: return FN<VB, bf16>(__VA_ARGS__);                 \
    case Dtype::float16: return FN<VB, f16>(__VA_ARGS__);                 \
  }

// Defines the kernel struct NAME that run_for_cpu<NAME>(const ARGS*, begin, end) runs: FN<VB, T>
// for the storage type T of the arguments' dtype, compiled for the ISA of the trampoline.
#define LOGO_ATTN_CPU_KERNEL(NAME, FN, ARGS)                                              \
  struct NAME {                                                                           \
    template <int VB> static LOGO_INLINE void run(const ARGS* a, int64_t begin, int64_t end) { \
      LOGO_ATTN_SWITCH_DTYPE(a->dtype, FN, *a, begin, end)                                \
    }                                                                                     \
  }

template <typename T> LOGO_INLINE Rows<T> slice(const Tensor4& t, int64_t b, int64_t h) {
  return {static_cast<T*>(t.data) + b * t.batch_stride + h * t.head_stride, t.token_stride};
}

// This (batch, head)'s q_tokens log-sum-exp values.
template <typename A> LOGO_INLINE A* lse_slice(const AttnArgs& a, int64_t b, int64_t h) {
  return static_cast<A*>(a.lse) + (b * a.heads + h) * a.q_tokens;
}

// Partial dK (then dV) sums of split s of (b, h): k_tokens x head_dim each, in the accumulation type.
template <typename A> LOGO_INLINE A* partial_slice(const AttnArgs& a, int64_t bh, int64_t s) {
  return static_cast<A*>(a.partial) + ((bh * a.splits + s) * 2) * a.k_tokens * a.head_dim;
}

// 0, 1, ..., n - 1: the token indices of a contiguous range are offsets into this.
inline std::vector<int64_t> iota(int64_t n) {
  std::vector<int64_t> ids(n);
  std::iota(ids.begin(), ids.end(), int64_t(0));
  return ids;
}

// The rows a task of (batch b, head h) touches, for prefetching: rows ids[0..n) of every tensor in
// `reads` and `writes`.
template <typename T>
NextRows task_rows(int64_t b, int64_t h, const int64_t* ids, int64_t n, int64_t head_dim,
                   std::initializer_list<const Tensor4*> reads, std::initializer_list<const Tensor4*> writes) {
  NextRows rows;
  rows.ids = ids, rows.n = n, rows.row_bytes = head_dim * int64_t(sizeof(T));
  for (const Tensor4* x : reads) rows.add(slice<const T>(*x, b, h), false);
  for (const Tensor4* x : writes) rows.add(slice<const T>(*x, b, h), true);
  return rows;
}

}  // namespace logo_attn::cpu
