// Exact softmax attention of query rows over key rows of one (batch, head) slice, forward and
// backward, on CUDA cores with fp32 accumulation: the kernels local_attn.cu and global_attn.cu are
// made of. A token-set policy (LocalSet, GlobalSet) says which grid tokens are the queries and the
// keys of each problem (a window, shifted or not, or the whole sequence) and what bias each pair's
// score gets (the relative position bias of local attention, or none).
//
// Structure (FlashAttention's, without tensor cores: this is the fallback when Triton is missing):
// - forward: a block owns kOwnedRows queries (kRowsPerWarp per warp) and streams the keys through
//   shared memory in tiles of 32; lane j scores key j, and an online softmax keeps each query's
//   running max, sum and output (lane l holds dims l, l + 32, ...) in registers;
// - backward: delta = rowsum(dO * O) first; then dQ by query-owning blocks that stream the keys,
//   and dK/dV by key-owning blocks that stream the queries (lane i scores query i). Each output
//   row is written by one block: no atomics. dK/dV of a query range that is split in several
//   chunks are written as partial sums that global_attn.cu adds in a fixed order.
// Shared tiles read row-per-lane have a pitch of d + 1 floats, so the 32 lanes hit 32 banks.
#pragma once

#include "common.cuh"

namespace logo_attn::cuda {

constexpr int kWarps = 4;
constexpr int kThreads = 32 * kWarps;
constexpr int kTile = 32;                             // streamed rows per shared tile: one per lane
constexpr int kRowsPerWarp = 4;                       // owned rows per warp
constexpr int kOwnedRows = kWarps * kRowsPerWarp;     // owned rows per block

// Problem p of a batch is window p (shifted or not): its tokens are both the queries and the keys.
// With a table, pair (query i, key j) of head h adds the entry at centre - position_i + position_j
// (kernel_args.h); with a dense bias (dense = T), entry position_i * T + position_j, positions being
// slots; times log2(e) since these kernels score in base 2.
struct LocalSet {
  Window window;
  OffsetBox box;
  SlotIndex slots;
  int64_t dense;
  const float* bias;  // this head's table or dense bias, or null
  int64_t queries, keys;
  __device__ LocalSet(const AttnArgs& a, int64_t p, int64_t h)
      : window(partition(a), p), box(a.window), slots(a.window), dense(a.bias_slots),
        bias(a.bias ? static_cast<const float*>(a.bias) + h * bias_grad_entries(a) : nullptr) {
    queries = keys = window.tokens();
  }
  __device__ __forceinline__ int64_t query(int64_t i) const { return window.token(i); }
  __device__ __forceinline__ int64_t key(int64_t j) const { return window.token(j); }
  // Token i's position in the offset box, or its dense-bias slot (0 without a bias: unused).
  __device__ __forceinline__ int64_t position(int64_t i) const {
    return !bias ? 0 : dense ? window.slot(i, slots) : window.position(i, box);
  }
  __device__ __forceinline__ float pair_bias(int64_t query_position, int64_t key_position) const {
    if (!bias) return 0.f;
    return bias[dense ? query_position * dense + key_position : box.centre - query_position + key_position] * kLog2e;
  }
  __host__ __device__ static WindowPartition partition(const AttnArgs& a) {
    return WindowPartition(a.grid, a.window, a.shift);
  }
  __host__ __device__ static int64_t problems(const AttnArgs& a) { return partition(a).windows(); }
  __host__ __device__ static int64_t max_queries(const AttnArgs& a) { return a.window[0] * a.window[1] * a.window[2]; }
  __host__ __device__ static int64_t max_keys(const AttnArgs& a) { return max_queries(a); }
};

// One problem per batch: every query over every key, no bias.
struct GlobalSet {
  int64_t queries, keys;
  __device__ GlobalSet(const AttnArgs& a, int64_t, int64_t) : queries(a.q_tokens), keys(a.k_tokens) {}
  __device__ __forceinline__ int64_t query(int64_t i) const { return i; }
  __device__ __forceinline__ int64_t key(int64_t j) const { return j; }
  __device__ __forceinline__ int64_t position(int64_t) const { return 0; }
  __device__ __forceinline__ float pair_bias(int64_t, int64_t) const { return 0.f; }
  __host__ __device__ static int64_t problems(const AttnArgs&) { return 1; }
  __host__ __device__ static int64_t max_queries(const AttnArgs& a) { return a.q_tokens; }
  __host__ __device__ static int64_t max_keys(const AttnArgs& a) { return a.k_tokens; }
};

__device__ __forceinline__ float dot(const float* x, const float* y, int d) {
  float s = 0.f;
  for (int c = 0; c < d; ++c) s = fmaf(x[c], y[c], s);
  return s;
}

// acc[x] += sum_{j < n} w_j rows[j][lane + 32 x], w_j being lane j's w: the product of a tile's
// weights (probabilities or their gradients) with its rows, the lane holding output dims lane + 32 x.
template <int DL>
__device__ __forceinline__ void add_weighted_rows(float (&acc)[DL], float w, const float* rows, int n, int pitch,
                                                  int d, int lane) {
  for (int j = 0; j < n; ++j) {
    const float wj = __shfl_sync(kFullMask, w, j);
    const float* row = rows + j * pitch;
#pragma unroll
    for (int x = 0; x < DL; ++x)
      if (lane + 32 * x < d) acc[x] = fmaf(wj, row[lane + 32 * x], acc[x]);
  }
}

// row[lane + 32 x] = scale * acc[x], rounded to T.
template <typename T, int DL>
__device__ __forceinline__ void store_row(T* row, const float (&acc)[DL], float scale, int d, int lane) {
#pragma unroll
  for (int x = 0; x < DL; ++x)
    if (lane + 32 * x < d) row[lane + 32 * x] = from_float<T>(acc[x] * scale);
}

// rows[i][c] = scale * src.row(token(first + i))[c] for i < n, c < d, with row pitch `pitch`: a
// warp per row, so each row's token index is computed once and its d values are read coalesced.
template <typename T, class TokenOf>
__device__ __forceinline__ void load_rows(Rows<const T> src, TokenOf token, int64_t first, int n, int d, float scale,
                                          float* rows, int pitch) {
  for (int i = threadIdx.x / 32; i < n; i += kWarps) {
    const T* row = src.row(token(first + i));
    for (int c = threadIdx.x % 32; c < d; c += 32) rows[i * pitch + c] = to_float(row[c]) * scale;
  }
}

// Which block is which: blockIdx.x = ((b * problems + p) * heads + h) * inner + i.
struct BlockIndex {
  int64_t b, p, h, inner;
  __device__ BlockIndex(const AttnArgs& a, int64_t problems, int64_t inner_count) {
    int64_t x = blockIdx.x;
    inner = x % inner_count, x /= inner_count;
    h = x % a.heads, x /= a.heads;
    p = x % problems, b = x / problems;
  }
};

template <class Set, typename T, int DL>
__global__ void __launch_bounds__(kThreads) attn_fwd_kernel(const AttnArgs a, int64_t query_tiles) {
  extern __shared__ float smem[];
  const int d = int(a.head_dim), pitch = d + 1;
  float* ks = smem;               // kTile x pitch
  float* vs = ks + kTile * pitch;  // kTile x pitch
  float* qs = vs + kTile * pitch;  // kOwnedRows x d, scaled by scale * log2(e): softmax in base 2
  const BlockIndex block(a, Set::problems(a), query_tiles);
  const Set set(a, block.p, block.h);
  const int64_t q0 = block.inner * kOwnedRows;
  if (q0 >= set.queries) return;  // a border window has fewer query tiles (uniform for the block)
  const int nq = int(min(int64_t(kOwnedRows), set.queries - q0));
  const int64_t b = block.b, h = block.h;
  const auto query = [&](int64_t i) { return set.query(i); };
  const auto key = [&](int64_t j) { return set.key(j); };
  load_rows(slice<const T>(a.q, b, h), query, q0, nq, d, float(a.scale) * kLog2e, qs, d);

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  float o[kRowsPerWarp][DL], m[kRowsPerWarp], l[kRowsPerWarp];
  int64_t query_position[kRowsPerWarp];
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    m[r] = -INFINITY, l[r] = 0.f;
    query_position[r] = set.position(q0 + min(warp * kRowsPerWarp + r, nq - 1));  // rows past nq are never used
#pragma unroll
    for (int x = 0; x < DL; ++x) o[r][x] = 0.f;
  }
  for (int64_t k0 = 0; k0 < set.keys; k0 += kTile) {
    const int nk = int(min(int64_t(kTile), set.keys - k0));
    __syncthreads();  // every warp is done with the previous tile
    load_rows(slice<const T>(a.k, b, h), key, k0, nk, d, 1.f, ks, pitch);
    load_rows(slice<const T>(a.v, b, h), key, k0, nk, d, 1.f, vs, pitch);
    __syncthreads();
    const int64_t key_position = lane < nk ? set.position(k0 + lane) : 0;  // lane j scores key k0 + j
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {
      const int i = warp * kRowsPerWarp + r;
      if (i >= nq) break;  // uniform over the warp
      const float s = lane < nk ? dot(qs + i * d, ks + lane * pitch, d) + set.pair_bias(query_position[r], key_position)
                                : -INFINITY;
      const float m_new = fmaxf(m[r], warp_max(s));  // finite: nk >= 1
      const float p = lane < nk ? exp2f(s - m_new) : 0.f;
      const float alpha = exp2f(m[r] - m_new);       // 0 on the first tile (m = -inf)
      l[r] = l[r] * alpha + warp_sum(p);
      m[r] = m_new;
#pragma unroll
      for (int x = 0; x < DL; ++x) o[r][x] *= alpha;
      add_weighted_rows(o[r], p, vs, nk, pitch, d, lane);
    }
  }

