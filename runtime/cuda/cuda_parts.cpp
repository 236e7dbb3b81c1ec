// The CUDA device's part of a run: its backend on GPU 0, emulated collectives for rank 0 of W,
// the pool's high-water marks, and the device memory that the context and libraries hold
// outside the pool (cudaMemGetInfo before the first allocation, and again at the end once the
// steps have loaded their modules), held against the prediction's reserve.
#include "runtime/cuda/cuda_backend.hpp"
#include "runtime/cuda/cuda_check.hpp"
#include "runtime/device_parts.hpp"

namespace remat::rt {

template <class T>
DeviceParts<T> cuda_parts(std::size_t world) {
    auto backend = make_cuda_backend<T>(0);  // throws InputError without a GPU
    std::size_t free_bytes = 0, total_bytes = 0;
    CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
    DeviceParts<T> p;
    p.overhead_bytes = total_bytes - free_bytes;
    p.collectives = make_emulated_collectives<T>(world, backend->stream());
    p.pool_stats = [b = backend.get()] {
        b->synchronize();
        std::size_t free_now = 0, total = 0;
        CUDA_CHECK(cudaMemGetInfo(&free_now, &total));
        const std::uint64_t used = total - free_now, pool = b->pool().reserved_bytes();
        return PoolStats{b->pool().used_high_bytes(), b->pool().reserved_high_bytes(),
                         used > pool ? used - pool : 0};
    };
    p.backend = std::move(backend);
    p.ranks_run = 1;
    return p;
}

template DeviceParts<float> cuda_parts<float>(std::size_t);
template DeviceParts<bf16> cuda_parts<bf16>(std::size_t);

}  // namespace remat::rt
