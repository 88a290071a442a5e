// Batched exact selection on the CPU: one image per thread, a sampled bracket around the
// requested ranks, one streaming pass that keeps only the bracket, std::nth_element on it.
// If the bracket misses (rare, or adversarial data) the whole row is copied and selected.
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

#include "checks_cpu.h"
#include "ops_cpu.h"
#include "order_cpu.h"
#include "parallel_cpu.h"

namespace cfcam {
namespace {

// Upper triangle i < j < count of a row-major n x n matrix, visited row segment by row segment.
template <typename T>
struct Triangle {
  const T* data;
  int64_t n;
  int64_t count;
  int64_t size() const { return count * (count - 1) / 2; }
  int64_t max_segment() const { return count; }
  template <typename F>
  void for_each_segment(F&& f) const {
    for (int64_t i = 0; i + 1 < count; ++i) {
      if (!f(data + i * n + i + 1, count - i - 1)) return;
    }
  }
  T sample(uint64_t r) const {  // a uniformly random unordered pair
    const auto c = static_cast<uint64_t>(count);
    uint64_t i = r % c, j = (r / c) % (c - 1);
    if (j >= i) ++j;
    return i < j ? data[i * n + j] : data[j * n + i];
  }
};

constexpr int64_t kSampleSize = 4096;
constexpr int64_t kDirectLimit = 16 * kSampleSize;  // below this, copy and select directly

// Tries the sampled bracket; returns false if the bracket missed a rank or grew too large.
template <typename T, typename Source>
bool select_in_bracket(const Source& src, const std::vector<int64_t>& sorted_ranks, T* out, std::vector<T>& buf) {
  const int64_t M = src.size();
  std::vector<T> sample(kSampleSize);
  uint64_t state = 0x5EED5EEDull;
  for (auto& v : sample) v = src.sample(splitmix64(state));
  std::sort(sample.begin(), sample.end(), nan_last_less<T>);

  const SampleBracket at(kSampleSize, sorted_ranks.front(), sorted_ranks.back(), M);
  if (at.lo <= 0 && at.hi >= kSampleSize) return false;
  const T lo = at.lo <= 0 ? -std::numeric_limits<T>::infinity() : sample[at.lo];
  const T hi = at.hi >= kSampleSize ? std::numeric_limits<T>::infinity() : sample[at.hi];
  if (std::isnan(lo)) return false;  // the ranks sit among NaNs

  // Room for the limit plus one segment of branch-free writes.
  buf.resize(static_cast<size_t>(at.limit + src.max_segment()));
  int64_t below = 0, kept = 0;
  bool fits = true;
  src.for_each_segment([&](const T* p, int64_t len) {
    if (kept > at.limit) {
      fits = false;
      return false;
    }
    int64_t b = 0, k = kept;
    T* dst = buf.data();
    for (int64_t t = 0; t < len; ++t) {  // branch-free: always write, advance if inside
      const T v = p[t];
      b += v < lo;
      dst[k] = v;
      k += (v >= lo) & (v <= hi);
    }
    below += b;
    kept = k;
    return true;
  });
  if (!fits || below > sorted_ranks.front() || below + kept <= sorted_ranks.back()) return false;
  select_sorted(buf.data(), kept, below, sorted_ranks, out);
  return true;
}

template <typename T, typename Source>
void select_ranks(const Source& src, const int64_t* ranks, int64_t K, T* out,
                  std::vector<T>& buf) {
  if (K == 0) return;
  const SortedRanks wanted(ranks, K);
  std::vector<T> values(K);
  const int64_t M = src.size();
  if (M <= kDirectLimit || !select_in_bracket(src, wanted.sorted, values.data(), buf)) {
    buf.resize(static_cast<size_t>(M));
    int64_t at = 0;
    src.for_each_segment([&](const T* p, int64_t len) {
      std::copy(p, p + len, buf.data() + at);
      at += len;
      return true;
    });
    select_sorted(buf.data(), M, 0, wanted.sorted, values.data());
  }
  wanted.scatter(values.data(), out);
}

}  // namespace

template <typename T>
void pair_ranks_cpu(const T* dist, const int64_t* counts, const int64_t* ranks, T* out,
                    int64_t B, int64_t n, int64_t K) {
  check_counts(counts, B, n, "counts");
  for (int64_t b = 0; b < B; ++b) {
    check_ranks(ranks + b * K, K, counts[b] * (counts[b] - 1) / 2, b, "pairs i < j < counts[b]");
  }
  const int workers = worker_count(B);
  std::vector<std::vector<T>> buffers(workers);
  parallel_for_items(B, workers, [&](int w, int64_t b) {
    select_ranks(Triangle<T>{dist + b * n * n, n, counts[b]}, ranks + b * K, K, out + b * K, buffers[w]);
  });
}

template void pair_ranks_cpu<float>(const float*, const int64_t*, const int64_t*, float*, int64_t, int64_t, int64_t);
template void pair_ranks_cpu<double>(const double*, const int64_t*, const int64_t*, double*, int64_t, int64_t, int64_t);

}  // namespace cfcam
