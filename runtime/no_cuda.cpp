// Builds without nvcc: the CUDA backend is absent, and says so.
#include "runtime/devices.hpp"

namespace remat::rt {

std::vector<BackendInfo> backends() { return {{"cpu", true}, {"cuda", false}}; }
std::vector<GpuInfo> visible_gpus() { return {}; }
std::string gpu_unavailable_reason() { return "this build has no CUDA backend (nvcc was not found at build time)"; }

}  // namespace remat::rt
