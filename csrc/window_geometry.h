// The window partition of an F x H x W token grid, shifted or not, for every kernel (CPU and CUDA,
// host and device) and the argument checks: plain C++ with no torch and no CUDA header, so nvcc
// and the host compiler share this one definition (logo_attn/geometry.py is the Python one).
//
// Along one axis of length G with window w (already clipped to G) and shift s (0 <= s < w), the
// window boundaries are the cuts s, s + w, s + 2w, ...: with offset = (w - s) % w, coordinate t
// lies in window (t + offset) / w, window c covers [max(0, c w - offset), min(G, (c + 1) w - offset)),
// and there are ceil((G + offset) / w) windows. Shift 0 gives the plain windows t / w, the last one
// smaller when w does not divide G; a shift adds a leading partial window [0, s). Windows are
// numbered row-major over (F, H, W), tokens of the grid row-major too.
#pragma once

#include <cstdint>

#ifdef __CUDACC__
#define LOGO_ATTN_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define LOGO_ATTN_HOST_DEVICE inline
#endif

namespace logo_attn {

// One axis: length, window (>= 1, <= length) and offset = (window - shift) % window.
struct AxisWindows {
  int64_t size, window, offset;

  LOGO_ATTN_HOST_DEVICE AxisWindows() : size(1), window(1), offset(0) {}
  LOGO_ATTN_HOST_DEVICE AxisWindows(int64_t g, int64_t w, int64_t s) : size(g), window(w), offset((w - s) % w) {}
  LOGO_ATTN_HOST_DEVICE int64_t count() const { return (size + offset + window - 1) / window; }
  LOGO_ATTN_HOST_DEVICE int64_t start(int64_t c) const {
    const int64_t t = c * window - offset;
    return t > 0 ? t : 0;
  }
  LOGO_ATTN_HOST_DEVICE int64_t stop(int64_t c) const {
    const int64_t t = (c + 1) * window - offset;
    return t < size ? t : size;
  }
  LOGO_ATTN_HOST_DEVICE int64_t window_of(int64_t t) const { return (t + offset) / window; }
  // Where window c would start unclipped: before 0 for a leading partial window.
  LOGO_ATTN_HOST_DEVICE int64_t nominal_start(int64_t c) const { return c * window - offset; }
};

struct WindowPartition {
  AxisWindows axis[3];

  LOGO_ATTN_HOST_DEVICE WindowPartition(const int64_t (&grid)[3], const int64_t (&window)[3],
                                        const int64_t (&shift)[3]) {
    for (int a = 0; a < 3; ++a) axis[a] = AxisWindows(grid[a], window[a], shift[a]);
  }
  LOGO_ATTN_HOST_DEVICE int64_t windows() const { return axis[0].count() * axis[1].count() * axis[2].count(); }
  // The most tokens a window holds (the clipped window's volume).
  LOGO_ATTN_HOST_DEVICE int64_t max_tokens() const { return axis[0].window * axis[1].window * axis[2].window; }
  // [lo, hi) of window `index` along each axis.
  LOGO_ATTN_HOST_DEVICE void segments(int64_t index, int64_t (&lo)[3], int64_t (&hi)[3]) const {
    const int64_t n1 = axis[1].count(), n2 = axis[2].count();
    const int64_t cell[3] = {index / (n1 * n2), index / n2 % n1, index % n2};
    for (int a = 0; a < 3; ++a) lo[a] = axis[a].start(cell[a]), hi[a] = axis[a].stop(cell[a]);
  }
  // As above, and in lead[a] how far the window's first token lies past its nominal start (> 0 only
  // for a leading partial window): the token at lo + c sits at slot coordinate lead + c.
  LOGO_ATTN_HOST_DEVICE void segments(int64_t index, int64_t (&lo)[3], int64_t (&hi)[3], int64_t (&lead)[3]) const {
    segments(index, lo, hi);
    const int64_t n1 = axis[1].count(), n2 = axis[2].count();
    const int64_t cell[3] = {index / (n1 * n2), index / n2 % n1, index % n2};
    for (int a = 0; a < 3; ++a) lead[a] = lo[a] - axis[a].nominal_start(cell[a]);
  }
  // The window holding grid coordinate (t, y, x).
  LOGO_ATTN_HOST_DEVICE int64_t window_of(const int64_t (&coord)[3]) const {
    int64_t m = 0;
    for (int a = 0; a < 3; ++a) m = m * axis[a].count() + axis[a].window_of(coord[a]);
    return m;
  }
};

// The relative-position offsets a clipped window's pairs can have: a (2f-1, 2h-1, 2w-1) box, row
// major. A token at window-relative coordinates (t, y, x) has position t s0 + y s1 + x, and pair
// (query i, key j) has box entry centre + position_i - position_j, the entry of
// (t_i - t_j + f - 1, y_i - y_j + h - 1, x_i - x_j + w - 1).
struct OffsetBox {
  int64_t stride[3], centre, size;

  LOGO_ATTN_HOST_DEVICE explicit OffsetBox(const int64_t (&window)[3]) {
    const int64_t extent[3] = {2 * window[0] - 1, 2 * window[1] - 1, 2 * window[2] - 1};
    stride[2] = 1, stride[1] = extent[2], stride[0] = extent[1] * extent[2];
    size = extent[0] * stride[0];
    centre = (window[0] - 1) * stride[0] + (window[1] - 1) * stride[1] + window[2] - 1;
  }
  LOGO_ATTN_HOST_DEVICE int64_t position(int64_t t, int64_t y, int64_t x) const {
    return t * stride[0] + y * stride[1] + x;
  }
};

// The slots of a dense (heads, T, T) bias: T = f h w, slot = row-major index of a token's coordinates
// in its nominal window (lead + coordinate in the clipped window, see WindowPartition::segments).
// Pair (query i, key j) of head h reads entry [h][slot_i][slot_j].
struct SlotIndex {
  int64_t stride[3], slots;

  LOGO_ATTN_HOST_DEVICE explicit SlotIndex(const int64_t (&window)[3]) {
    stride[2] = 1, stride[1] = window[2], stride[0] = window[1] * window[2];
    slots = window[0] * stride[0];
  }
  LOGO_ATTN_HOST_DEVICE int64_t position(int64_t t, int64_t y, int64_t x) const {
    return t * stride[0] + y * stride[1] + x;
  }
};

}  // namespace logo_attn
