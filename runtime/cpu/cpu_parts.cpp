// The CPU device's part of a run: its backend over host memory, and collectives between the W
// ranks that it runs for real, as threads of this process. It has no pool of its own to report:
// the counting allocator's peak is what is measured.
#include "runtime/device_parts.hpp"

namespace remat::rt {

template <class T>
DeviceParts<T> cpu_parts(std::size_t world) {
    DeviceParts<T> p;
    p.backend = make_cpu_backend<T>();
    p.collectives = std::make_unique<InProcessCollectives<T>>(world);
    p.ranks_run = world;
    return p;
}

template DeviceParts<float> cpu_parts<float>(std::size_t);
template DeviceParts<bf16> cpu_parts<bf16>(std::size_t);

}  // namespace remat::rt