  const Rows<T> out = slice<T>(a.out, b, h);
  float* lse = static_cast<float*>(a.lse) + (b * a.heads + h) * a.q_tokens;
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    const int i = warp * kRowsPerWarp + r;
    if (i >= nq) break;
    const int64_t n = set.query(q0 + i);
    store_row(out.row(n), o[r], 1.f / l[r], d, lane);
    if (lane == 0) lse[n] = (m[r] + log2f(l[r])) * kLn2;  // natural log, like torch.logsumexp
  }
}

// delta[b, h, n] = sum_c dout[b, n, h, c] * out[b, n, h, c]: one warp per (b, h, n) row.
template <typename T> __global__ void __launch_bounds__(kThreads) attn_bwd_delta_kernel(const AttnArgs a) {
  const int64_t row = int64_t(blockIdx.x) * kWarps + threadIdx.x / 32;
  if (row >= a.batch * a.heads * a.q_tokens) return;
  const int64_t n = row % a.q_tokens, h = row / a.q_tokens % a.heads, b = row / a.q_tokens / a.heads;
  const T* g = slice<const T>(a.dout, b, h).row(n);
  const T* o = slice<const T>(a.out, b, h).row(n);
  float s = 0.f;
  for (int64_t c = threadIdx.x % 32; c < a.head_dim; c += 32) s = fmaf(to_float(g[c]), to_float(o[c]), s);
  s = warp_sum(s);
  if (threadIdx.x % 32 == 0) static_cast<float*>(a.delta)[row] = s;
}

