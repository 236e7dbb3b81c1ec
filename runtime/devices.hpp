// Which backends this build has and which GPUs this machine shows. Works in every build: without
// the CUDA backend, or without a driver or a GPU, the GPU list is empty and the reason says why.
//
//   for (const GpuInfo& g : visible_gpus()) ...;   // name, memory, compute capability
//   if (visible_gpus().empty()) fail(gpu_unavailable_reason());
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace remat::rt {

struct BackendInfo {
    std::string name;  // "cpu", "cuda"
    bool compiled = false;
};
struct GpuInfo {
    std::string name;                // "NVIDIA H100 80GB HBM3"
    std::uint64_t memory_bytes = 0;  // total device memory
    int major = 0, minor = 0;        // compute capability
    std::string driver;              // "13.0" (the driver's CUDA version)
};

std::vector<BackendInfo> backends();
std::vector<GpuInfo> visible_gpus();
// One clause for an error line: "this build has no CUDA backend (nvcc was not found)", "no
// NVIDIA driver is loaded", "no GPU is visible".
std::string gpu_unavailable_reason();

}  // namespace remat::rt
