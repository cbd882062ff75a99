// The HalfGemm products (half_gemm.h): PyTorch's oneDNN brgemm (ATen/native/CPUBlas.h, exported
// from libtorch_cpu; its is_vnni signature came with the fp32 overload, whose macro says it is
// there), and the scalar VNNI product that lets the tests run the AMX path's packing anywhere.
#include "half_gemm.h"

#include <c10/util/BFloat16.h>
#include <c10/util/Exception.h>
#include <c10/util/Half.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <type_traits>

// Older headers include oneDNN's ukernel header when built with oneDNN: only where that header ships too.
#include <ATen/Config.h>
#if __has_include(<ATen/native/CPUBlas.h>) && (!AT_MKLDNN_ENABLED() || __has_include(<oneapi/dnnl/dnnl_ukernel.hpp>))
#include <ATen/native/CPUBlas.h>
#endif
#if defined(CPUBLAS_BRGEMM_BF16BF16F32) && defined(CPUBLAS_BRGEMM_F16F16F32) && defined(CPUBLAS_BRGEMM_F32F32F32)
#define LOGO_ATTN_HAS_BRGEMM 1
#endif

namespace logo_attn::cpu {
namespace {

enum class Mode { automatic, off, brgemm, emulated };
constexpr const char* kModeNames[] = {"auto", "off", "brgemm", "emulated"};

Mode parse_mode(const char* value, const char* where) {
  if (!value || !*value) return Mode::automatic;
  for (int m = 0; m < 4; ++m)
    if (!std::strcmp(value, kModeNames[m])) return Mode(m);
  TORCH_CHECK(false, where, "=", value, ": expected auto, off, brgemm or emulated");
}

// Read from the environment at first use; set_half_gemm_mode changes it for the calls after.
std::atomic<int>& mode_slot() {
  static std::atomic<int> slot{int(parse_mode(std::getenv("LOGO_ATTN_CPU_HALF_GEMM"), "LOGO_ATTN_CPU_HALF_GEMM"))};
  return slot;
}
Mode mode() { return Mode(mode_slot().load(std::memory_order_relaxed)); }

#ifdef LOGO_ATTN_HAS_BRGEMM
template <typename C10T, bool kVnni>
void brgemm_multiply(int64_t M, int64_t N, int64_t K, int64_t lda, int64_t ldb, int64_t ldc, bool add_c,
                     const void* a, const void* b, float* c) {
  at::native::cpublas::brgemm(M, N, K, lda, ldb, ldc, add_c, static_cast<const C10T*>(a),
                              static_cast<const C10T*>(b), c, kVnni);
}
template <bool kVnni> void brgemm_release() { at::native::cpublas::brgemm_release(kVnni); }
#endif

// C (+)= A B with B in VNNI pairs, one fp32 sum per output in k order: slow, for the tests only.
template <typename C10T>
void emulated_multiply(int64_t M, int64_t N, int64_t K, int64_t lda, int64_t ldb, int64_t ldc, bool add_c,
                       const void* a, const void* b, float* c) {
  const C10T* A = static_cast<const C10T*>(a);
  const C10T* B = static_cast<const C10T*>(b);
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      float sum = add_c ? c[i * ldc + j] : 0.0f;
      for (int64_t k = 0; k < K; ++k) sum += float(A[i * lda + k]) * float(B[((k / 2) * ldb + j) * 2 + k % 2]);
      c[i * ldc + j] = sum;
    }
}
void no_release() {}

template <typename C10T> const HalfGemm* gemm_of(Mode m) {
  static const HalfGemm emulated{&emulated_multiply<C10T>, &no_release, true};
#ifdef LOGO_ATTN_HAS_BRGEMM
  static const HalfGemm amx{&brgemm_multiply<C10T, true>, &brgemm_release<true>, true};
  static const HalfGemm plain{&brgemm_multiply<C10T, false>, &brgemm_release<false>, false};
  static const bool packs = brgemm_could_pack(std::is_same_v<C10T, c10::BFloat16> ? at::kBFloat16 : at::kHalf);
  if (m == Mode::automatic) return packs ? &amx : nullptr;
  if (m == Mode::brgemm) return &plain;
#else
  TORCH_CHECK(m != Mode::brgemm, "LOGO_ATTN_CPU_HALF_GEMM=brgemm: this torch has no brgemm interface");
#endif
  return m == Mode::emulated ? &emulated : nullptr;
}

}  // namespace

bool brgemm_could_pack(at::ScalarType dtype) {
#ifdef LOGO_ATTN_HAS_BRGEMM
  return at::native::cpublas::could_pack(dtype);
#else
  (void)dtype;
  return false;
#endif
}

const HalfGemm* half_gemm_for(at::ScalarType dtype) {
  if (dtype == at::kBFloat16) return gemm_of<c10::BFloat16>(mode());
  if (dtype == at::kHalf) return gemm_of<c10::Half>(mode());
  return nullptr;
}

const char* half_gemm_name(at::ScalarType dtype) {
  const HalfGemm* g = half_gemm_for(dtype);
  if (!g) return "none";
  if (mode() == Mode::emulated) return "emulated";
  return g->vnni ? "amx" : "brgemm";
}

const char* set_half_gemm_mode(const char* mode) {
  const Mode wanted = parse_mode(mode, "half_gemm mode");
  return kModeNames[mode_slot().exchange(int(wanted))];
}

}  // namespace logo_attn::cpu
