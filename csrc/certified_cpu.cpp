// Exact float64 decisions from float32 distances (CPU). The caller passes `approx`, a float32
// evaluation of |x_i|^2 + |x_j|^2 - 2 x_i.x_j (an augmented float32 matrix product of the
// points rounded to float32), and the points themselves in float64. The exact squared
// distance D_ij is the float64 sum of squared differences, in coordinate order. Every approx
// entry is within E_ij = s_i + s_j of D_ij, s_i = c |x_i|^2 plus a few subnormal units for
// underflow (see slack_coefficient and Image::prepare), so a
// pair is recomputed exactly only when a decision (a threshold test, a selection bracket)
// lies within E_ij of its approx value: a few hundred pairs per image instead of all of them.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
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

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr int32_t kNone = std::numeric_limits<int32_t>::max();

// c in E_ij = c (|x_i|^2 + |x_j|^2) for points of dimension d. Error analysis (u = 2^-24):
// rounding the points to float32 moves D by at most (4u + u^2)(|x_i|^2 + |x_j|^2); the float32
// squared norms and the (d + 2)-term augmented dot product, in any summation order, add at
// most (3d + 8) u (|x_i|^2 + |x_j|^2); float64 rounding of D is ~1e-14 relative. The rest of
// (4d + 32) u pays for the float32 comparisons below (a few u of the same scale wherever a
// comparison is close), with room to spare.
double slack_coefficient(int64_t d) { return (4.0 * static_cast<double>(d) + 32.0) * std::ldexp(1.0, -24); }

double exact_sq(const double* x, const double* y, int64_t d) {
  double s = 0.0;
  for (int64_t k = 0; k < d; ++k) {
    const double t = x[k] - y[k];
    s += t * t;
  }
  return s;
}

// One image: its approx rows, its points and the per-point slack s_i (rounded up).
struct Image {
  const float* approx;
  int64_t n;  // row stride of approx
  const double* points;
  int64_t d;
  int32_t count;
  std::vector<float> slack;
  // group[i]: the smallest index of a point equal to x_i. Equal points (dead ReLU channels
  // above all) are exactly 0 apart, so their pairs are settled without approx values.
  std::vector<int32_t> group;
  int64_t same_pairs = 0;

  void prepare(double coefficient) {
    // An absolute term covers float32 underflow: (d + 4) units of the smallest subnormal.
    const double floor = static_cast<double>(d + 4) * std::ldexp(1.0, -149);
    slack.resize(count);
    for (int32_t i = 0; i < count; ++i) {
      const double* x = points + i * d;
      const double norm = std::inner_product(x, x + d, x, 0.0);
      slack[i] = std::nextafter(static_cast<float>(coefficient * norm + floor), kInf);
    }
    find_groups();
  }

  bool equal(int32_t i, int32_t j) const { return std::equal(points + i * d, points + (i + 1) * d, points + j * d); }

  // Sorts the points by a hash of their values, then compares within runs of one hash.
  void find_groups() {
    std::vector<uint64_t> key(count);
    for (int32_t i = 0; i < count; ++i) {
      uint64_t h = 0xCBF29CE484222325ull;
      for (int64_t k = 0; k < d; ++k) {
        const double v = points[i * d + k] + 0.0;  // -0.0 and 0.0 hash alike
        uint64_t bits;
        std::memcpy(&bits, &v, 8);
        h = (h ^ bits) * 0x100000001B3ull;
      }
      key[i] = h;
    }
    std::vector<int32_t> order(count);
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return key[a] != key[b] ? key[a] < key[b] : a < b; });
    group.resize(count);
    std::vector<int64_t> size(count, 0);
    std::vector<int32_t> firsts;  // the group leaders met in the current run of one hash
    for (int32_t t = 0; t < count; ++t) {
      const int32_t i = order[t];
      if (t == 0 || key[order[t - 1]] != key[i]) firsts.clear();
      group[i] = i;
      for (int32_t leader : firsts) {
        if (equal(leader, i)) {
          group[i] = leader;
          break;
        }
      }
      if (group[i] == i) firsts.push_back(i);
      ++size[group[i]];
    }
    same_pairs = 0;
    for (int64_t g : size) same_pairs += g * (g - 1) / 2;
  }
  const float* row(int32_t i) const { return approx + static_cast<int64_t>(i) * n; }
  double exact(int32_t i, int32_t j) const { return exact_sq(points + i * d, points + j * d, d); }
};

