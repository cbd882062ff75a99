// Local attention on CUDA: every window (shifted or not) is a problem whose tokens are both queries
// and keys (attention.cuh). A block never crosses a window, so backward writes dK/dV rows directly.
//
// The bias gradient is summed by offset without atomics: a block per (batch, window, head) in
// which each thread owns some entries of the offset box and recomputes dS = P (dP - delta) of the
// pairs at its offsets, in query order, into the block's own partial table; a second kernel adds
// the partials over batch and windows, in that order, per (head, entry). Same bits on every run.
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

}  // namespace

cudaError_t local_attn_fwd(const AttnArgs& a, cudaStream_t stream) { return attention_fwd<LocalSet>(a, stream); }

cudaError_t local_attn_bwd(const AttnArgs& a, cudaStream_t stream) {
  cudaError_t error = attention_bwd<LocalSet>(a, /*chunks=*/1, stream);  // computes a.delta first
  if (error != cudaSuccess || !a.dbias) return error;
  return dispatch_dtype(a.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const int64_t items = a.batch * LocalSet::problems(a), box = OffsetBox(a.window).size;
    const cudaError_t partial_error =
        launch<kThreads>(local_dbias_partial_kernel<T>, items * a.heads, 0, stream, a);
    if (partial_error != cudaSuccess) return partial_error;
    return launch<kThreads>(local_dbias_reduce_kernel, ceil_div(a.heads * box, kThreads), 0, stream, a, items, box);
  });
}

}  // namespace logo_attn::cuda
