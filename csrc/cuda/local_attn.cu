// Local attention on CUDA: every window (shifted or not) is a problem whose tokens are both queries
// and keys (attention.cuh). A block never crosses a window, so backward writes dK/dV rows directly.
//
// The bias gradient is summed by offset without atomics: a block per (batch, window, head) in
// which each thread owns some entries of the offset box and recomputes dS = P (dP - delta) of the
// pairs at its offsets, in query order, into the block's own partial table; a second kernel adds
// the partials over batch and windows, in that order, per (head, entry). Same bits on every run. A
// dense bias's gradient has a thread per (head, slot pair) walking every window in order instead.
#include "attention.cuh"
#include "kernels.h"

namespace logo_attn::cuda {
namespace {

// partial[(b * windows + w) * heads + h][e] = sum of dS over the pairs of window w, head h whose
// entry of the (reversed) offset box is e. Block x = (b * windows + w) * heads + h.
template <typename T> __global__ void __launch_bounds__(kThreads) local_dbias_partial_kernel(const AttnArgs a) {
  const WindowPartition partition = LocalSet::partition(a);
  const int64_t h = blockIdx.x % a.heads, w = blockIdx.x / a.heads % partition.windows();
  const int64_t b = blockIdx.x / a.heads / partition.windows();
  const Window window(partition, w);
  const OffsetBox box(a.window);
  const Rows<const T> q = slice<const T>(a.q, b, h), k = slice<const T>(a.k, b, h);
  const Rows<const T> v = slice<const T>(a.v, b, h), dout = slice<const T>(a.dout, b, h);
  const float* lse = static_cast<const float*>(a.lse) + (b * a.heads + h) * a.q_tokens;
  const float* delta = static_cast<const float*>(a.delta) + (b * a.heads + h) * a.q_tokens;
  const float* table = static_cast<const float*>(a.bias) + h * box.size;
  float* partial = static_cast<float*>(a.dbias_partial) + int64_t(blockIdx.x) * box.size;
  const float scale = float(a.scale) * kLog2e;
  const int64_t d = a.head_dim;
  for (int64_t e = threadIdx.x; e < box.size; e += kThreads) {
    // Entry e = centre + position(key) - position(query): the key lies `offset` from the query.
    const int64_t offset[3] = {e / box.stride[0] - (a.window[0] - 1),
                               e % box.stride[0] / box.stride[1] - (a.window[1] - 1),
                               e % box.stride[1] - (a.window[2] - 1)};
    int lo[3], hi[3];  // the query coordinates whose key lies inside the window
    for (int axis = 0; axis < 3; ++axis) {
      lo[axis] = int(offset[axis] < 0 ? -offset[axis] : 0);
      hi[axis] = int(offset[axis] > 0 ? window.size[axis] - offset[axis] : window.size[axis]);
    }
    const float bias = table[e] * kLog2e;
    float sum = 0.f;
    int qc[3], kc[3];
    for (qc[0] = lo[0]; qc[0] < hi[0]; ++qc[0])
      for (qc[1] = lo[1]; qc[1] < hi[1]; ++qc[1])
        for (qc[2] = lo[2]; qc[2] < hi[2]; ++qc[2]) {
          for (int axis = 0; axis < 3; ++axis) kc[axis] = qc[axis] + int(offset[axis]);
          const int64_t i = window.token_at(qc), j = window.token_at(kc);
          const T *qi = q.row(i), *kj = k.row(j), *gi = dout.row(i), *vj = v.row(j);
          float s = 0.f, dp = 0.f;
          for (int64_t c = 0; c < d; ++c) {
            s = fmaf(to_float(qi[c]), to_float(kj[c]), s);
            dp = fmaf(to_float(gi[c]), to_float(vj[c]), dp);
          }
          const float p = exp2f(s * scale + bias - lse[i] * kLog2e);
          sum = fmaf(p, dp - delta[i], sum);
        }
    partial[e] = sum;
  }
}

// dbias[h][e] = sum over (b, w) in order of partial[(b * windows + w) * heads + h][e]; a thread per (h, e).
__global__ void __launch_bounds__(kThreads) local_dbias_reduce_kernel(const AttnArgs a, int64_t items, int64_t box) {
  const int64_t x = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  if (x >= a.heads * box) return;
  const float* part = static_cast<const float*>(a.dbias_partial) + x;  // x = h * box + e
  float sum = 0.f;
  for (int64_t item = 0; item < items; ++item) sum += part[item * a.heads * box];
  static_cast<float*>(a.dbias)[x] = sum;
}

// A dense bias's gradient: dbias[h][i][j] = sum over (b, w) in order of dS of the pair of window w
// whose query sits at slot i and key at slot j (if both slots hold a token there); a thread per
// (h, i, j), so every entry has one writer and no partials are needed.
template <typename T> __global__ void __launch_bounds__(kThreads) local_dense_dbias_kernel(const AttnArgs a) {
  const int64_t slots = a.bias_slots, x = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  if (x >= a.heads * slots * slots) return;
  const int64_t h = x / (slots * slots), i = x / slots % slots, j = x % slots;
  const WindowPartition partition = LocalSet::partition(a);
  const SlotIndex index(a.window);
  const int64_t slot_of[2] = {i, j};
  int64_t nominal[2][3];  // the two slots' coordinates in the nominal window
  for (int s = 0; s < 2; ++s)
    for (int axis = 0; axis < 3; ++axis) nominal[s][axis] = slot_of[s] / index.stride[axis] % a.window[axis];
  const float bias = static_cast<const float*>(a.bias)[x] * kLog2e;
  const float scale = float(a.scale) * kLog2e;
  float sum = 0.f;
  for (int64_t b = 0; b < a.batch; ++b) {
    const Rows<const T> q = slice<const T>(a.q, b, h), k = slice<const T>(a.k, b, h);
    const Rows<const T> v = slice<const T>(a.v, b, h), dout = slice<const T>(a.dout, b, h);
    const float* lse = static_cast<const float*>(a.lse) + (b * a.heads + h) * a.q_tokens;
    const float* delta = static_cast<const float*>(a.delta) + (b * a.heads + h) * a.q_tokens;
    for (int64_t w = 0; w < partition.windows(); ++w) {
      const Window window(partition, w);
      int c[2][3];
      bool inside = true;
      for (int s = 0; s < 2; ++s)
        for (int axis = 0; axis < 3; ++axis) {
          const int64_t local = nominal[s][axis] - window.lead[axis];
          inside = inside && local >= 0 && local < window.size[axis];
          c[s][axis] = int(local);
        }
      if (!inside) continue;
      const int64_t qi = window.token_at(c[0]), kj = window.token_at(c[1]);
      const T *qr = q.row(qi), *kr = k.row(kj), *gr = dout.row(qi), *vr = v.row(kj);
      float s = 0.f, dp = 0.f;
      for (int64_t col = 0; col < a.head_dim; ++col) {
        s = fmaf(to_float(qr[col]), to_float(kr[col]), s);
        dp = fmaf(to_float(gr[col]), to_float(vr[col]), dp);
      }
      const float p = exp2f(s * scale + bias - lse[qi] * kLog2e);
      sum = fmaf(p, dp - delta[qi], sum);
    }
  }
  static_cast<float*>(a.dbias)[x] = sum;
}

}  // namespace

cudaError_t local_attn_fwd(const AttnArgs& a, cudaStream_t stream) { return attention_fwd<LocalSet>(a, stream); }

cudaError_t local_attn_bwd(const AttnArgs& a, cudaStream_t stream) {
  cudaError_t error = attention_bwd<LocalSet>(a, /*chunks=*/1, stream);  // computes a.delta first
  if (error != cudaSuccess || !a.dbias) return error;
  return dispatch_dtype(a.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (a.bias_slots)
      return launch<kThreads>(local_dense_dbias_kernel<T>, ceil_div(a.heads * a.bias_slots * a.bias_slots, kThreads),
                              0, stream, a);
    const int64_t items = a.batch * LocalSet::problems(a), box = OffsetBox(a.window).size;
    const cudaError_t partial_error =
        launch<kThreads>(local_dbias_partial_kernel<T>, items * a.heads, 0, stream, a);
    if (partial_error != cudaSuccess) return partial_error;
    return launch<kThreads>(local_dbias_reduce_kernel, ceil_div(a.heads * box, kThreads), 0, stream, a, items, box);
  });
}

}  // namespace logo_attn::cuda
