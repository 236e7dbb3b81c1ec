// Builds without nvcc: the CUDA backend is absent, and says so.
#include "runtime/devices.hpp"

namespace remat::rt {

std::vector<BackendInfo> backends() { return {{"cpu", true}, {"cuda", false}}; }
std::vector<GpuInfo> visible_gpus() { return {}; }
std::string gpu_unavailable_reason() {
    return "this build has no CUDA backend (nvcc was not found at build time)";
}

}  // namespace remat::rt

#include "planner/config/error.hpp"
#include "runtime/device_parts.hpp"

namespace remat::rt {

template <class T>
DeviceParts<T> cuda_parts(std::size_t) {
    throw InputError(named(Input::device) + " cuda: " + gpu_unavailable_reason() + "; use " +
                     named(Input::device) + " cpu");
}
template DeviceParts<float> cuda_parts<float>(std::size_t);
template DeviceParts<bf16> cuda_parts<bf16>(std::size_t);

}  // namespace remat::rt
