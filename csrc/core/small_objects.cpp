#include "core/small_objects.h"

#include <algorithm>
#include <vector>

#include "core/runs.h"

namespace nf {

namespace {

template <class I>
void remove_small_impl(const uint8_t* mask, int64_t H, int64_t W, int64_t max_size, bool conn8, bool holes,
                       uint8_t* out) {
  runs::Runs<I> R;
  R.clear(H);
  for (int64_t r = 0; r < H; ++r) {
    const uint8_t* m = mask + r * W;
    R.row_first[r] = static_cast<int64_t>(R.pos.size());
    int64_t c = 0;
    while (c < W) {  // runs of the selected value (foreground, or background for holes)
      c = holes ? runs::skip_bytes<true>(m, c, W) : runs::skip_bytes<false>(m, c, W);
      if (c == W) break;
      const int64_t start = c;
      c = holes ? runs::skip_bytes<false>(m, c, W) : runs::skip_bytes<true>(m, c, W);
      R.add(static_cast<I>(r * W + start), c - start);
    }
  }
  R.row_first[H] = static_cast<int64_t>(R.pos.size());
  R.join(H, W, conn8);
  const int64_t nr = static_cast<int64_t>(R.pos.size());
  std::vector<int64_t> size(static_cast<size_t>(nr), 0);
  for (int64_t i = 0; i < nr; ++i) size[R.find(static_cast<I>(i))] += R.len[i];
  // out = mask as 0/1, then the small components flipped.
  for (int64_t i = 0; i < H * W; ++i) out[i] = mask[i] != 0;
  const uint8_t flip = holes ? 1 : 0;
  for (int64_t i = 0; i < nr; ++i)
    if (size[R.find(static_cast<I>(i))] <= max_size) std::fill(out + R.pos[i], out + R.pos[i] + R.len[i], flip);
}

}  // namespace

void remove_small_cpu(const uint8_t* mask, int64_t H, int64_t W, int64_t max_size, bool conn8, bool holes,
                      uint8_t* out) {
  if (H <= 0 || W <= 0) return;
  if (H * W < (int64_t(1) << 31)) {
    remove_small_impl<int32_t>(mask, H, W, max_size, conn8, holes, out);
  } else {
    remove_small_impl<int64_t>(mask, H, W, max_size, conn8, holes, out);
  }
}

}  // namespace nf
