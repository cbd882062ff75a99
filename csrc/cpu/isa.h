// Run-time choice of the instruction set, the way PyTorch's DispatchStub does it but within one
// translation unit: a kernel is a struct with `template <int VB> static void run(...)`, and
// `run_for_cpu<Kernel>(...)` calls it through a trampoline compiled for AVX-512, AVX2+FMA or the
// baseline ISA, whichever this CPU supports. The extension therefore builds with default compiler
// flags, runs on any x86-64 (or ARM) CPU, and still uses 512-bit vectors where they exist.
//
// LOGO_ATTN_CPU_ISA=avx2 or =baseline lowers the choice (the tests use it to run every path here).
#pragma once

#include <cstdlib>
#include <cstring>

namespace logo_attn::cpu {

enum class Isa { baseline, avx2, avx512 };

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define LOGO_ATTN_X86_DISPATCH 1
#define LOGO_ATTN_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,bmi2"), noinline))
#define LOGO_ATTN_TARGET_AVX2 __attribute__((target("avx2,fma,bmi2"), noinline))
#endif

inline Isa detect_isa() {
#ifdef LOGO_ATTN_X86_DISPATCH
  __builtin_cpu_init();
  Isa best = Isa::baseline;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) best = Isa::avx2;
  if (best == Isa::avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
    best = Isa::avx512;
#else
  Isa best = Isa::baseline;
#endif
  if (const char* wanted = std::getenv("LOGO_ATTN_CPU_ISA")) {
    if (!std::strcmp(wanted, "baseline")) return Isa::baseline;
    if (!std::strcmp(wanted, "avx2") && best != Isa::baseline) return Isa::avx2;
  }
  return best;
}

// Read once per process (the environment variable too).
inline Isa cpu_isa() {
  static const Isa isa = detect_isa();
  return isa;
}

// On x86-64 the baseline level (SSE2) is the fallback for CPUs without AVX2 (from before 2013) and
// for LOGO_ATTN_CPU_ISA=baseline: kept correct, not tuned, so a kernel may leave a fast path out of
// it (its instances would cost build time for no user). Elsewhere (ARM: NEON) it is the only level.
#ifdef LOGO_ATTN_X86_DISPATCH
inline constexpr bool kBaselineIsFallback = true;
#else
inline constexpr bool kBaselineIsFallback = false;
#endif

// True when kernels run at a tuned level: a vector width VB > 16 bytes, or any level off x86.
template <int VB> inline constexpr bool kTunedLevel = VB > 16 || !kBaselineIsFallback;
inline bool tuned_isa() { return !kBaselineIsFallback || cpu_isa() != Isa::baseline; }

inline bool has_avx512_bf16() {
#ifdef LOGO_ATTN_X86_DISPATCH
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512bf16");
#else
  return false;
#endif
}

inline const char* isa_name(Isa isa) {
  return isa == Isa::avx512 ? "avx512" : isa == Isa::avx2 ? "avx2" : "baseline";
}

#ifdef LOGO_ATTN_X86_DISPATCH
template <class Kernel, class... Args> LOGO_ATTN_TARGET_AVX512 void run_avx512(Args... args) {
  Kernel::template run<64>(args...);
}
template <class Kernel, class... Args> LOGO_ATTN_TARGET_AVX2 void run_avx2(Args... args) {
  Kernel::template run<32>(args...);
}
#endif
template <class Kernel, class... Args> __attribute__((noinline)) void run_baseline(Args... args) {
  Kernel::template run<16>(args...);
}

template <class Kernel, class... Args> void run_for_cpu(Args... args) {
#ifdef LOGO_ATTN_X86_DISPATCH
  switch (cpu_isa()) {
    case Isa::avx512: return run_avx512<Kernel>(args...);
    case Isa::avx2: return run_avx2<Kernel>(args...);
    case Isa::baseline: break;
  }
#endif
  run_baseline<Kernel>(args...);
}

}  // namespace logo_attn::cpu
