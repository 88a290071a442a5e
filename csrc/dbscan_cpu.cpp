// Batched DBSCAN labelling on the CPU, one image per thread, scikit-learn's semantics:
// neighbours iff dist <= eps (self included), core iff at least min_samples neighbours,
// clusters = connected components of core points (union-find, root = smallest index),
// a border point joins the smallest-numbered cluster among its core neighbours, clusters
// numbered by increasing smallest core index. Only the upper triangle of dist is read.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "checks_cpu.h"
#include "ops_cpu.h"
#include "parallel_cpu.h"

namespace cfcam {
namespace {

constexpr int32_t kNone = std::numeric_limits<int32_t>::max();

struct Scratch {
  std::vector<int32_t> count, parent, root, border, hits, shield;
  std::vector<uint8_t> core;
};

inline int32_t find_root(std::vector<int32_t>& parent, int32_t x) {
  while (parent[x] != x) {
    parent[x] = parent[parent[x]];  // path halving
    x = parent[x];
  }
  return x;
}

template <typename T>
void label_image(const T* d, int64_t n, int32_t c, T eps, int64_t min_samples, int64_t* labels,
                 Scratch& s) {
  std::fill(labels, labels + n, int64_t{-1});
  if (c == 0) return;
  s.count.assign(c, 1);  // every point is its own neighbour
  for (int32_t i = 0; i < c; ++i) {
    const T* row = d + static_cast<int64_t>(i) * n;
    int32_t* col = s.count.data();
    int32_t own = 0;
    for (int32_t j = i + 1; j < c; ++j) {
      const int32_t hit = row[j] <= eps;
      own += hit;
      col[j] += hit;
    }
    s.count[i] += own;
  }
  s.core.resize(c);
  s.parent.resize(c);
  for (int32_t i = 0; i < c; ++i) {
    s.core[i] = s.count[i] >= min_samples;
    s.parent[i] = i;
  }
  // Connected components of core points; a union links the larger root under the smaller.
  // Each core row's core neighbours are first gathered branch-free into `hits`.
  s.hits.resize(c);
  for (int32_t i = 0; i < c; ++i) {
    if (!s.core[i]) continue;
    const T* row = d + static_cast<int64_t>(i) * n;
    const uint8_t* core = s.core.data();
    int32_t* hits = s.hits.data();
    int32_t found = 0;
    for (int32_t j = i + 1; j < c; ++j) {
      hits[found] = j;
      found += core[j] & (row[j] <= eps);
    }
    if (found == 0) continue;
    int32_t mine = find_root(s.parent, i);
    for (int32_t t = 0; t < found; ++t) {
      const int32_t j = hits[t];
      if (s.parent[j] == mine) continue;  // already joined (the common case)
      const int32_t other = find_root(s.parent, j);
      if (other < mine) {
        s.parent[mine] = other;
        mine = other;
      } else if (other > mine) {
        s.parent[other] = mine;
      }
    }
  }
  s.root.resize(c);
  for (int32_t i = 0; i < c; ++i) s.root[i] = s.core[i] ? find_root(s.parent, i) : kNone;
  // Border points: the smallest root among core neighbours (roots order like cluster numbers).
  // root[j] is kNone for a non-core j, and `shield` is kNone for a core j (0 otherwise), so
  // neither loop needs a core test: a kNone candidate never lowers a minimum.
  s.border.assign(c, kNone);
  s.shield.resize(c);
  for (int32_t j = 0; j < c; ++j) s.shield[j] = s.core[j] ? kNone : 0;
  for (int32_t i = 0; i < c; ++i) {
    const T* row = d + static_cast<int64_t>(i) * n;
    int32_t* border = s.border.data();
    if (s.core[i]) {
      const int32_t r = s.root[i];
      const int32_t* shield = s.shield.data();
      for (int32_t j = i + 1; j < c; ++j) {
        border[j] = std::min(border[j], (row[j] <= eps ? r : kNone) | shield[j]);
      }
    } else {
      const int32_t* root = s.root.data();
      int32_t best = border[i];
      for (int32_t j = i + 1; j < c; ++j) best = std::min(best, row[j] <= eps ? root[j] : kNone);
      border[i] = best;
    }
  }
  // Cluster numbers: rank of each root among the roots; reuse `count` for the table.
  int32_t next = 0;
  for (int32_t i = 0; i < c; ++i) {
    if (s.core[i] && s.root[i] == i) s.count[i] = next++;
  }
  for (int32_t i = 0; i < c; ++i) {
    const int32_t r = s.core[i] ? s.root[i] : s.border[i];
    if (r != kNone) labels[i] = s.count[r];
  }
}

}  // namespace

template <typename T>
void dbscan_labels_cpu(const T* dist, const int64_t* counts, const T* eps,
                       const int64_t* min_samples, int64_t* labels, int64_t B, int64_t n) {
  if (n >= kNone) throw std::invalid_argument("dist has too many points per image");
  check_counts(counts, B, n, "counts");
  check_dbscan_parameters(eps, "eps", min_samples, B);
  const int workers = worker_count(B);
  std::vector<Scratch> scratch(workers);
  parallel_for_items(B, workers, [&](int w, int64_t b) {
    label_image(dist + b * n * n, n, static_cast<int32_t>(counts[b]), eps[b], min_samples[b],
                labels + b * n, scratch[w]);
  });
}

template void dbscan_labels_cpu<float>(const float*, const int64_t*, const float*, const int64_t*, int64_t*, int64_t, int64_t);
template void dbscan_labels_cpu<double>(const double*, const int64_t*, const double*, const int64_t*, int64_t*, int64_t, int64_t);

}  // namespace cfcam
