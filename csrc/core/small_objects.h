// remove_small_objects / remove_small_holes on bool masks (scikit-image 0.26 semantics), CPU core.
#pragma once

#include <cstdint>

namespace nf {

// mask: H*W bytes (nonzero = foreground). holes = false: foreground components (4- or 8-connected) of
// max_size pixels or fewer are cleared; holes = true: background components of max_size pixels or fewer
// (border-touching ones included, as scikit-image) are filled. out: H*W bytes 0/1 (may alias mask).
// One pass for the runs of each row, union-find over runs, one pass writing the flipped runs.
void remove_small_cpu(const uint8_t* mask, int64_t H, int64_t W, int64_t max_size, bool conn8, bool holes,
                      uint8_t* out);

}  // namespace nf
