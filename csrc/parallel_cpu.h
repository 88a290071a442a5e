// Thread pool-free parallel loop over independent images (CPU ops).
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace cfcam {

// Calls body(worker, item) for item in [0, items), on at most hardware_concurrency threads.
// `worker` is in [0, workers) so the body can keep per-thread scratch buffers.
// The first exception thrown by a body is rethrown here after every thread has joined.
template <typename Body>
void parallel_for_items(int64_t items, int workers, Body&& body) {
  if (items <= 0) return;
  if (workers <= 1 || items == 1) {
    for (int64_t item = 0; item < items; ++item) body(0, item);
    return;
  }
  std::atomic<int64_t> next{0};
  std::exception_ptr error;
  std::mutex error_lock;
  auto run = [&](int worker) {
    try {
      for (int64_t item = next++; item < items; item = next++) body(worker, item);
    } catch (...) {
      std::lock_guard<std::mutex> guard(error_lock);
      if (!error) error = std::current_exception();
      next = items;
    }
  };
  std::vector<std::thread> threads;
  for (int w = 1; w < workers; ++w) threads.emplace_back(run, w);
  run(0);
  for (auto& t : threads) t.join();
  if (error) std::rethrow_exception(error);
}

// Number of threads to use for `items` independent images.
inline int worker_count(int64_t items) {
  const int64_t hw = std::max(1u, std::thread::hardware_concurrency());
  return static_cast<int>(std::max<int64_t>(1, std::min(hw, items)));
}

}  // namespace cfcam
