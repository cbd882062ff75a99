// The few-keys path of global attention (few_keys.h's row kernels: fp32, bf16 and fp16 with at most
// kFewKeys keys), which global_attn_kernel.cpp's functions hand over to. Its forward and backward
// are translation units of their own (global_attn_few_keys_fwd.cpp, _bwd.cpp): their many unrolled
// instances (key chunks x dtypes x tuned ISAs) are most of the build, and so compile in parallel.
#pragma once

#include <algorithm>
#include <cstdint>

#include "../kernel_args.h"
#include "few_keys.h"
#include "isa.h"

namespace logo_attn::cpu {

// The few-keys path takes fp32, bf16 and fp16 (fp64, the gradcheck dtype, keeps the tile path's libm
// exp) at the tuned ISA levels (isa.h: x86's SSE2 fallback takes the tile path).
inline bool global_uses_few_keys(const AttnArgs& a) {
  return a.dtype != Dtype::float64 && few_keys(a.k_tokens) && tuned_isa();
}

// Few-keys forward tasks: (batch, block of kTokenBlock tokens), every head.
constexpr int64_t kTokenBlock = 64;
inline int64_t token_blocks(const AttnArgs& a) { return (a.q_tokens + kTokenBlock - 1) / kTokenBlock; }
inline int64_t few_keys_fwd_tasks(const AttnArgs& a) { return a.batch * token_blocks(a); }

// Few-keys backward: token ranges per batch element, from the shapes only (the summation order is
// fixed): at least 16 tasks where the tokens allow, each range at least 128 tokens long.
inline int64_t few_keys_splits(const AttnArgs& a) {
  if (a.batch == 0) return 1;
  const int64_t wanted = (16 + a.batch - 1) / a.batch;
  return std::max<int64_t>(1, std::min(wanted, a.q_tokens / 128));
}

void global_few_keys_fwd(const AttnArgs& a, int64_t begin, int64_t end);  // tasks: few_keys_fwd_tasks(a)
void global_few_keys_bwd(const AttnArgs& a, int64_t begin, int64_t end);  // tasks: a.batch * a.splits

}  // namespace logo_attn::cpu
