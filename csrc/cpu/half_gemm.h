// Which matrix product bf16/fp16 local attention runs on (the torch-side choice behind
// kernel_args.h's HalfGemm), per dtype, from the mode read at first use, or set since:
//   LOGO_ATTN_CPU_HALF_GEMM unset or "auto": PyTorch's oneDNN brgemm on VNNI-packed operands where
//     its could_pack(dtype) is true (AMX-BF16; AMX-FP16 for fp16), else none (the fp32 tiles);
//   "off": none;
//   "brgemm": PyTorch's brgemm on row-major operands on any CPU (without AMX, its fallback gemm):
//     the 16-bit tiles' logic under PyTorch's own product, for tests;
//   "emulated": the VNNI layout on a scalar product of ours: the AMX path's packing, for tests.
#pragma once

#include <c10/core/ScalarType.h>

#include "../kernel_args.h"

namespace logo_attn::cpu {

// The HalfGemm of dtype's local attention, or null for the fp32 tiles (and for fp32/fp64).
const HalfGemm* half_gemm_for(at::ScalarType dtype);
// Its name for logo_attn.info: "amx", "brgemm", "emulated" or "none".
const char* half_gemm_name(at::ScalarType dtype);
// Sets the mode ("auto", "off", "brgemm", "emulated"; "" is "auto") for the op calls that follow and
// returns the previous one: benchmarks compare the paths in one process (logo_attn._C.set_cpu_half_gemm).
const char* set_half_gemm_mode(const char* mode);
// PyTorch's brgemm could_pack(dtype) where this torch has the brgemm interface, else false.
bool brgemm_could_pack(at::ScalarType dtype);

}  // namespace logo_attn::cpu
