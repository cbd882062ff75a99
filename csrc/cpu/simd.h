// Portable SIMD for the CPU kernels: GCC/Clang vector extensions, sized by a byte width VB that the
// ISA dispatcher (isa.h) picks at run time: 64 (AVX-512), 32 (AVX2 + FMA) or 16 (SSE2 / NEON).
//
// The kernels are templates over VB whose every helper is always-inline, so one template instance,
// inlined into a function compiled with `__attribute__((target(...)))`, becomes code for that ISA.
// This header includes no torch header: the kernel files compile in seconds and stay testable.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

#define LOGO_INLINE inline __attribute__((always_inline))

namespace logo_attn::cpu {

// bfloat16 storage: layout-compatible with c10::BFloat16 (the torch glue casts pointers).
struct bf16 {
  uint16_t bits;
};

// float16 storage: layout-compatible with c10::Half. No CPU here computes in fp16 (AMX-FP16 is a
// Granite Rapids feature): values are converted to fp32 on load and rounded back on store.
struct f16 {
  uint16_t bits;
};

// Accumulation type: fp32 for bf16/fp16/fp32 inputs, fp64 for fp64 (what PyTorch promotes them to).
template <typename T> struct acc_type { using type = float; };
template <> struct acc_type<double> { using type = double; };
template <typename T> using acc_t = typename acc_type<T>::type;

LOGO_INLINE float to_acc(bf16 x) {
  uint32_t bits = uint32_t(x.bits) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}
// Exact, subnormals included (every fp16 value is an fp32 value).
LOGO_INLINE float to_acc(f16 x) {
  const uint32_t sign = uint32_t(x.bits & 0x8000u) << 16, exponent = (x.bits >> 10) & 0x1fu, mantissa = x.bits & 0x3ffu;
  uint32_t bits;
  if (exponent == 0) {  // zero or subnormal: mantissa * 2^-24
    const float magnitude = float(mantissa) * 5.9604644775390625e-8f;
    std::memcpy(&bits, &magnitude, sizeof bits);
    bits |= sign;
  } else if (exponent == 31) {
    bits = sign | 0x7f800000u | (mantissa << 13);  // inf, NaN (payload kept)
  } else {
    bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
  }
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}
LOGO_INLINE float to_acc(float x) { return x; }
LOGO_INLINE double to_acc(double x) { return x; }

LOGO_INLINE float bits_to_float(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// fp32 -> fp16 rounded to nearest even, overflow to inf, subnormals and NaN as c10::Half makes them
// (the FP16 library's float arithmetic trick, which c10 uses too: the additions do the rounding).
LOGO_INLINE f16 to_f16(float x) {
  uint32_t w;
  std::memcpy(&w, &x, sizeof w);
  float base = (std::fabs(x) * bits_to_float(0x77800000u)) * bits_to_float(0x08800000u);
  const uint32_t shl1_w = w + w, sign = w & 0x80000000u;
  uint32_t bias = shl1_w & 0xff000000u;
  if (bias < 0x71000000u) bias = 0x71000000u;
  base = bits_to_float((bias >> 1) + 0x07800000u) + base;
  uint32_t bits;
  std::memcpy(&bits, &base, sizeof bits);
  const uint32_t nonsign = ((bits >> 13) & 0x7c00u) + (bits & 0x0fffu);
  return f16{uint16_t((sign >> 16) | (shl1_w > 0xff000000u ? 0x7e00u : nonsign))};
}

// Round to nearest even, like c10::BFloat16 / c10::Half; NaN stays a (quiet) NaN.
template <typename T> LOGO_INLINE T from_acc(acc_t<T> x) {
  if constexpr (std::is_same_v<T, f16>) {
    return to_f16(x);
  } else if constexpr (std::is_same_v<T, bf16>) {
    uint32_t bits;
    std::memcpy(&bits, &x, sizeof bits);
    if (x != x) return bf16{0x7FC0};
    bits += 0x7FFFu + ((bits >> 16) & 1u);
    return bf16{uint16_t(bits >> 16)};
  } else {
    return x;
  }
}

// vec<T, VB>: VB bytes of T. Generic vectors lower to whatever registers the target has.
template <typename T, int VB> struct vector_of {
  typedef T type __attribute__((vector_size(VB)));
};
template <typename T, int VB> using vec = typename vector_of<T, VB>::type;
template <typename T, int VB> constexpr int lanes = VB / int(sizeof(T));

// Panels are padded to whole 64-byte vectors, a multiple of every VB.
template <typename T> constexpr int64_t pad_to_vectors(int64_t n) {
  constexpr int64_t step = 64 / sizeof(T);
  return (n + step - 1) / step * step;
}

template <typename T, int VB> LOGO_INLINE vec<T, VB> load(const T* p) {
  vec<T, VB> v;
  __builtin_memcpy(&v, p, VB);
  return v;
}
template <typename T, int VB> LOGO_INLINE void store(T* p, vec<T, VB> v) { __builtin_memcpy(p, &v, VB); }
template <typename T, int VB> LOGO_INLINE vec<T, VB> splat(T x) { return vec<T, VB>{} + x; }

// lanes<float, VB> 16-bit values from p widened to fp32, exactly as to_acc does one at a time, but
// in vector registers (a loop of to_acc calls into a buffer stays scalar). fp16: the same bit
// arithmetic, its three cases (zero/subnormal, inf/NaN, normal) selected per lane.
template <int VB> LOGO_INLINE vec<float, VB> widen(const bf16* p) {
  vec<uint16_t, VB / 2> h;
  __builtin_memcpy(&h, p, VB / 2);
  const vec<uint32_t, VB> bits = __builtin_convertvector(h, vec<uint32_t, VB>) << 16;
  vec<float, VB> f;
  __builtin_memcpy(&f, &bits, VB);
  return f;
}
template <int VB> LOGO_INLINE vec<float, VB> widen(const f16* p) {
  using U = vec<uint32_t, VB>;
  vec<uint16_t, VB / 2> h;
  __builtin_memcpy(&h, p, VB / 2);
  const U x = __builtin_convertvector(h, U);
  const U sign = (x & 0x8000u) << 16, exponent = (x >> 10) & 0x1fu, mantissa = x & 0x3ffu;
  const vec<float, VB> subnormal = __builtin_convertvector(mantissa, vec<float, VB>) * 5.9604644775390625e-8f;
  U subnormal_bits;
  __builtin_memcpy(&subnormal_bits, &subnormal, VB);
  const U bits = exponent == 0u ? (subnormal_bits | sign)
                 : exponent == 31u ? (sign | 0x7f800000u | (mantissa << 13))
                                   : (sign | ((exponent + 112u) << 23) | (mantissa << 13));
  vec<float, VB> f;
  __builtin_memcpy(&f, &bits, VB);
  return f;
}

// lanes<float, VB> fp32 values rounded to bf16 / fp16 into p, exactly as from_acc rounds one at a
// time (the same bit arithmetic, per lane).
template <int VB> LOGO_INLINE void narrow(vec<float, VB> x, bf16* p) {
  using U = vec<uint32_t, VB>;
  U bits;
  __builtin_memcpy(&bits, &x, VB);
  bits += 0x7FFFu + ((bits >> 16) & 1u);
  const U rounded = x != x ? U{} + 0x7FC0u : bits >> 16;
  const vec<uint16_t, VB / 2> h = __builtin_convertvector(rounded, vec<uint16_t, VB / 2>);
  __builtin_memcpy(p, &h, VB / 2);
}
template <int VB> LOGO_INLINE void narrow(vec<float, VB> x, f16* p) {
  using U = vec<uint32_t, VB>;
  using F = vec<float, VB>;
  U w;
  __builtin_memcpy(&w, &x, VB);
  const U magnitude_bits = w & 0x7fffffffu;
  F magnitude;
  __builtin_memcpy(&magnitude, &magnitude_bits, VB);
  F base = (magnitude * bits_to_float(0x77800000u)) * bits_to_float(0x08800000u);
  const U shl1_w = w + w, sign = w & 0x80000000u;
  U bias = shl1_w & 0xff000000u;
  bias = bias < 0x71000000u ? U{} + 0x71000000u : bias;
  const U bias_bits = (bias >> 1) + 0x07800000u;
  F bias_value;
  __builtin_memcpy(&bias_value, &bias_bits, VB);
  base = bias_value + base;
  U bits;
  __builtin_memcpy(&bits, &base, VB);
  const U nonsign = ((bits >> 13) & 0x7c00u) + (bits & 0x0fffu);
  const U h32 = (sign >> 16) | (shl1_w > 0xff000000u ? U{} + 0x7e00u : nonsign);
  const vec<uint16_t, VB / 2> h = __builtin_convertvector(h32, vec<uint16_t, VB / 2>);
  __builtin_memcpy(p, &h, VB / 2);
}

template <typename T> constexpr bool kSixteenBit = std::is_same_v<T, bf16> || std::is_same_v<T, f16>;

// dst[0, n) = scale * src[0, n) in the accumulation type, 16-bit values widened a vector at a time.
template <int VB, typename T, typename A = acc_t<T>>
LOGO_INLINE void widen_row(const T* src, int64_t n, A scale, A* dst) {
  int64_t c = 0;
  if constexpr (kSixteenBit<T>) {
    for (; c + lanes<float, VB> <= n; c += lanes<float, VB>) store<float, VB>(dst + c, widen<VB>(src + c) * scale);
  }
  for (; c < n; ++c) dst[c] = to_acc(src[c]) * scale;
}

// dst[0, n) = scale * src[0, n) rounded to T, 16-bit values a vector at a time.
template <int VB, typename T, typename A = acc_t<T>>
LOGO_INLINE void narrow_row(const A* src, int64_t n, A scale, T* dst) {
  int64_t c = 0;
  if constexpr (kSixteenBit<T>) {
    for (; c + lanes<float, VB> <= n; c += lanes<float, VB>) narrow<VB>(load<float, VB>(src + c) * scale, dst + c);
  }
  for (; c < n; ++c) dst[c] = from_acc<T>(src[c] * scale);
}

// Lane reductions as a halving tree: add (or max) the two halves until two lanes are left. log2
// steps on registers instead of a serial chain, and a fixed order, so results stay reproducible.
struct MaxOp {
  template <typename V> LOGO_INLINE V operator()(V a, V b) const { return a > b ? a : b; }
};
struct AddOp {
  template <typename V> LOGO_INLINE V operator()(V a, V b) const { return a + b; }
};
template <typename T, int VB, class Op> LOGO_INLINE T reduce_lanes(vec<T, VB> v, Op op) {
  if constexpr (VB == 2 * int(sizeof(T))) {
    return op(v[0], v[1]);
  } else {
    vec<T, VB / 2> low, high;
    __builtin_memcpy(&low, &v, VB / 2);
    __builtin_memcpy(&high, reinterpret_cast<const char*>(&v) + VB / 2, VB / 2);
    return reduce_lanes<T, VB / 2>(op(low, high), op);
  }
}
template <typename T, int VB> LOGO_INLINE T horizontal_max(vec<T, VB> v) { return reduce_lanes<T, VB>(v, MaxOp{}); }
template <typename T, int VB> LOGO_INLINE T horizontal_sum(vec<T, VB> v) { return reduce_lanes<T, VB>(v, AddOp{}); }

// exp on a float vector: Cephes' expf (range reduction by ln 2, degree-6 polynomial, 2^n by the
// exponent bits), relative error ~2 ulp. Arguments below -87 (including -inf) give exactly 0.
template <int VB> LOGO_INLINE vec<float, VB> exp_vec(vec<float, VB> x) {
  using vf = vec<float, VB>;
  using vi = vec<int32_t, VB>;
  const vf lo = splat<float, VB>(-87.0f), hi = splat<float, VB>(88.0f);
  vf xc = x < lo ? lo : x;
  xc = xc > hi ? hi : xc;
  // n = round(x log2 e) by adding 1.5 * 2^23, which leaves n in the low mantissa bits (one add where
  // a float -> int -> float floor takes five; no -ffast-math here, which would fold the add and the
  // subtraction): r = x - n ln 2 lies in [-ln 2 / 2, ln 2 / 2].
  const vf magic = splat<float, VB>(12582912.0f);
  const vf shifted = xc * 1.44269504088896341f + magic;
  const vf nf = shifted - magic;
  vf r = xc - nf * 0.693359375f - nf * -2.12194440e-4f;
  vf p = splat<float, VB>(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  vi bits;
  __builtin_memcpy(&bits, &shifted, VB);
  bits = (bits + 127) << 23;  // 2^n: (magic's bits + n + 127) << 23, magic's bits shifting out
  vf scale;
  __builtin_memcpy(&scale, &bits, VB);
  vf y = p * scale;
  return x < lo ? vf{} : y;
}

// log on a float vector of positive normal numbers: Cephes' logf (x = m 2^e with m in
// [sqrt(1/2), sqrt(2)), degree-9 polynomial in m - 1), relative error ~1 ulp. NaN and +inf are
// returned as they are (a row sum that met a NaN score must give a NaN log-sum-exp, as libm's log
// does: the bit manipulation below would turn it into a finite number).
template <int VB> LOGO_INLINE vec<float, VB> log_vec(vec<float, VB> x) {
  using vf = vec<float, VB>;
  using vi = vec<int32_t, VB>;
  vi bits;
  __builtin_memcpy(&bits, &x, VB);
  vi e = ((bits >> 23) & 0xff) - 126;          // x = m 2^e with m in [0.5, 1)
  bits = (bits & 0x807fffff) | 0x3f000000;
  vf m;
  __builtin_memcpy(&m, &bits, VB);
  const vi small = m < 0.707106781186547524f;  // -1 where m < sqrt(1/2): use 2m, e - 1
  e = e + small;
  m = m + (small ? m : vf{}) - 1.0f;
  const vf z = m * m;
  vf y = splat<float, VB>(7.0376836292e-2f);
  y = y * m - 1.1514610310e-1f;
  y = y * m + 1.1676998740e-1f;
  y = y * m - 1.2420140846e-1f;
  y = y * m + 1.4249322787e-1f;
  y = y * m - 1.6668057665e-1f;
  y = y * m + 2.0000714765e-1f;
  y = y * m - 2.4999993993e-1f;
  y = y * m + 3.3333331174e-1f;
  const vf ef = __builtin_convertvector(e, vf);
  y = y * m * z + ef * -2.12194440e-4f - 0.5f * z;
  const vf result = m + y + ef * 0.693359375f;
  const vi finite = (x == x) & (x < std::numeric_limits<float>::infinity());
  return finite ? result : x;
}

// lse[i] = max[i] + log(sum[i]) and sum[i] <- 1 / sum[i] for i < n (rows of a block, sums >= 1):
// vectorised for fp32, libm for fp64.
template <typename T, int VB> LOGO_INLINE void finish_softmax_rows(const T* max, T* sum, T* lse, int64_t n) {
  int64_t i = 0;
  if constexpr (std::is_same_v<T, float>) {
    for (; i + lanes<T, VB> <= n; i += lanes<T, VB>) {
      const vec<T, VB> s = load<T, VB>(sum + i);
      store<T, VB>(lse + i, load<T, VB>(max + i) + log_vec<VB>(s));
      store<T, VB>(sum + i, T(1) / s);
    }
  }
  for (; i < n; ++i) lse[i] = max[i] + std::log(sum[i]), sum[i] = T(1) / sum[i];
}

// exp over n (a multiple of the vector lanes) values in place: vectorised for fp32, libm for fp64
// (float64 is the gradcheck dtype, where accuracy beats speed).
template <typename T, int VB> LOGO_INLINE void exp_inplace(T* x, int64_t n, T shift) {
  if constexpr (std::is_same_v<T, float>) {
    for (int64_t j = 0; j < n; j += lanes<T, VB>) store<T, VB>(x + j, exp_vec<VB>(load<T, VB>(x + j) - shift));
  } else {
    for (int64_t j = 0; j < n; ++j) x[j] = std::exp(x[j] - shift);
  }
}

template <typename T, int VB> LOGO_INLINE T max_of(const T* x, int64_t n) {
  vec<T, VB> m = splat<T, VB>(-std::numeric_limits<T>::infinity());
  for (int64_t j = 0; j < n; j += lanes<T, VB>) {
    vec<T, VB> v = load<T, VB>(x + j);
    m = v > m ? v : m;
  }
  return horizontal_max<T, VB>(m);
}

template <typename T, int VB> LOGO_INLINE T dot_of(const T* x, const T* y, int64_t n) {
  vec<T, VB> s{};
  for (int64_t j = 0; j < n; j += lanes<T, VB>) s += load<T, VB>(x + j) * load<T, VB>(y + j);
  return horizontal_sum<T, VB>(s);
}

template <typename T, int VB> LOGO_INLINE T sum_of(const T* x, int64_t n) {
  vec<T, VB> s{};
  for (int64_t j = 0; j < n; j += lanes<T, VB>) s += load<T, VB>(x + j);
  return horizontal_sum<T, VB>(s);
}

}  // namespace logo_attn::cpu
