// Local attention on CUDA: every window is a problem whose tokens are both queries and keys
// (attention.cuh). A block never crosses a window, so backward writes dK/dV rows directly.
#include "attention.cuh"
#include "kernels.h"

namespace logo_attn::cuda {

cudaError_t local_attn_fwd(const AttnArgs& a, cudaStream_t stream) { return attention_fwd<LocalSet>(a, stream); }

cudaError_t local_attn_bwd(const AttnArgs& a, cudaStream_t stream) {
  return attention_bwd<LocalSet>(a, /*chunks=*/1, stream);
}

}  // namespace logo_attn::cuda
