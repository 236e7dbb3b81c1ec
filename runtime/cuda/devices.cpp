// Backends and visible GPUs in a build with the CUDA backend. Runtime API only: on a machine
// without a driver, cudaGetDeviceCount fails and the list is empty.
#include "runtime/devices.hpp"

#include <fmt/format.h>

#include "runtime/allocator.hpp"
#include "runtime/cuda/cuda_check.hpp"

namespace remat::rt {

void throw_cuda(const char* call, const char* what, const char* file, int line,
                bool out_of_memory) {
    if (out_of_memory) throw DeviceOutOfMemory(fmt::format("{} ({}:{})", call, file, line));
    throw CudaError(fmt::format("CUDA error: {} failed: {} ({}:{})", call, what, file, line));
}

std::vector<BackendInfo> backends() { return {{"cpu", true}, {"cuda", true}}; }

std::vector<GpuInfo> visible_gpus() {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();  // clear the sticky error of a missing driver
        return {};
    }
    int driver = 0;
    cudaDriverGetVersion(&driver);
    std::vector<GpuInfo> out;
    for (int d = 0; d < n; ++d) {
        cudaDeviceProp p{};
        if (cudaGetDeviceProperties(&p, d) != cudaSuccess) continue;
        out.push_back({p.name, p.totalGlobalMem, p.major, p.minor,
                       fmt::format("{}.{}", driver / 1000, (driver % 1000) / 10)});
    }
    return out;
}

std::string gpu_unavailable_reason() {
    int n = 0;
    const cudaError_t e = cudaGetDeviceCount(&n);
    if (e == cudaErrorInsufficientDriver || e == cudaErrorNoDevice) {
        cudaGetLastError();
        return e == cudaErrorNoDevice ? "no GPU is visible" : "no NVIDIA driver is loaded";
    }
    if (e != cudaSuccess) {
        cudaGetLastError();
        return fmt::format("the CUDA runtime cannot start ({})", cudaGetErrorString(e));
    }
    return n == 0 ? "no GPU is visible" : "";
}

}  // namespace remat::rt