// Loops over one row segment written so that the compiler vectorises them; with GCC or
// Clang on x86-64 glibc (which resolves the clones at load time) each is also compiled for
// AVX2.
#if defined(__x86_64__) && defined(__GNUC__) && defined(__GLIBC__)
#define CFCAM_VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define CFCAM_VECTOR_CLONES
#endif

// keep[t] = 1 unless a[t] is certainly below `low` or certainly above `high`; returns the
// number certainly below. (low, high: the bracket minus / plus the row point's slack.)
// Pairs of equal points (group[t] == own) are left out of both. A value that overflowed
// float32 (points beyond about 2^63) is never certain: its pair is recomputed.
CFCAM_VECTOR_CLONES
int32_t bracket_row(const float* a, const float* slack, const int32_t* group, int32_t own, int32_t len,
                    float low, float high, uint8_t* keep) {
  int32_t below = 0;
  for (int32_t t = 0; t < len; ++t) {
    const bool finite = a[t] - a[t] == 0.0f;
    const bool under = finite & (a[t] + slack[t] < low);
    const bool over = finite & (a[t] - slack[t] > high);
    const bool same = group[t] == own;
    below += under & !same;
    keep[t] = !under & !over & !same;
  }
  return below;
}

// near[t] = 1 if a[t] is certainly within the threshold (or the points are equal: 0 apart);
// unsure[t] = 1 if it cannot be told (always so for a value that overflowed float32).
CFCAM_VECTOR_CLONES
void threshold_row(const float* a, const float* slack, const int32_t* group, int32_t own, int32_t len,
                   float yes_below, float no_above, uint8_t* near, uint8_t* unsure) {
  for (int32_t t = 0; t < len; ++t) {
    const bool same = group[t] == own;
    const bool finite = a[t] - a[t] == 0.0f;
    const bool yes = (finite & (a[t] + slack[t] <= yes_below)) | same;
    const bool no = finite & (a[t] - slack[t] > no_above);
    near[t] = yes;
    unsure[t] = !yes & !no;
  }
}

// Calls f(t) for every t < len with flags[t] != 0, skipping eight clear flags at a time.
template <typename F>
void for_each_flagged(const uint8_t* flags, int32_t len, F&& f) {
  int32_t t = 0;
  for (; t + 8 <= len; t += 8) {
    uint64_t word;
    std::memcpy(&word, flags + t, 8);
    if (word == 0) continue;
    for (int32_t u = t; u < t + 8; ++u) {
      if (flags[u]) f(u);
    }
  }
  for (; t < len; ++t) {
    if (flags[t]) f(t);
  }
}

// ----------------------------------------------------------------------------- selection
// The pairs kept for the second level: approx value, bound E_ij and the two points.
struct Kept {
  std::vector<float> value, bound;
  std::vector<int32_t> i, j;
  size_t size = 0;
  void reserve(size_t n) {
    value.resize(n);
    bound.resize(n);
    i.resize(n);
    j.resize(n);
  }
};

struct SelectScratch {
  Kept kept;
  std::vector<float> sample;
  std::vector<double> exact;
  std::vector<uint8_t> flags;
};

constexpr int64_t kSampleSize = 16384;
// Up to this many pairs x dimensions, recomputing every pair costs less than bracketing.
constexpr int64_t kDirectWork = int64_t{1} << 20;

// exact[0:m) holds the exact values of global ranks base, base+1, ...; writes rank
// ranks[t] to out[t] for sorted ranks inside [base, base + m). False if one is outside.
bool select_exact(std::vector<double>& exact, int64_t base, const std::vector<int64_t>& ranks,
                  double* out) {
  const auto m = static_cast<int64_t>(exact.size());
  if (ranks.front() < base || ranks.back() >= base + m) return false;
  select_sorted(exact.data(), m, base, ranks, out);
  return true;
}

