// The arguments of every kernel, CPU and CUDA, as plain C++ (no torch header, so nvcc compiles the
// .cu files that include it anywhere): raw pointers, sizes and strides in elements.
#pragma once

#include <cstdint>

#include "window_geometry.h"

namespace logo_attn {

enum class Dtype { float16, bfloat16, float32, float64 };

// A (B, N, heads, d) tensor with contiguous head_dim: element (b, n, h, c) at
// data + b * batch_stride + n * token_stride + h * head_stride + c.
struct Tensor4 {
  void* data;
  int64_t batch_stride, token_stride, head_stride;
};

// CPU, bf16/fp16 local attention: the matrix product its tiles run on instead of converting the
// inputs to fp32 (null: the fp32 path). C (M x N, row stride ldc, fp32) = A B, plus C itself with
// add_c; A (M x K, row stride lda) and B (K x N) hold values of the op's dtype, K even; B has row stride ldb,
// or with `vnni` its rows in interleaved pairs, the layout AMX multiplies: value (k, n) at
// b[((k / 2) * ldb + n) * 2 + k % 2]. After its last product a thread calls release (AMX tile state).
struct HalfGemm {
  void (*multiply)(int64_t M, int64_t N, int64_t K, int64_t lda, int64_t ldb, int64_t ldc, bool add_c,
                   const void* a, const void* b, float* c);
  void (*release)();
  bool vnni;
};

struct AttnArgs {
  Dtype dtype;
  int64_t batch, heads, head_dim, q_tokens, k_tokens;
  double scale;
  // Local attention only: window already clipped to grid, 0 <= shift < window (0 where window == grid).
  int64_t grid[3], window[3], shift[3];
  Tensor4 q, k, v, out, dout, dq, dk, dv;  // backward reads dout, q, k, v, out; forward writes out
  void* lse;                              // (B, heads, q_tokens), contiguous, fp32 (fp64 for fp64)
  void* delta;                            // CUDA backward: rowsum(dout * out), (B, heads, q_tokens) fp32
  void* partial;                          // global backward: per query range dK/dV sums, accumulation type
  int64_t splits;                         // global backward: query ranges per (batch, head)
  // Local attention's relative position bias, or null: the entries of the user's table that the
  // clipped window's pairs reach, the (2f-1, 2h-1, 2w-1) offset box around the centre
  // (window_geometry.h's OffsetBox), per head, in the accumulation type, each head's box in
  // reversed order and the whole followed by 16 readable values: with positions and centre from
  // OffsetBox, pair (query i, key j) of head h adds bias[h * box + centre - position_i + position_j]
  // to its score, the user's entry [h, t_i - t_j + f' - 1, y_i - y_j + h' - 1, x_i - x_j + w' - 1].
  //
  // Or, with bias_slots = T > 0, a dense (heads, T, T) bias (window_geometry.h's SlotIndex) in the
  // accumulation type, contiguous, followed by 16 readable values: pair (query i, key j) of head h
  // adds bias[(h * T + slot_i) * T + slot_j].
  const void* bias;
  int64_t bias_slots;
  // Backward with the bias gradient, else null: dbias_chunks partial gradients per head, chunk c
  // holding the sums of dS over a fixed range of consecutive (batch, window) items, as
  // (dbias_chunks, heads, entries) scratch (entries: the box, or T * T for a dense bias; CPU: one
  // chunk per item for a table, a shape-only count for a dense bias; CUDA: one per item for a
  // table, none for a dense bias, whose kernel sums every item itself), and dbias (heads, entries),
  // the sums over the chunks in order; accumulation type, boxes in reversed order like bias.
  void* dbias_partial;
  int64_t dbias_chunks;
  void* dbias;
  const HalfGemm* half_gemm;  // CPU local attention in bf16/fp16, or null (see HalfGemm)
};

// Entries of one head's bias gradient: the offset box, or T * T for a dense bias.
LOGO_ATTN_HOST_DEVICE int64_t bias_grad_entries(const AttnArgs& a) {
  return a.bias_slots ? a.bias_slots * a.bias_slots : OffsetBox(a.window).size;
}

// Window pooling on (B, N, C) tensors with contiguous channels.
struct PoolArgs {
  Dtype dtype;
  int64_t batch, channels;
  int64_t grid[3], window[3];
  const void* in;  // forward: x (B, N, C); backward: dout (B, M, C)
  int64_t in_batch_stride, in_token_stride;
  void* out;  // forward: (B, M, C); backward: dx (B, N, C); contiguous
};

}  // namespace logo_attn
