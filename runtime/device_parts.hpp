// What a device contributes to a run: its backend, the collectives between the ranks it runs,
// how many ranks it runs for real, and what it can say about its memory beyond the allocator's
// count. The CPU runs all W ranks as threads; the CUDA backend runs rank 0 of W on one GPU with
// emulated collectives (runtime/cuda/cuda_backend.hpp).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>

#include "runtime/backend.hpp"
#include "runtime/collectives.hpp"

namespace remat::rt {

struct PoolStats {
    std::uint64_t used_high_bytes = 0;      // the pool's own high-water mark of live allocations
    std::uint64_t reserved_high_bytes = 0;  // what it held from the device
    // Device memory in use outside the pool at the end of the run: the context, the modules
    // loaded lazily by the steps' first launches, cuBLAS's workspace.
    std::uint64_t overhead_after_bytes = 0;
};

template <class T>
struct DeviceParts {
    std::shared_ptr<const Backend<T>> backend;
    std::unique_ptr<Collectives<T>> collectives;
    std::size_t ranks_run = 1;              // ranks executed here (0 .. ranks_run-1)
    std::function<PoolStats()> pool_stats;  // empty on the CPU
    std::uint64_t overhead_bytes = 0;  // device memory in use before the pool's first allocation
};

// runtime/cpu/cpu_parts.cpp: all W ranks, as threads.
template <class T>
DeviceParts<T> cpu_parts(std::size_t world);
// Throws InputError when this build has no CUDA backend or no GPU is visible.
template <class T>
DeviceParts<T> cuda_parts(std::size_t world);

}  // namespace remat::rt
