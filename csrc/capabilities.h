// What each device's kernels compute, as their glue (cpu/ops.cpp, cuda/ops.cpp) declares it next to
// the checks that enforce it, and logo_attn._C.capabilities() reports: an entry exists only for
// glue linked into this build (no "cuda" without the CUDA kernels).
#pragma once

#include <c10/core/ScalarType.h>

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace logo_attn {

struct Capability {
  std::vector<at::ScalarType> dtypes;
  int64_t max_head_dim;  // 0: no limit
};

// device type -> capability; filled by the glue's static initialisers.
inline std::map<std::string, Capability>& capabilities() {
  static std::map<std::string, Capability> registry;
  return registry;
}

struct DeclareCapability {
  DeclareCapability(const char* device, Capability capability) { capabilities()[device] = std::move(capability); }
};

}  // namespace logo_attn