// Every pair's exact value (pairs of equal points left out), then a plain selection: the
// path for small images and the fallback when both brackets miss (never wrong, only slower).
void select_all_exact(const Image& img, const std::vector<int64_t>& ranks, double* out,
                      std::vector<double>& exact) {
  exact.clear();
  for (int32_t i = 0; i + 1 < img.count; ++i) {
    for (int32_t j = i + 1; j < img.count; ++j) {
      if (img.group[i] != img.group[j]) exact.push_back(img.exact(i, j));
    }
  }
  select_exact(exact, 0, ranks, out);
}

// Why a bracket is exact: split the pairs into X (certainly below lo), Y (certainly above
// hi) and the rest Z. If the wanted order statistic v lies in [lo, hi], every X is below it
// and every Y above, so v is Z's order statistic at rank - |X|; and if v lies outside, that
// element of Z lies outside [lo, hi] too. So a result inside [lo, hi] is v; one outside is
// a miss, and a miss only costs a wider retry.

// Whether every one of values[0:K) lies in [lo, hi] (the check that a bracket held).
bool all_within(const double* values, size_t K, double lo, double hi) {
  return std::all_of(values, values + K, [&](double v) { return v >= lo && v <= hi; });
}

// Level 2: among the kept pairs Z, the approx order statistics at the lowest and highest
// rank widened by twice the largest bound bracket the exact ones; only the pairs that
// straddle or lie in that window are recomputed.
bool select_kept(const Image& img, const Kept& kept, int64_t base, const std::vector<int64_t>& ranks,
                 double* out, SelectScratch& s) {
  const auto m = static_cast<int64_t>(kept.size);
  const int64_t r_lo = ranks.front() - base, r_hi = ranks.back() - base;
  if (r_lo < 0 || r_hi >= m) return false;
  s.sample.assign(kept.value.begin(), kept.value.begin() + m);
  std::nth_element(s.sample.begin(), s.sample.begin() + r_lo, s.sample.end(), nan_last_less<float>);
  const float a_lo = s.sample[r_lo];
  std::nth_element(s.sample.begin() + r_lo, s.sample.begin() + r_hi, s.sample.end(), nan_last_less<float>);
  const float a_hi = s.sample[r_hi];
  const float widest = *std::max_element(kept.bound.begin(), kept.bound.begin() + m);
  const double lo = static_cast<double>(a_lo) - 2.0 * widest;
  const double hi = static_cast<double>(a_hi) + 2.0 * widest;
  if (!(lo <= hi)) return false;  // NaN
  int64_t below = 0;
  s.exact.clear();
  for (int64_t t = 0; t < m; ++t) {
    const double a = kept.value[t], e = kept.bound[t];
    if (a + e < lo) {
      ++below;
    } else if (!(a - e > hi)) {
      s.exact.push_back(img.exact(kept.i[t], kept.j[t]));
    }
  }
  return select_exact(s.exact, base + below, ranks, out) && all_within(out, ranks.size(), lo, hi);
}

// Level 1: one pass over the upper triangle counts the pairs certainly below [lo, hi] and
// keeps those not certainly outside it (at most `limit` of them; false beyond that).
bool select_in(const Image& img, float lo, float hi, size_t limit, const std::vector<int64_t>& ranks,
               double* out, SelectScratch& s) {
  const int32_t c = img.count;
  Kept& kept = s.kept;
  kept.reserve(limit + 8);
  kept.size = 0;
  s.flags.resize(c);
  const float* slack = img.slack.data();
  int64_t below = 0;
  for (int32_t i = 0; i + 1 < c; ++i) {
    const float* row = img.row(i) + i + 1;
    const int32_t len = c - i - 1;
    const uint8_t* flags = s.flags.data();
    below += bracket_row(row, slack + i + 1, img.group.data() + i + 1, img.group[i], len, lo - slack[i],
                         hi + slack[i], s.flags.data());
    // Kept flags are rare: skip clear words, copy the others branch-free.
    size_t k = kept.size;
    for (int32_t t0 = 0; t0 < len; t0 += 8) {
      const int32_t t1 = std::min(len, t0 + 8);
      if (t1 - t0 == 8) {
        uint64_t word;
        std::memcpy(&word, flags + t0, 8);
        if (word == 0) continue;
      }
      if (k + 8 > limit) return false;
      for (int32_t t = t0; t < t1; ++t) {
        kept.value[k] = row[t];
        kept.bound[k] = slack[i] + slack[i + 1 + t];
        kept.i[k] = i;
        kept.j[k] = i + 1 + t;
        k += flags[t];
      }
    }
    kept.size = k;
  }
  return select_kept(img, kept, below, ranks, out, s) && all_within(out, ranks.size(), lo, hi);
}

