// Batched DBSCAN labelling on CUDA with scikit-learn's semantics (see dbscan_cpu.cpp), in
// seven kernels on one stream, no host synchronisation. Only the upper triangle of each
// distance matrix is read, one warp per row. Scratch `work` ([B, 2, n] int32):
//   work0: neighbour count -> parent (core points; -1 = not core) -> root (smallest index)
//   work1: smallest core-neighbour root of a border point (INT_MAX = none) -> cluster number
//          of each root (written at the root's own slot, which no border point uses).
// Components are found with a lock-free union-find: a root only ever links under a smaller
// root (atomicCAS), so every root is the smallest core index of its component.
#include <cub/block/block_scan.cuh>
#include <cuda_runtime.h>

#include <climits>
#include <cstdint>

#include "cuda_common.cuh"
#include "ops_cuda.h"

namespace cfcam {
namespace {

constexpr int kThreads = 256;
constexpr int kUnroll = 4;
constexpr int kNone = INT_MAX;

struct Image {
  int64_t b, c;
  int32_t* count_or_parent;  // work0 of image b
  int32_t* border;           // work1 of image b
};

__device__ __forceinline__ Image image_of(int64_t b, int64_t n, const int64_t* counts, int32_t* work) {
  return Image{b, clamp_count(counts[b], n), work + (2 * b) * n, work + (2 * b + 1) * n};
}

// Warps of the grid's y-slice of image blockIdx.x, each taking rows i in turn.
template <typename F>
__device__ __forceinline__ void for_each_row(int64_t c, F&& f) {
  const int64_t warps = static_cast<int64_t>(gridDim.y) * (blockDim.x >> 5);
  for (int64_t i = blockIdx.y * (blockDim.x >> 5) + (threadIdx.x >> 5); i + 1 < c; i += warps) f(i);
}

__device__ __forceinline__ int warp_sum(int v) {
  for (int delta = 16; delta > 0; delta >>= 1) v += __shfl_xor_sync(0xffffffffu, v, delta);
  return v;
}
__device__ __forceinline__ int warp_min(int v) {
  for (int delta = 16; delta > 0; delta >>= 1) v = min(v, __shfl_xor_sync(0xffffffffu, v, delta));
  return v;
}

__global__ void init_kernel(const int64_t* __restrict__ counts, int32_t* work, int64_t B, int64_t n) {
  const int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (t >= B * n) return;
  const int64_t b = t / n, i = t % n;
  work[2 * b * n + i] = 1;  // every point is its own neighbour
  work[(2 * b + 1) * n + i] = kNone;
}

template <typename T>
__global__ void count_kernel(const T* __restrict__ dist, const int64_t* __restrict__ counts,
                             const T* __restrict__ eps, int32_t* work, int64_t n) {
  const Image im = image_of(blockIdx.x, n, counts, work);
  const T e = eps[im.b];
  const T* d = dist + im.b * n * n;
  for_each_row(im.c, [&](int64_t i) {
    int own = 0;
    warp_for_each<kUnroll>(d + i * n + i + 1, im.c - i - 1, [&](int64_t j, T v) {
      if (v <= e) {
        ++own;
        atomicAdd(&im.count_or_parent[i + 1 + j], 1);
      }
    });
    own = warp_sum(own);
    if ((threadIdx.x & 31) == 0 && own) atomicAdd(&im.count_or_parent[i], own);
  });
}

__global__ void core_kernel(const int64_t* __restrict__ counts, const int64_t* __restrict__ min_samples,
                            int32_t* work, int64_t B, int64_t n) {
  const int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (t >= B * n) return;
  const int64_t b = t / n, i = t % n;
  int32_t* slot = work + 2 * b * n + i;
  *slot = (i < clamp_count(counts[b], n) && *slot >= min_samples[b]) ? static_cast<int32_t>(i) : -1;
}

__device__ __forceinline__ int32_t find_root(int32_t* parent, int32_t x) {
  int32_t p = __ldcg(parent + x);
  while (p != x) {
    const int32_t grand = __ldcg(parent + p);
    if (grand != p) parent[x] = grand;  // path halving; any ancestor is a valid parent
    x = p;
    p = grand;
  }
  return x;
}

__device__ void unite(int32_t* parent, int32_t a, int32_t b) {
  while (true) {
    a = find_root(parent, a);
    b = find_root(parent, b);
    if (a == b) return;
    if (a > b) {
      const int32_t t = a;
      a = b;
      b = t;
    }
    const int32_t seen = atomicCAS(parent + b, b, a);  // link the larger root under the smaller
    if (seen == b) return;
    b = seen;
  }
}

template <typename T>
__global__ void union_kernel(const T* __restrict__ dist, const int64_t* __restrict__ counts,
                             const T* __restrict__ eps, int32_t* work, int64_t n) {
  const Image im = image_of(blockIdx.x, n, counts, work);
  const T e = eps[im.b];
  const T* d = dist + im.b * n * n;
  int32_t* parent = im.count_or_parent;
  for_each_row(im.c, [&](int64_t i) {
    if (__ldcg(parent + i) < 0) return;  // not core (a core point's parent stays >= 0)
    warp_for_each<kUnroll>(d + i * n + i + 1, im.c - i - 1, [&](int64_t j, T v) {
      const int32_t other = static_cast<int32_t>(i + 1 + j);
      if (v <= e && __ldcg(parent + other) >= 0) unite(parent, static_cast<int32_t>(i), other);
    });
  });
}

__global__ void flatten_kernel(const int64_t* __restrict__ counts, int32_t* work, int64_t B, int64_t n) {
  const int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (t >= B * n) return;
  const int64_t b = t / n, i = t % n;
  int32_t* parent = work + 2 * b * n;
  if (parent[i] >= 0) parent[i] = find_root(parent, static_cast<int32_t>(i));
}

template <typename T>
__global__ void border_kernel(const T* __restrict__ dist, const int64_t* __restrict__ counts,
                              const T* __restrict__ eps, int32_t* work, int64_t n) {
  const Image im = image_of(blockIdx.x, n, counts, work);
  const T e = eps[im.b];
  const T* d = dist + im.b * n * n;
  const int32_t* root = im.count_or_parent;
  for_each_row(im.c, [&](int64_t i) {
    const int32_t own_root = root[i];
    int best = kNone;
    warp_for_each<kUnroll>(d + i * n + i + 1, im.c - i - 1, [&](int64_t j, T v) {
      if (!(v <= e)) return;
      const int32_t other = root[i + 1 + j];
      if (own_root >= 0 && other < 0) atomicMin(&im.border[i + 1 + j], own_root);
      if (own_root < 0 && other >= 0) best = min(best, other);
    });
    best = warp_min(best);
    if ((threadIdx.x & 31) == 0 && best != kNone) atomicMin(&im.border[i], best);
  });
}

// One block per image: numbers the roots in index order, then writes every label.
__global__ void label_kernel(const int64_t* __restrict__ counts, int32_t* work,
                             int64_t* __restrict__ labels, int64_t n) {
  using Scan = cub::BlockScan<int, kThreads>;
  __shared__ typename Scan::TempStorage scan_storage;
  __shared__ int carried;
  const Image im = image_of(blockIdx.x, n, counts, work);
  const int32_t* root = im.count_or_parent;
  if (threadIdx.x == 0) carried = 0;
  __syncthreads();
  for (int64_t start = 0; start < im.c; start += kThreads) {
    const int64_t i = start + threadIdx.x;
    const int is_root = (i < im.c && root[i] == i) ? 1 : 0;
    int number, roots;
    Scan(scan_storage).ExclusiveSum(is_root, number, roots);
    if (is_root) im.border[i] = carried + number;
    __syncthreads();
    if (threadIdx.x == 0) carried += roots;
    __syncthreads();
  }
  for (int64_t i = threadIdx.x; i < n; i += kThreads) {
    int64_t label = -1;
    if (i < im.c) {
      const int32_t r = root[i] >= 0 ? root[i] : im.border[i];
      if (r != kNone) label = im.border[r];
    }
    labels[im.b * n + i] = label;
  }
}

template <typename T>
void run(const T* dist, const int64_t* counts, const T* eps, const int64_t* min_samples,
         int64_t* labels, int32_t* work, int64_t B, int64_t n, int device, void* stream_handle) {
  if (B * n == 0) return;
  if (n >= INT_MAX) throw std::runtime_error("dist has too many points per image");
  DeviceGuard guard(device);
  auto stream = static_cast<cudaStream_t>(stream_handle);
  const auto elementwise = static_cast<unsigned int>((B * n + kThreads - 1) / kThreads);
  // Enough row slices per image to fill the GPU at small batches; rows are handed out warp-wise.
  const int64_t warps_per_block = kThreads / 32;
  int64_t slices = (n + warps_per_block - 1) / warps_per_block;
  const int64_t wanted = (264 + B - 1) / B;
  slices = slices < wanted ? slices : wanted;
  const dim3 rows(static_cast<unsigned int>(B), static_cast<unsigned int>(slices < 1 ? 1 : slices));

  init_kernel<<<elementwise, kThreads, 0, stream>>>(counts, work, B, n);
  count_kernel<T><<<rows, kThreads, 0, stream>>>(dist, counts, eps, work, n);
  core_kernel<<<elementwise, kThreads, 0, stream>>>(counts, min_samples, work, B, n);
  union_kernel<T><<<rows, kThreads, 0, stream>>>(dist, counts, eps, work, n);
  flatten_kernel<<<elementwise, kThreads, 0, stream>>>(counts, work, B, n);
  border_kernel<T><<<rows, kThreads, 0, stream>>>(dist, counts, eps, work, n);
  label_kernel<<<static_cast<unsigned int>(B), kThreads, 0, stream>>>(counts, work, labels, n);
  check_cuda(cudaGetLastError(), "DBSCAN launch");
}

}  // namespace

void dbscan_labels_cuda(const void* dist, const int64_t* counts, const void* eps,
                        const int64_t* min_samples, int64_t* labels, int32_t* work, int64_t B,
                        int64_t n, bool is_double, int device, void* stream) {
  if (is_double) {
    run(static_cast<const double*>(dist), counts, static_cast<const double*>(eps), min_samples,
        labels, work, B, n, device, stream);
  } else {
    run(static_cast<const float*>(dist), counts, static_cast<const float*>(eps), min_samples,
        labels, work, B, n, device, stream);
  }
}

}  // namespace cfcam
