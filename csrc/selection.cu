// Batched exact selection on CUDA: a radix select over the order-preserving bit pattern of
// the values (8-bit digits, most significant first), one block per (image, rank). Each pass
// histograms the values that share the digits chosen so far (shared-memory atomics); once
// few enough remain they are gathered into shared memory and the last passes run there.
// No sort, no global scratch, no host synchronisation.
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda_common.cuh"
#include "ops_cuda.h"

namespace cfcam {
namespace {

constexpr int kThreads = 1024;
constexpr int kBins = 256;
constexpr int kGather = 4096;  // keys kept in shared memory for the last passes
constexpr int kUnroll = 4;

// Keys whose unsigned order is the numeric order: NaN last, -0 equal to +0.
__device__ __forceinline__ uint32_t ordered_key(float v) {
  if (v != v) return 0xffffffffu;
  if (v == 0.0f) v = 0.0f;
  const uint32_t u = __float_as_uint(v);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__device__ __forceinline__ float key_value(uint32_t k) {
  return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}
__device__ __forceinline__ unsigned long long ordered_key(double v) {
  if (v != v) return ~0ull;
  if (v == 0.0) v = 0.0;
  const auto u = static_cast<unsigned long long>(__double_as_longlong(v));
  return (u >> 63) ? ~u : (u | (1ull << 63));
}
__device__ __forceinline__ double key_value(unsigned long long k) {
  return __longlong_as_double(static_cast<long long>((k >> 63) ? (k & ~(1ull << 63)) : ~k));
}

template <typename T>
using KeyOf = decltype(ordered_key(T{}));

// Calls f(value) for every value of one image: the upper triangle i < j < c of its row-major
// n x n matrix, one row segment per warp.
template <typename T, typename F>
__device__ __forceinline__ void block_for_each(const T* __restrict__ base, int64_t n, int64_t c, F&& f) {
  const int warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  for (int64_t s = warp; s + 1 < c; s += warps) {
    warp_for_each<kUnroll>(base + s * n + s + 1, c - s - 1, [&](int64_t, T v) { f(v); });
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
radix_select_kernel(const T* __restrict__ data, int64_t n, const int64_t* __restrict__ counts,
                    const int64_t* __restrict__ ranks, int64_t K, T* __restrict__ out) {
  using Key = KeyOf<T>;
  constexpr int kBits = 8 * sizeof(Key);
  __shared__ unsigned int hist[kBins];
  __shared__ Key gathered[kGather];
  __shared__ unsigned int n_gathered;
  __shared__ Key chosen_prefix;
  __shared__ unsigned long long chosen_rank, chosen_size;

  const int64_t b = blockIdx.x / K;
  const int64_t c = clamp_count(counts[b], n);
  const int64_t total = c * (c - 1) / 2;
  const int64_t requested = ranks[blockIdx.x];
  if (requested < 0 || requested >= total) {
    if (threadIdx.x == 0) out[blockIdx.x] = key_value(static_cast<Key>(~Key(0)));  // NaN
    return;
  }
  const T* base = data + b * n * n;
  auto rank = static_cast<unsigned long long>(requested);
  Key prefix = 0, mask = 0;
  bool in_shared = false;
  unsigned int kept = 0;

  for (int shift = kBits - 8; shift >= 0; shift -= 8) {
    for (int i = threadIdx.x; i < kBins; i += blockDim.x) hist[i] = 0;
    __syncthreads();
    auto count = [&](Key key) {
      if ((key & mask) == prefix) atomicAdd(&hist[(key >> shift) & 0xff], 1u);
    };
    if (in_shared) {
      for (unsigned int i = threadIdx.x; i < kept; i += blockDim.x) count(gathered[i]);
    } else {
      block_for_each(base, n, c, [&](T v) { count(ordered_key(v)); });
    }
    __syncthreads();
    if (threadIdx.x < 32) {  // warp 0 finds the bin holding `rank`: 8 bins per lane
      const int lane = threadIdx.x;
      unsigned long long own = 0;
      for (int d = 0; d < 8; ++d) own += hist[lane * 8 + d];
      unsigned long long inclusive = own;
      for (int delta = 1; delta < 32; delta <<= 1) {
        const unsigned long long up = __shfl_up_sync(0xffffffffu, inclusive, delta);
        if (lane >= delta) inclusive += up;
      }
      const unsigned int ballot = __ballot_sync(0xffffffffu, rank < inclusive);
      if (lane == __ffs(ballot) - 1) {
        unsigned long long before = inclusive - own;
        int d = 0;
        while (rank >= before + hist[lane * 8 + d]) before += hist[lane * 8 + d++];
        chosen_prefix = prefix | (static_cast<Key>(lane * 8 + d) << shift);
        chosen_rank = rank - before;
        chosen_size = hist[lane * 8 + d];
      }
    }
    __syncthreads();
    prefix = chosen_prefix;
    rank = chosen_rank;
    mask |= static_cast<Key>(0xff) << shift;
    if (!in_shared && shift > 0 && chosen_size <= kGather) {
      if (threadIdx.x == 0) n_gathered = 0;
      __syncthreads();
      block_for_each(base, n, c, [&](T v) {
        const Key key = ordered_key(v);
        if ((key & mask) == prefix) gathered[atomicAdd(&n_gathered, 1u)] = key;
      });
      __syncthreads();
      kept = n_gathered;
      in_shared = true;
    }
    __syncthreads();  // hist and the chosen_* values are rewritten by the next pass
  }
  if (threadIdx.x == 0) out[blockIdx.x] = key_value(prefix);
}

template <typename T>
void launch(const T* data, int64_t n, const int64_t* counts, const int64_t* ranks, T* out, int64_t B,
            int64_t K, int device, void* stream) {
  if (B * K == 0) return;
  DeviceGuard guard(device);
  radix_select_kernel<T><<<static_cast<unsigned int>(B * K), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      data, n, counts, ranks, K, out);
  check_cuda(cudaGetLastError(), "radix select launch");
}

}  // namespace

void pair_ranks_cuda(const void* dist, const int64_t* counts, const int64_t* ranks, void* out,
                     int64_t B, int64_t n, int64_t K, bool is_double, int device, void* stream) {
  if (is_double) {
    launch(static_cast<const double*>(dist), n, counts, ranks, static_cast<double*>(out), B, K, device, stream);
  } else {
    launch(static_cast<const float*>(dist), n, counts, ranks, static_cast<float*>(out), B, K, device, stream);
  }
}

}  // namespace cfcam