// The ranks among the pairs of unequal points (equal ones, dead channels above all, are
// exactly 0 apart and often most of the pairs): a stratified sample of approx values (one
// random pair in each of kSampleSize equal runs of the upper triangle, read in memory
// order) brackets them with four standard deviations of the sample rank either side; on a
// miss, one retry four times wider, then every pair recomputed.
void select_unequal_pairs(const Image& img, const std::vector<int64_t>& ranks, double* out, SelectScratch& s) {
  const int32_t c = img.count;
  const int64_t M = static_cast<int64_t>(c) * (c - 1) / 2;
  const int64_t kept_pairs = M - img.same_pairs;
  if (kept_pairs * img.d <= kDirectWork) return select_all_exact(img, ranks, out, s.exact);
  s.sample.clear();
  uint64_t state = 0x5EED5EEDull;
  int32_t i = 0;
  int64_t row_start = 0;  // triangle index of (i, i + 1)
  for (int64_t t = 0; t < kSampleSize; ++t) {
    const int64_t first = t * M / kSampleSize, width = (t + 1) * M / kSampleSize - first;
    const int64_t p = first + static_cast<int64_t>(splitmix64(state) % static_cast<uint64_t>(std::max<int64_t>(width, 1)));
    while (p >= row_start + (c - i - 1)) {
      row_start += c - i - 1;
      ++i;
    }
    const int32_t j = static_cast<int32_t>(i + 1 + (p - row_start));
    if (img.group[i] != img.group[j]) s.sample.push_back(img.row(i)[j]);
  }
  const auto size = static_cast<int64_t>(s.sample.size());
  for (double widen : {1.0, 4.0}) {
    if (size < 64) break;
    const SampleBracket at(size, ranks.front(), ranks.back(), kept_pairs, widen);
    const int64_t lo_i = at.lo, hi_i = at.hi;
    float lo = -kInf, hi = kInf;
    if (lo_i > 0) {
      std::nth_element(s.sample.begin(), s.sample.begin() + lo_i, s.sample.end(), nan_last_less<float>);
      lo = s.sample[lo_i];
    }
    if (hi_i < size) {
      std::nth_element(s.sample.begin() + std::max<int64_t>(lo_i, 0), s.sample.begin() + hi_i, s.sample.end(),
                       nan_last_less<float>);
      hi = s.sample[hi_i];
    }
    if (std::isnan(lo) || std::isnan(hi)) break;
    if (select_in(img, lo, hi, static_cast<size_t>(at.limit), ranks, out, s)) return;
  }
  select_all_exact(img, ranks, out, s.exact);
}

// Ranks below the number of pairs of equal points are 0 (nothing is below 0); the others
// are ranks among the pairs of unequal points.
void select_certified(const Image& img, const std::vector<int64_t>& ranks, double* out, SelectScratch& s) {
  const int64_t zero_pairs = img.same_pairs;
  std::vector<int64_t> rest;
  for (size_t t = 0; t < ranks.size(); ++t) {
    if (ranks[t] < zero_pairs) {
      out[t] = 0.0;
    } else {
      rest.push_back(ranks[t] - zero_pairs);
    }
  }
  if (!rest.empty()) select_unequal_pairs(img, rest, out + (ranks.size() - rest.size()), s);
}

// ----------------------------------------------------------------------------- labelling
// The neighbour relation as bit rows: bit j of row i (64-bit words, row-major) for i != j.
struct LabelScratch {
  std::vector<uint64_t> bits;
  std::vector<uint8_t> near, unsure;
  std::vector<int32_t> cluster, stack;
  std::vector<uint64_t> unvisited, core;
};

