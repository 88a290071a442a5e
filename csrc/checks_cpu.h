// Value checks shared by the CPU ops: each throws std::invalid_argument (Python's ValueError)
// with a message that names the argument, the image and the bound.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

namespace cfcam {

// name[b] in [0, limit] for every image b.
inline void check_counts(const int64_t* counts, int64_t B, int64_t limit, const char* name) {
  for (int64_t b = 0; b < B; ++b) {
    if (counts[b] < 0 || counts[b] > limit) {
      throw std::invalid_argument(std::string(name) + "[" + std::to_string(b) + "] = " +
                                  std::to_string(counts[b]) + " is outside [0, " + std::to_string(limit) + "]");
    }
  }
}

// ranks[b, k] in [0, M) for the K ranks of image b, M the number of `what` of that image.
inline void check_ranks(const int64_t* ranks, int64_t K, int64_t M, int64_t b, const char* what) {
  for (int64_t k = 0; k < K; ++k) {
    if (ranks[k] < 0 || ranks[k] >= M) {
      throw std::invalid_argument("ranks[" + std::to_string(b) + ", " + std::to_string(k) + "] = " +
                                  std::to_string(ranks[k]) + " is outside [0, " + std::to_string(M) +
                                  "), the number of " + what + " of image " + std::to_string(b));
    }
  }
}

// A DBSCAN radius (name[b] >= 0, not NaN) and min_samples[b] >= 1 for every image b.
template <typename T>
void check_dbscan_parameters(const T* radius, const char* name, const int64_t* min_samples, int64_t B) {
  for (int64_t b = 0; b < B; ++b) {
    const std::string at = "[" + std::to_string(b) + "]";
    if (!(radius[b] >= 0)) {
      throw std::invalid_argument(name + at + " = " + std::to_string(radius[b]) + " must be a non-negative number");
    }
    if (min_samples[b] < 1) {
      throw std::invalid_argument("min_samples" + at + " = " + std::to_string(min_samples[b]) +
                                  " must be at least 1");
    }
  }
}

}  // namespace cfcam
