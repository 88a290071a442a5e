// Raw addresses handed over from Python (integers) as typed pointers, for the bindings.
#pragma once

#include <cstdint>

namespace cfcam {

template <typename T>
T* at(uintptr_t address) {
  return reinterpret_cast<T*>(address);
}

}  // namespace cfcam
