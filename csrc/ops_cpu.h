// CPU ops on raw pointers: batched exact selection and batched DBSCAN labelling.
// Every function validates the values it reads (counts, ranks, eps, min_samples) and throws
// std::invalid_argument, which the bindings turn into Python's ValueError.
#pragma once

#include <cstdint>

namespace cfcam {

// out[b, k] = the ranks[b, k]-th smallest (0-based) of the upper-triangle values
// dist[b, i, j], i < j < counts[b], of the row-major [B, n, n] array `dist`.
template <typename T>
void pair_ranks_cpu(const T* dist, const int64_t* counts, const int64_t* ranks, T* out,
                    int64_t B, int64_t n, int64_t K);

// scikit-learn's DBSCAN labels of each image's first counts[b] points from the upper triangle
// of dist[b]; labels[b, i] = -1 for noise and for i >= counts[b].
template <typename T>
void dbscan_labels_cpu(const T* dist, const int64_t* counts, const T* eps,
                       const int64_t* min_samples, int64_t* labels, int64_t B, int64_t n);

// The same selection and labelling from float32 approximate squared distances `approx`
// ([B, n, n], an augmented float32 matrix product of the points rounded to float32) and the
// points themselves ([B, n, d] float64): every decision equals the one made on the exact
// float64 squared distances sum_k (x_ik - x_jk)^2, recomputed only for the pairs whose
// approx value lies within its error bound of the decision (csrc/certified_cpu.cpp).
// `out` holds exact squared distances; `threshold[b]` is a squared distance.
void certified_pair_ranks_cpu(const float* approx, const double* points, const int64_t* counts,
                              const int64_t* ranks, double* out, int64_t B, int64_t n, int64_t d,
                              int64_t K);
void certified_dbscan_labels_cpu(const float* approx, const double* points, const int64_t* counts,
                                 const double* threshold, const int64_t* min_samples, int64_t* labels,
                                 int64_t B, int64_t n, int64_t d);

}  // namespace cfcam
