// pybind11 module _native_cuda: the CUDA ops on raw device addresses, a device index and a
// cudaStream_t handle (Python integers). The Python side (cfcam_fast/_native.py) checks
// dtype, device, shape and contiguity first. Launches are asynchronous on that stream.
#include <pybind11/pybind11.h>

#include <cstdint>

#include "address.h"
#include "ops_cuda.h"

namespace py = pybind11;
using cfcam::at;

PYBIND11_MODULE(_native_cuda, m) {
  m.doc() = "cfcam_fast CUDA ops: batched radix select and DBSCAN labelling on raw pointers";
  m.def(
      "pair_ranks",
      [](uintptr_t dist, uintptr_t counts, uintptr_t ranks, uintptr_t out, int64_t B, int64_t n,
         int64_t K, bool is_double, int device, uintptr_t stream) {
        cfcam::pair_ranks_cuda(at<const void>(dist), at<const int64_t>(counts),
                               at<const int64_t>(ranks), at<void>(out), B, n, K, is_double, device,
                               at<void>(stream));
      },
      py::arg("dist"), py::arg("counts"), py::arg("ranks"), py::arg("out"), py::arg("B"),
      py::arg("n"), py::arg("K"), py::arg("is_double"), py::arg("device"), py::arg("stream"));
  m.def(
      "dbscan_labels",
      [](uintptr_t dist, uintptr_t counts, uintptr_t eps, uintptr_t min_samples, uintptr_t labels,
         uintptr_t work, int64_t B, int64_t n, bool is_double, int device, uintptr_t stream) {
        cfcam::dbscan_labels_cuda(at<const void>(dist), at<const int64_t>(counts),
                                  at<const void>(eps), at<const int64_t>(min_samples),
                                  at<int64_t>(labels), at<int32_t>(work), B, n, is_double, device,
                                  at<void>(stream));
      },
      py::arg("dist"), py::arg("counts"), py::arg("eps"), py::arg("min_samples"), py::arg("labels"),
      py::arg("work"), py::arg("B"), py::arg("n"), py::arg("is_double"), py::arg("device"),
      py::arg("stream"));
}
