// peak_local_max peak mask on the CPU (torch-free core). See kernels/peaks.h for the exact semantics.
#pragma once

#include <cstdint>

#include "kernels/peaks.h"

namespace nf {

// Fills a.out with the peak mask. a.bbox / a.flags are allocated inside (ignored on input).
// peak_mask_cpu: a vectorised 3x3 pre-test over rows discards almost every non-maximum (bounding boxes
// and "has a non-maximum" flags from the same row pass's label runs), then the shared full-footprint
// body on the few survivors; labels uint8 (bool masks), int32 or int64.
// peak_mask_emulated: the device algorithm (per-pixel atomics) on CpuExec, int64 labels.
template <class T, class LT>
void peak_mask_cpu(peaks::Args<T, LT> a);
template <class T>
void peak_mask_emulated(peaks::Args<T> a);

}  // namespace nf