// dQ = scale * dS K with dS = P * (dO Vᵀ - delta), P = exp(S - lse): blocks own queries, stream keys.
template <class Set, typename T, int DL>
__global__ void __launch_bounds__(kThreads) attn_bwd_dq_kernel(const AttnArgs a, int64_t query_tiles) {
  extern __shared__ float smem[];
  const int d = int(a.head_dim), pitch = d + 1;
  float* ks = smem;                // kTile x pitch
  float* vs = ks + kTile * pitch;  // kTile x pitch
  float* qs = vs + kTile * pitch;  // kOwnedRows x d, scaled by scale * log2(e)
  float* gs = qs + kOwnedRows * d;  // kOwnedRows x d: dO
  const BlockIndex block(a, Set::problems(a), query_tiles);
  const Set set(a, block.p, block.h);
  const int64_t q0 = block.inner * kOwnedRows;
  if (q0 >= set.queries) return;
  const int nq = int(min(int64_t(kOwnedRows), set.queries - q0));
  const int64_t b = block.b, h = block.h, bh = b * a.heads + h;
  const auto query = [&](int64_t i) { return set.query(i); };
  const auto key = [&](int64_t j) { return set.key(j); };
  load_rows(slice<const T>(a.q, b, h), query, q0, nq, d, float(a.scale) * kLog2e, qs, d);
  load_rows(slice<const T>(a.dout, b, h), query, q0, nq, d, 1.f, gs, d);

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const float* lse = static_cast<const float*>(a.lse) + bh * a.q_tokens;
  const float* delta = static_cast<const float*>(a.delta) + bh * a.q_tokens;
  float dq[kRowsPerWarp][DL], lse2[kRowsPerWarp], dl[kRowsPerWarp];
  int64_t query_position[kRowsPerWarp];
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    const int i = min(warp * kRowsPerWarp + r, nq - 1);  // rows past nq are never used
    const int64_t n = set.query(q0 + i);
    lse2[r] = lse[n] * kLog2e, dl[r] = delta[n], query_position[r] = set.position(q0 + i);
#pragma unroll
    for (int x = 0; x < DL; ++x) dq[r][x] = 0.f;
  }
  for (int64_t k0 = 0; k0 < set.keys; k0 += kTile) {
    const int nk = int(min(int64_t(kTile), set.keys - k0));
    __syncthreads();
    load_rows(slice<const T>(a.k, b, h), key, k0, nk, d, 1.f, ks, pitch);
    load_rows(slice<const T>(a.v, b, h), key, k0, nk, d, 1.f, vs, pitch);
    __syncthreads();
    const int64_t key_position = lane < nk ? set.position(k0 + lane) : 0;
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {
      const int i = warp * kRowsPerWarp + r;
      if (i >= nq) break;
      float ds = 0.f;
      if (lane < nk) {
        const float s = dot(qs + i * d, ks + lane * pitch, d) + set.pair_bias(query_position[r], key_position);
        const float p = exp2f(s - lse2[r]);
        ds = p * (dot(gs + i * d, vs + lane * pitch, d) - dl[r]);
      }
      add_weighted_rows(dq[r], ds, ks, nk, pitch, d, lane);
    }
  }

  const Rows<T> out = slice<T>(a.dq, b, h);
  const float scale = float(a.scale);
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    const int i = warp * kRowsPerWarp + r;
    if (i >= nq) break;
    store_row(out.row(set.query(q0 + i)), dq[r], scale, d, lane);
  }
}

