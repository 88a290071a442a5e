// pybind11 module _native_cpu: the CPU ops on raw addresses (Python integers). The Python
// side (cfcam_fast/_native.py) checks dtype, device, shape and contiguity first.
#include <pybind11/pybind11.h>

#include <cstdint>

#include "address.h"
#include "ops_cpu.h"

namespace py = pybind11;
using cfcam::at;

PYBIND11_MODULE(_native_cpu, m) {
  m.doc() = "cfcam_fast CPU ops: batched exact selection and DBSCAN labelling on raw pointers";
  m.def(
      "pair_ranks",
      [](uintptr_t dist, uintptr_t counts, uintptr_t ranks, uintptr_t out, int64_t B, int64_t n,
         int64_t K, bool is_double) {
        py::gil_scoped_release release;
        if (is_double) {
          cfcam::pair_ranks_cpu(at<const double>(dist), at<const int64_t>(counts),
                                at<const int64_t>(ranks), at<double>(out), B, n, K);
        } else {
          cfcam::pair_ranks_cpu(at<const float>(dist), at<const int64_t>(counts),
                                at<const int64_t>(ranks), at<float>(out), B, n, K);
        }
      },
      py::arg("dist"), py::arg("counts"), py::arg("ranks"), py::arg("out"), py::arg("B"),
      py::arg("n"), py::arg("K"), py::arg("is_double"));
  m.def(
      "dbscan_labels",
      [](uintptr_t dist, uintptr_t counts, uintptr_t eps, uintptr_t min_samples, uintptr_t labels,
         int64_t B, int64_t n, bool is_double) {
        py::gil_scoped_release release;
        if (is_double) {
          cfcam::dbscan_labels_cpu(at<const double>(dist), at<const int64_t>(counts),
                                   at<const double>(eps), at<const int64_t>(min_samples),
                                   at<int64_t>(labels), B, n);
        } else {
          cfcam::dbscan_labels_cpu(at<const float>(dist), at<const int64_t>(counts),
                                   at<const float>(eps), at<const int64_t>(min_samples),
                                   at<int64_t>(labels), B, n);
        }
      },
      py::arg("dist"), py::arg("counts"), py::arg("eps"), py::arg("min_samples"), py::arg("labels"),
      py::arg("B"), py::arg("n"), py::arg("is_double"));
  m.def(
      "certified_pair_ranks",
      [](uintptr_t approx, uintptr_t points, uintptr_t counts, uintptr_t ranks, uintptr_t out,
         int64_t B, int64_t n, int64_t d, int64_t K) {
        py::gil_scoped_release release;
        cfcam::certified_pair_ranks_cpu(at<const float>(approx), at<const double>(points),
                                        at<const int64_t>(counts), at<const int64_t>(ranks),
                                        at<double>(out), B, n, d, K);
      },
      py::arg("approx"), py::arg("points"), py::arg("counts"), py::arg("ranks"), py::arg("out"),
      py::arg("B"), py::arg("n"), py::arg("d"), py::arg("K"));
  m.def(
      "certified_dbscan_labels",
      [](uintptr_t approx, uintptr_t points, uintptr_t counts, uintptr_t threshold,
         uintptr_t min_samples, uintptr_t labels, int64_t B, int64_t n, int64_t d) {
        py::gil_scoped_release release;
        cfcam::certified_dbscan_labels_cpu(at<const float>(approx), at<const double>(points),
                                           at<const int64_t>(counts), at<const double>(threshold),
                                           at<const int64_t>(min_samples), at<int64_t>(labels), B, n, d);
      },
      py::arg("approx"), py::arg("points"), py::arg("counts"), py::arg("threshold"),
      py::arg("min_samples"), py::arg("labels"), py::arg("B"), py::arg("n"), py::arg("d"));
}
