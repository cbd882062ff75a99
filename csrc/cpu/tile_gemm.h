// C (+)= A @ B on small packed panels that live in cache: the only matrix product the CPU kernels use.
//
// A is M x K with element (i, k) at A[i * ars + k * acs] (so Aᵀ of a row-major panel is just
// ars = 1, acs = its row length: no transpose copy), B is K x N row-major (ldb), C is M x N
// row-major (ldc); N must be a multiple of the vector lanes (panels are zero-padded to whole vectors). The register tile is
// MR rows x NR vectors of C, held in registers over the whole K loop (the BLIS micro-kernel without
// its packing, which the callers already did): 6 x 4 with 32 zmm registers, 4 x 3 with 16 (the
// last column vectors in other shapes: `gemm`).
#pragma once

#include "isa.h"
#include "simd.h"

namespace logo_attn::cpu {

template <typename T, int VB, int MR, int NR>
LOGO_INLINE void gemm_micro(int64_t K, const T* A, int64_t ars, int64_t acs, const T* B, int64_t ldb, T* C,
                            int64_t ldc, bool accumulate) {
  using V = vec<T, VB>;
  constexpr int L = lanes<T, VB>;
  V c[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) c[i][j] = accumulate ? load<T, VB>(C + i * ldc + j * L) : V{};
  for (int64_t k = 0; k < K; ++k) {
    V b[NR];
    for (int j = 0; j < NR; ++j) b[j] = load<T, VB>(B + k * ldb + j * L);
    for (int i = 0; i < MR; ++i) {
      const T a = A[i * ars + k * acs];
      for (int j = 0; j < NR; ++j) c[i][j] += a * b[j];
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) store<T, VB>(C + i * ldc + j * L, c[i][j]);
}

// All rows of one column strip of NR vectors: full MR-row tiles, then one smaller tile.
template <typename T, int VB, int MR, int NR>
LOGO_INLINE void gemm_strip(int64_t M, int64_t K, const T* A, int64_t ars, int64_t acs, const T* B, int64_t ldb,
                            T* C, int64_t ldc, bool accumulate) {
  int64_t i = 0;
  for (; i + MR <= M; i += MR)
    gemm_micro<T, VB, MR, NR>(K, A + i * ars, ars, acs, B, ldb, C + i * ldc, ldc, accumulate);
  const T* a = A + i * ars;
  T* c = C + i * ldc;
  switch (M - i) {
    case 5: if constexpr (MR > 5) gemm_micro<T, VB, 5, NR>(K, a, ars, acs, B, ldb, c, ldc, accumulate); break;
    case 4: if constexpr (MR > 4) gemm_micro<T, VB, 4, NR>(K, a, ars, acs, B, ldb, c, ldc, accumulate); break;
    case 3: gemm_micro<T, VB, 3, NR>(K, a, ars, acs, B, ldb, c, ldc, accumulate); break;
    case 2: gemm_micro<T, VB, 2, NR>(K, a, ars, acs, B, ldb, c, ldc, accumulate); break;
    case 1: gemm_micro<T, VB, 1, NR>(K, a, ars, acs, B, ldb, c, ldc, accumulate); break;
    default: break;
  }
}

// Column strips NR vectors wide, then the last vectors in a strip of their own. With 16 registers
// (AVX2, SSE2) a last 3 + 1 vectors go as one 3 x 4 tile (12 accumulators) instead of a 4 x 3 and a
// 4 x 1, whose four accumulators are half of what two FMA ports with four cycles of latency need
// (57-66 % of the FMA peak on an AVX2 EPYC). head_dim 32 (Swin's) is four AVX2 vectors: its
// N = head_dim products went from 78-100 % to 116-125 % of the TSC-clock FMA rate (the cores run
// above the TSC clock). Panels are padded to 64 bytes, so with 16 registers no product has a lone
// vector; with 32 (AVX-512) the tails keep the 6-row tile.
template <typename T, int VB>
LOGO_INLINE void gemm(int64_t M, int64_t N, int64_t K, const T* A, int64_t ars, int64_t acs, const T* B, int64_t ldb,
                      T* C, int64_t ldc, bool accumulate) {
  constexpr int L = lanes<T, VB>;
  constexpr bool wide = VB == 64;
  constexpr int MR = wide ? 6 : 4;
  constexpr int NR = wide ? 4 : 3;
  const int64_t vectors = N / L;
  const int64_t full = !wide && vectors >= 4 && vectors % 3 == 1 ? vectors / 3 - 1 : vectors / NR;
  int64_t j = 0;
  for (; j < full * NR; j += NR)
    gemm_strip<T, VB, MR, NR>(M, K, A, ars, acs, B + j * L, ldb, C + j * L, ldc, accumulate);
  const T* b = B + j * L;
  T* c = C + j * L;
  switch (vectors - j) {
    case 4: if constexpr (!wide) gemm_strip<T, VB, 3, 4>(M, K, A, ars, acs, b, ldb, c, ldc, accumulate); break;
    case 3: if constexpr (wide) gemm_strip<T, VB, MR, 3>(M, K, A, ars, acs, b, ldb, c, ldc, accumulate); break;
    case 2: gemm_strip<T, VB, MR, 2>(M, K, A, ars, acs, b, ldb, c, ldc, accumulate); break;
    case 1: gemm_strip<T, VB, MR, 1>(M, K, A, ars, acs, b, ldb, c, ldc, accumulate); break;
    default: break;
  }
}

// One out-of-line instance per ISA, so the tile kernels that call it many times stay small.
#define LOGO_ATTN_GEMM_PARAMS                                                                          \
  int64_t M, int64_t N, int64_t K, const T *A, int64_t ars, int64_t acs, const T *B, int64_t ldb, T *C, \
      int64_t ldc, bool accumulate
#define LOGO_ATTN_GEMM_ARGS M, N, K, A, ars, acs, B, ldb, C, ldc, accumulate
#ifdef LOGO_ATTN_X86_DISPATCH
template <typename T> LOGO_ATTN_TARGET_AVX512 void gemm_avx512(LOGO_ATTN_GEMM_PARAMS) { gemm<T, 64>(LOGO_ATTN_GEMM_ARGS); }
template <typename T> LOGO_ATTN_TARGET_AVX2 void gemm_avx2(LOGO_ATTN_GEMM_PARAMS) { gemm<T, 32>(LOGO_ATTN_GEMM_ARGS); }
#endif
template <typename T> __attribute__((noinline)) void gemm_baseline(LOGO_ATTN_GEMM_PARAMS) { gemm<T, 16>(LOGO_ATTN_GEMM_ARGS); }

// C (+)= A @ B for a kernel compiled for vector width VB.
template <typename T, int VB> LOGO_INLINE void matmul(LOGO_ATTN_GEMM_PARAMS) {
#ifdef LOGO_ATTN_X86_DISPATCH
  if constexpr (VB == 64) return gemm_avx512<T>(LOGO_ATTN_GEMM_ARGS);
  if constexpr (VB == 32) return gemm_avx2<T>(LOGO_ATTN_GEMM_ARGS);
#endif
  gemm_baseline<T>(LOGO_ATTN_GEMM_ARGS);
}
#undef LOGO_ATTN_GEMM_PARAMS
#undef LOGO_ATTN_GEMM_ARGS

}  // namespace logo_attn::cpu
