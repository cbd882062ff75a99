// The window partition of an F x H x W token grid, shared by local attention and window pooling:
// windows in row-major order, border windows clipped to the grid (smaller, never padded).
#pragma once

#include <algorithm>
#include <cstdint>

namespace logo_attn::cpu {

struct WindowGrid {
  int64_t grid[3], window[3], count[3];

  WindowGrid(const int64_t (&g)[3], const int64_t (&w)[3]) {
    for (int a = 0; a < 3; ++a) grid[a] = g[a], window[a] = w[a], count[a] = (g[a] + w[a] - 1) / w[a];
  }
  int64_t windows() const { return count[0] * count[1] * count[2]; }
  int64_t max_tokens() const { return window[0] * window[1] * window[2]; }

  // Token indices of window `index` in row-major (f, h, w) order, written to ids; returns how many.
  int64_t tokens(int64_t index, int64_t* ids) const {
    const int64_t cell[3] = {index / (count[1] * count[2]), index / count[2] % count[1], index % count[2]};
    int64_t lo[3], hi[3];
    for (int a = 0; a < 3; ++a) lo[a] = cell[a] * window[a], hi[a] = std::min(lo[a] + window[a], grid[a]);
    int64_t n = 0;
    for (int64_t t = lo[0]; t < hi[0]; ++t)
      for (int64_t y = lo[1]; y < hi[1]; ++y)
        for (int64_t x = lo[2]; x < hi[2]; ++x) ids[n++] = (t * grid[1] + y) * grid[2] + x;
    return n;
  }
};

}  // namespace logo_attn::cpu