// dV = Pᵀ dO and dK = scale * dSᵀ Q over the queries of chunk `chunk` of `chunks`: blocks own keys
// and stream the queries. With one chunk the rows go straight to dk/dv; with several, to the fp32
// partial sums (B, heads, chunks, 2, k_tokens, d) that the caller reduces (scale not yet applied).
template <class Set, typename T, int DL>
__global__ void __launch_bounds__(kThreads) attn_bwd_dkdv_kernel(const AttnArgs a, int64_t key_tiles,
                                                                  int64_t chunks) {
  extern __shared__ float smem[];
  const int d = int(a.head_dim), pitch = d + 1;
  float* qs = smem;                 // kTile x pitch: Q
  float* gs = qs + kTile * pitch;   // kTile x pitch: dO
  float* ks = gs + kTile * pitch;   // kOwnedRows x d: K scaled by scale * log2(e)
  float* vs = ks + kOwnedRows * d;  // kOwnedRows x d: V
  const BlockIndex block(a, Set::problems(a), key_tiles * chunks);
  const Set set(a, block.p, block.h);
  const int64_t chunk = block.inner / key_tiles, k0 = block.inner % key_tiles * kOwnedRows;
  if (k0 >= set.keys) return;
  const int nk = int(min(int64_t(kOwnedRows), set.keys - k0));
  const int64_t b = block.b, h = block.h, bh = b * a.heads + h;
  const auto query = [&](int64_t i) { return set.query(i); };
  const auto key = [&](int64_t j) { return set.key(j); };
  load_rows(slice<const T>(a.k, b, h), key, k0, nk, d, float(a.scale) * kLog2e, ks, d);
  load_rows(slice<const T>(a.v, b, h), key, k0, nk, d, 1.f, vs, d);

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const float* lse = static_cast<const float*>(a.lse) + bh * a.q_tokens;
  const float* delta = static_cast<const float*>(a.delta) + bh * a.q_tokens;
  float dk[kRowsPerWarp][DL], dv[kRowsPerWarp][DL];
  int64_t key_position[kRowsPerWarp];
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    key_position[r] = set.position(k0 + min(warp * kRowsPerWarp + r, nk - 1));  // rows past nk are never used
#pragma unroll
    for (int x = 0; x < DL; ++x) dk[r][x] = dv[r][x] = 0.f;
  }
  const int64_t first = set.queries * chunk / chunks, last = set.queries * (chunk + 1) / chunks;
  for (int64_t i0 = first; i0 < last; i0 += kTile) {
    const int nq = int(min(int64_t(kTile), last - i0));
    __syncthreads();
    load_rows(slice<const T>(a.q, b, h), query, i0, nq, d, 1.f, qs, pitch);
    load_rows(slice<const T>(a.dout, b, h), query, i0, nq, d, 1.f, gs, pitch);
    __syncthreads();
    float lse2 = 0.f, dl = 0.f;  // lane i's query
    int64_t query_position = 0;
    if (lane < nq) {
      const int64_t n = set.query(i0 + lane);
      lse2 = lse[n] * kLog2e, dl = delta[n], query_position = set.position(i0 + lane);
    }
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {
      const int j = warp * kRowsPerWarp + r;
      if (j >= nk) break;
      float p = 0.f, ds = 0.f;
      if (lane < nq) {
        p = exp2f(dot(qs + lane * pitch, ks + j * d, d) + set.pair_bias(query_position, key_position[r]) - lse2);
        ds = p * (dot(gs + lane * pitch, vs + j * d, d) - dl);
      }
      add_weighted_rows(dv[r], p, gs, nq, pitch, d, lane);
      add_weighted_rows(dk[r], ds, qs, nq, pitch, d, lane);
    }
  }

  const float scale = float(a.scale);
  const Rows<T> dk_rows = slice<T>(a.dk, b, h), dv_rows = slice<T>(a.dv, b, h);
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    const int j = warp * kRowsPerWarp + r;
    if (j >= nk) break;
    if (chunks == 1) {
      const int64_t n = set.key(k0 + j);
      store_row(dk_rows.row(n), dk[r], scale, d, lane);
      store_row(dv_rows.row(n), dv[r], 1.f, d, lane);
    } else {
      float* partial = static_cast<float*>(a.partial) + (bh * chunks + chunk) * 2 * a.k_tokens * d;
      store_row(partial + (k0 + j) * d, dk[r], 1.f, d, lane);
      store_row(partial + (a.k_tokens + k0 + j) * d, dv[r], 1.f, d, lane);
    }
  }
}

