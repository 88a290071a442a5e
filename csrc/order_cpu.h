// Order-statistic helpers shared by the CPU selection ops (selection_cpu.cpp and
// certified_cpu.cpp): a seeded generator for samples, NaN-last ordering, ranks sorted with
// their origin, selection of sorted ranks, and the sample bracket around them.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <vector>

namespace cfcam {

inline uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Strict weak order with NaN after every number.
template <typename T>
inline bool nan_last_less(T a, T b) {
  return a < b || (std::isnan(b) && !std::isnan(a));
}

// One image's K requested ranks in ascending order, and where each one came from.
struct SortedRanks {
  std::vector<int64_t> order, sorted;
  SortedRanks(const int64_t* ranks, int64_t K) : order(K), sorted(K) {
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return ranks[a] < ranks[b]; });
    for (int64_t t = 0; t < K; ++t) sorted[t] = ranks[order[t]];
  }
  // out[order[t]] = values[t]: results in the order the ranks were asked.
  template <typename T>
  void scatter(const T* values, T* out) const {
    for (size_t t = 0; t < order.size(); ++t) out[order[t]] = values[t];
  }
};

// a[0:m) holds the values of global ranks base, base+1, ... in unknown order. Writes the
// value of rank sorted_ranks[t] to out[t]; the ranks must lie in [base, base + m), ascending.
template <typename T>
void select_sorted(T* a, int64_t m, int64_t base, const std::vector<int64_t>& sorted_ranks, T* out) {
  int64_t prev = -1;  // a[0:prev] are the prev+1 smallest, a[prev] in place
  for (size_t t = 0; t < sorted_ranks.size(); ++t) {
    const int64_t local = sorted_ranks[t] - base;
    if (local != prev) {
      if (local == prev + 1 && prev >= 0) {
        T* smallest = std::min_element(a + local, a + m, nan_last_less<T>);
        std::iter_swap(a + local, smallest);
      } else {
        std::nth_element(a + prev + 1, a + local, a + m, nan_last_less<T>);
      }
      prev = local;
    }
    out[t] = a[local];
  }
}

// Positions lo, hi in a sorted sample of S of M values that bracket the ranks [first, last]:
// `widen` times four standard deviations of the sample rank, plus 4, either side. `limit`
// bounds how many values a pass may keep: four times those expected inside, plus 1024.
struct SampleBracket {
  int64_t lo, hi;
  int64_t limit;
  SampleBracket(int64_t S, int64_t first, int64_t last, int64_t M, double widen = 1.0) {
    const double s = static_cast<double>(S);
    const double p_lo = static_cast<double>(first) / M, p_hi = static_cast<double>(last + 1) / M;
    auto margin = [&](double p) { return widen * (4.0 * std::sqrt(s * p * (1.0 - p)) + 4.0); };
    lo = static_cast<int64_t>(std::floor(p_lo * s - margin(p_lo)));
    hi = static_cast<int64_t>(std::ceil(p_hi * s + margin(p_hi)));
    const double expected = (std::min(1.0, (hi + 1) / s) - std::max(0.0, lo / s)) * M;
    limit = std::min(M, static_cast<int64_t>(4.0 * expected) + 1024);
  }
};

}  // namespace cfcam
