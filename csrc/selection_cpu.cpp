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
#include "parallel_cpu.h"

namespace cfcam {
namespace {

// Strict weak order with NaN after every number.
template <typename T>
inline bool nan_last_less(T a, T b) {
  return a < b || (std::isnan(b) && !std::isnan(a));
}

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

// The first `length` entries of one row.
template <typename T>
struct Prefix {
  const T* data;
  int64_t length;
  int64_t size() const { return length; }
  int64_t max_segment() const { return length; }
  template <typename F>
  void for_each_segment(F&& f) const {
    if (length > 0) f(data, length);
  }
  T sample(uint64_t r) const { return data[r % static_cast<uint64_t>(length)]; }
};

inline uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// a[0:m) holds the values of global ranks base, base+1, ... in unknown order. Writes the
// value of rank sorted_ranks[t] to out[order[t]] for the K ranks, which must lie in
// [base, base + m) and be sorted ascending.
template <typename T>
void select_sorted(T* a, int64_t m, int64_t base, const std::vector<int64_t>& sorted_ranks,
                   const std::vector<int64_t>& order, T* out) {
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
    out[order[t]] = a[local];
  }
}

constexpr int64_t kSampleSize = 4096;
constexpr int64_t kDirectLimit = 16 * kSampleSize;  // below this, copy and select directly

// Tries the sampled bracket; returns false if the bracket missed a rank or grew too large.
template <typename T, typename Source>
bool select_in_bracket(const Source& src, const std::vector<int64_t>& sorted_ranks,
                       const std::vector<int64_t>& order, T* out, std::vector<T>& buf) {
  const int64_t M = src.size();
  std::vector<T> sample(kSampleSize);
  uint64_t state = 0x5EED5EEDull;
  for (auto& v : sample) v = src.sample(splitmix64(state));
  std::sort(sample.begin(), sample.end(), nan_last_less<T>);

  const double S = static_cast<double>(kSampleSize);
  const double p_lo = static_cast<double>(sorted_ranks.front()) / M;
  const double p_hi = static_cast<double>(sorted_ranks.back() + 1) / M;
  auto slack = [&](double p) { return 4.0 * std::sqrt(S * p * (1.0 - p)) + 4.0; };
  const auto lo_i = static_cast<int64_t>(std::floor(p_lo * S - slack(p_lo)));
  const auto hi_i = static_cast<int64_t>(std::ceil(p_hi * S + slack(p_hi)));
  if (lo_i <= 0 && hi_i >= kSampleSize) return false;
  const T lo = lo_i <= 0 ? -std::numeric_limits<T>::infinity() : sample[lo_i];
  const T hi = hi_i >= kSampleSize ? std::numeric_limits<T>::infinity() : sample[hi_i];
  if (std::isnan(lo)) return false;  // the ranks sit among NaNs

  // Room for four times the expected bracket plus one segment of branch-free writes.
  const double expected = (std::min(1.0, (hi_i + 1) / S) - std::max(0.0, lo_i / S)) * M;
  const int64_t limit = std::min(M, static_cast<int64_t>(4.0 * expected) + 1024);
  buf.resize(static_cast<size_t>(limit + src.max_segment()));
  int64_t below = 0, kept = 0;
  bool fits = true;
  src.for_each_segment([&](const T* p, int64_t len) {
    if (kept > limit) {
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
  select_sorted(buf.data(), kept, below, sorted_ranks, order, out);
  return true;
}

template <typename T, typename Source>
void select_ranks(const Source& src, const int64_t* ranks, int64_t K, T* out,
                  std::vector<T>& buf) {
  if (K == 0) return;
  std::vector<int64_t> order(K);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return ranks[a] < ranks[b]; });
  std::vector<int64_t> sorted_ranks(K);
  for (int64_t t = 0; t < K; ++t) sorted_ranks[t] = ranks[order[t]];
  const int64_t M = src.size();
  if (M > kDirectLimit && select_in_bracket(src, sorted_ranks, order, out, buf)) return;
  buf.resize(static_cast<size_t>(M));
  int64_t at = 0;
  src.for_each_segment([&](const T* p, int64_t len) {
    std::copy(p, p + len, buf.data() + at);
    at += len;
    return true;
  });
  select_sorted(buf.data(), M, 0, sorted_ranks, order, out);
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

template <typename T>
void kth_smallest_cpu(const T* values, const int64_t* lengths, const int64_t* ranks, T* out,
                      int64_t B, int64_t L, int64_t K) {
  check_counts(lengths, B, L, "lengths");
  for (int64_t b = 0; b < B; ++b) check_ranks(ranks + b * K, K, lengths[b], b, "valid values");
  const int workers = worker_count(B);
  std::vector<std::vector<T>> buffers(workers);
  parallel_for_items(B, workers, [&](int w, int64_t b) {
    select_ranks(Prefix<T>{values + b * L, lengths[b]}, ranks + b * K, K, out + b * K, buffers[w]);
  });
}

template void pair_ranks_cpu<float>(const float*, const int64_t*, const int64_t*, float*, int64_t, int64_t, int64_t);
template void pair_ranks_cpu<double>(const double*, const int64_t*, const int64_t*, double*, int64_t, int64_t, int64_t);
template void kth_smallest_cpu<float>(const float*, const int64_t*, const int64_t*, float*, int64_t, int64_t, int64_t);
template void kth_smallest_cpu<double>(const double*, const int64_t*, const int64_t*, double*, int64_t, int64_t, int64_t);

}  // namespace cfcam