// Transposes a 64 x 64 bit block in place: bit c of word r <-> bit r of word c.
void transpose64(uint64_t* a) {
  uint64_t mask = 0x00000000FFFFFFFFull;
  for (int width = 32; width != 0; width >>= 1, mask ^= mask << width) {
    for (int r = 0; r < 64; r = (r + width + 1) & ~width) {
      const uint64_t t = ((a[r] >> width) ^ a[r + width]) & mask;
      a[r] ^= t << width;
      a[r + width] ^= t;
    }
  }
}

// Packs 0/1 bytes into bits (bit t of the result = bytes[t]), eight at a time.
inline uint64_t pack64(const uint8_t* bytes) {
  uint64_t out = 0;
  for (int g = 0; g < 8; ++g) {
    uint64_t word;
    std::memcpy(&word, bytes + 8 * g, 8);
    out |= ((word * 0x0102040810204080ull) >> 56) << (8 * g);
  }
  return out;
}

#if defined(__GNUC__)
inline int popcount64(uint64_t x) { return __builtin_popcountll(x); }
inline int lowest_bit(uint64_t x) { return __builtin_ctzll(x); }
#else
inline int popcount64(uint64_t x) {
  int n = 0;
  for (; x; x &= x - 1) ++n;
  return n;
}
inline int lowest_bit(uint64_t x) {
  int n = 0;
  for (; !(x & 1); x >>= 1) ++n;
  return n;
}
#endif

void label_image(const Image& img, double threshold, int64_t min_samples, int64_t* labels,
                 LabelScratch& s) {
  const int32_t c = img.count;
  std::fill(labels, labels + img.n, int64_t{-1});
  if (c == 0) return;
  const int32_t words = (c + 63) / 64;
  const int32_t padded = 64 * words;
  s.bits.assign(static_cast<size_t>(padded) * words, 0);
  s.near.assign(padded, 0);
  s.unsure.resize(padded);
  const float t = static_cast<float>(threshold);
  // Upper triangle, row by row: certain answers from approx, the unsure ones exactly.
  for (int32_t i = 0; i + 1 < c; ++i) {
    const float* row = img.row(i) + i + 1;
    const int32_t len = c - i - 1;
    uint8_t* near = s.near.data() + i + 1;
    threshold_row(row, img.slack.data() + i + 1, img.group.data() + i + 1, img.group[i], len, t - img.slack[i],
                  t + img.slack[i], near, s.unsure.data());
    for_each_flagged(s.unsure.data(), len, [&](int32_t u) { near[u] = img.exact(i, i + 1 + u) <= threshold; });
    uint64_t* out = s.bits.data() + static_cast<size_t>(i) * words;
    for (int32_t w = (i + 1) / 64; w < words; ++w) out[w] = pack64(s.near.data() + 64 * w);
    s.near[i + 1] = 0;  // columns <= i + 1 stay clear for the next row
  }
  // Symmetric: the block below the diagonal is the transpose of the block above it.
  std::vector<uint64_t> block(64);
  for (int32_t bi = 0; bi < words; ++bi) {
    for (int32_t bj = bi; bj < words; ++bj) {
      for (int r = 0; r < 64; ++r) block[r] = s.bits[static_cast<size_t>(64 * bi + r) * words + bj];
      transpose64(block.data());
      for (int r = 0; r < 64; ++r) s.bits[static_cast<size_t>(64 * bj + r) * words + bi] |= block[r];
    }
  }
  auto row_bits = [&](int32_t i) { return s.bits.data() + static_cast<size_t>(i) * words; };
  s.core.assign(words, 0);
  for (int32_t i = 0; i < c; ++i) {
    const uint64_t* r = row_bits(i);
    int count = 1;  // itself
    for (int32_t w = 0; w < words; ++w) count += popcount64(r[w]);
    if (count >= min_samples) s.core[i / 64] |= uint64_t{1} << (i % 64);
  }
  // Clusters: depth-first search over core points from each unvisited core point in index
  // order, so cluster k is the one with the k-th smallest core index (scikit-learn's order).
  s.cluster.assign(c, -1);
  s.unvisited = s.core;
  int32_t next = 0;
  for (int32_t i = 0; i < c; ++i) {
    if (!((s.unvisited[i / 64] >> (i % 64)) & 1)) continue;
    s.unvisited[i / 64] &= ~(uint64_t{1} << (i % 64));
    s.cluster[i] = next;
    s.stack.assign(1, i);
    while (!s.stack.empty()) {
      const uint64_t* r = row_bits(s.stack.back());
      s.stack.pop_back();
      for (int32_t w = 0; w < words; ++w) {
        uint64_t found = r[w] & s.unvisited[w];
        if (found == 0) continue;
        s.unvisited[w] &= ~found;
        for (; found; found &= found - 1) {
          const int32_t j = 64 * w + lowest_bit(found);
          s.cluster[j] = next;
          s.stack.push_back(j);
        }
      }
    }
    ++next;
  }
  // Border points: the smallest cluster number among core neighbours; the rest is noise.
  for (int32_t i = 0; i < c; ++i) {
    if ((s.core[i / 64] >> (i % 64)) & 1) {
      labels[i] = s.cluster[i];
      continue;
    }
    const uint64_t* r = row_bits(i);
    int32_t best = kNone;
    for (int32_t w = 0; w < words; ++w) {
      for (uint64_t found = r[w] & s.core[w]; found; found &= found - 1) {
        best = std::min(best, s.cluster[64 * w + lowest_bit(found)]);
      }
    }
    if (best != kNone) labels[i] = best;
  }
}

