// CUDA ops on raw device pointers; every launch goes on `stream` (a cudaStream_t) of
// `device`. Host-side functions throw std::runtime_error on a CUDA error. No value checks
// (they would need a device-host synchronisation): counts are clamped to [0, n] and an
// out-of-range rank gives NaN. Kept free of CUDA headers so the bindings compile as C++.
#pragma once

#include <cstdint>

namespace cfcam {

// See pair_ranks_cpu; `dist` and `out` are float or double as `is_double` says.
void pair_ranks_cuda(const void* dist, const int64_t* counts, const int64_t* ranks, void* out,
                     int64_t B, int64_t n, int64_t K, bool is_double, int device, void* stream);

// See dbscan_labels_cpu; `work` is int32 scratch of 2 * B * n entries.
void dbscan_labels_cuda(const void* dist, const int64_t* counts, const void* eps,
                        const int64_t* min_samples, int64_t* labels, int32_t* work, int64_t B,
                        int64_t n, bool is_double, int device, void* stream);

}  // namespace cfcam
