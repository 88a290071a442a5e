// Shared by the .cu files: device/stream guard and error checks, warp-wise row traversal.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

namespace cfcam {

inline void check_cuda(cudaError_t status, const char* what) {
  if (status != cudaSuccess) {
    throw std::runtime_error(std::string("cfcam_fast native CUDA op, ") + what + ": " +
                             cudaGetErrorString(status));
  }
}

// Makes `device` current for the lifetime of the guard.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    check_cuda(cudaGetDevice(&previous_), "cudaGetDevice");
    if (device != previous_) check_cuda(cudaSetDevice(device), "cudaSetDevice");
  }
  ~DeviceGuard() { cudaSetDevice(previous_); }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
};

__device__ __forceinline__ int64_t clamp_count(int64_t count, int64_t limit) {
  return count < 0 ? 0 : (count > limit ? limit : count);
}

// Calls f(j, value) for j in [0, len) of p, by the 32 lanes of one warp, with `kUnroll`
// independent loads in flight per lane.
template <int kUnroll, typename T, typename F>
__device__ __forceinline__ void warp_for_each(const T* __restrict__ p, int64_t len, F&& f) {
  const int lane = threadIdx.x & 31;
  for (int64_t j0 = lane; j0 < len; j0 += 32 * kUnroll) {
    T v[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t j = j0 + 32 * u;
      v[u] = j < len ? p[j] : T(0);
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t j = j0 + 32 * u;
      if (j < len) f(j, v[u]);
    }
  }
}

}  // namespace cfcam