Image image_at(const float* approx, const double* points, const int64_t* counts, int64_t b,
               int64_t n, int64_t d) {
  return Image{approx + b * n * n, n, points + b * n * d, d, static_cast<int32_t>(counts[b]), {}};
}

// Runs body(image, scratch) for every image, on up to one thread per core, each image's
// slack prepared and a scratch per thread.
template <typename Scratch, typename Body>
void for_each_image(const float* approx, const double* points, const int64_t* counts, int64_t B, int64_t n,
                    int64_t d, Body&& body) {
  const double coefficient = slack_coefficient(d);
  const int workers = worker_count(B);
  std::vector<Scratch> scratch(workers);
  parallel_for_items(B, workers, [&](int w, int64_t b) {
    Image img = image_at(approx, points, counts, b, n, d);
    img.prepare(coefficient);
    body(img, scratch[w], b);
  });
}

}  // namespace

void certified_pair_ranks_cpu(const float* approx, const double* points, const int64_t* counts,
                              const int64_t* ranks, double* out, int64_t B, int64_t n, int64_t d,
                              int64_t K) {
  if (n >= kNone) throw std::invalid_argument("approx has too many points per image");
  check_counts(counts, B, n, "counts");
  for (int64_t b = 0; b < B; ++b) {
    check_ranks(ranks + b * K, K, counts[b] * (counts[b] - 1) / 2, b, "pairs i < j < counts[b]");
  }
  if (K == 0) return;
  for_each_image<SelectScratch>(approx, points, counts, B, n, d, [&](const Image& img, SelectScratch& s, int64_t b) {
    const SortedRanks wanted(ranks + b * K, K);
    std::vector<double> values(K);
    select_certified(img, wanted.sorted, values.data(), s);
    wanted.scatter(values.data(), out + b * K);
  });
}

void certified_dbscan_labels_cpu(const float* approx, const double* points, const int64_t* counts,
                                 const double* threshold, const int64_t* min_samples, int64_t* labels,
                                 int64_t B, int64_t n, int64_t d) {
  if (n >= kNone) throw std::invalid_argument("approx has too many points per image");
  check_counts(counts, B, n, "counts");
  check_dbscan_parameters(threshold, "threshold", min_samples, B);
  for_each_image<LabelScratch>(approx, points, counts, B, n, d, [&](const Image& img, LabelScratch& s, int64_t b) {
    label_image(img, threshold[b], min_samples[b], labels + b * n, s);
  });
}

}  // namespace cfcam
