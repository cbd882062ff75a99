// The windows of the CPU kernels (local attention and window pooling) as token lists: windows in
// row-major order, border and leading partial windows clipped to the grid (smaller, never padded).
// The geometry itself is ../window_geometry.h.
#pragma once

#include <cstdint>

#include "../window_geometry.h"

namespace logo_attn::cpu {

struct WindowGrid {
  WindowPartition partition;
  OffsetBox box;
  SlotIndex slot_index;
  int64_t grid[3];
  bool slots;  // positions are dense-bias slots rather than offset-box positions

  WindowGrid(const int64_t (&g)[3], const int64_t (&w)[3], const int64_t (&s)[3], bool dense_slots = false)
      : partition(g, w, s), box(w), slot_index(w), grid{g[0], g[1], g[2]}, slots(dense_slots) {}
  int64_t windows() const { return partition.windows(); }
  int64_t max_tokens() const { return partition.max_tokens(); }

  // Token indices of window `index` in row-major (f, h, w) order, written to ids, and, when pos is
  // not null, each token's position (in the offset box, or its dense-bias slot) and in *run the
  // window's length along the last axis. Returns how many. Consecutive tokens along the last axis
  // have consecutive positions either way.
  int64_t tokens(int64_t index, int64_t* ids, int32_t* pos = nullptr, int64_t* run = nullptr) const {
    int64_t lo[3], hi[3], lead[3];
    partition.segments(index, lo, hi, lead);
    if (run) *run = hi[2] - lo[2];
    int64_t n = 0;
    for (int64_t t = lo[0]; t < hi[0]; ++t)
      for (int64_t y = lo[1]; y < hi[1]; ++y)
        for (int64_t x = lo[2]; x < hi[2]; ++x) {
          if (pos)
            pos[n] = int32_t(slots ? slot_index.position(t - lo[0] + lead[0], y - lo[1] + lead[1], x - lo[2] + lead[2])
                                   : box.position(t - lo[0], y - lo[1], x - lo[2]));
          ids[n++] = (t * grid[1] + y) * grid[2] + x;
        }
    return n;
  }
};

}  // namespace logo_attn::cpu