template <class Set> cudaError_t attention_fwd(const AttnArgs& a, cudaStream_t stream) {
  return dispatch_dtype_and_dim(a.dtype, a.head_dim, [&](auto tag, auto dl) {
    using T = typename decltype(tag)::type;
    const int64_t tiles = ceil_div(Set::max_queries(a), kOwnedRows);
    const int64_t blocks = a.batch * Set::problems(a) * a.heads * tiles;
    const int64_t smem = 2 * kTile * (a.head_dim + 1) + kOwnedRows * a.head_dim;
    return launch<kThreads>(attn_fwd_kernel<Set, T, decltype(dl)::value>, blocks, smem, stream, a, tiles);
  });
}

// delta, dQ, then dK/dV over `chunks` query ranges per problem (the caller reduces them if > 1).
template <class Set> cudaError_t attention_bwd(const AttnArgs& a, int64_t chunks, cudaStream_t stream) {
  return dispatch_dtype_and_dim(a.dtype, a.head_dim, [&](auto tag, auto dl) {
    using T = typename decltype(tag)::type;
    constexpr int kDL = decltype(dl)::value;
    cudaError_t error = launch<kThreads>(attn_bwd_delta_kernel<T>, ceil_div(a.batch * a.heads * a.q_tokens, kWarps), 0, stream, a);
    if (error != cudaSuccess) return error;
    const int64_t problems = a.batch * Set::problems(a) * a.heads;
    const int64_t query_tiles = ceil_div(Set::max_queries(a), kOwnedRows);
    const int64_t smem = 2 * kTile * (a.head_dim + 1) + 2 * kOwnedRows * a.head_dim;
    error = launch<kThreads>(attn_bwd_dq_kernel<Set, T, kDL>, problems * query_tiles, smem, stream, a, query_tiles);
    if (error != cudaSuccess) return error;
    const int64_t key_tiles = ceil_div(Set::max_keys(a), kOwnedRows);
    return launch<kThreads>(attn_bwd_dkdv_kernel<Set, T, kDL>, problems * key_tiles * chunks, smem, stream, a, key_tiles,
                  chunks);
  });
}

}  // namespace logo_attn::cuda
