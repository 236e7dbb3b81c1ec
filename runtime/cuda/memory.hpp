// Device memory for the CUDA backend: a stream-ordered pool of its own (cudaMemPoolCreate), so
// that its high-water marks are the run's alone. Allocations are cudaMallocFromPoolAsync and
// cudaFreeAsync on the backend's stream; the pool keeps freed memory (release threshold: all),
// as PyTorch's caching allocator does.
//
//   CudaPool pool(device, stream);
//   CountingAllocator a(cap, pool);           // counts requested bytes, enforces the cap
//   pool.used_high_bytes();                   // cudaMemPoolAttrUsedMemHigh: the measured peak
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "runtime/allocator.hpp"

namespace remat::rt {

class CudaPool final : public MemorySource {
  public:
    CudaPool(int device, cudaStream_t stream);
    ~CudaPool() override;
    CudaPool(const CudaPool&) = delete;
    CudaPool& operator=(const CudaPool&) = delete;

    void* take(std::size_t bytes) override;
    void give(void* p, std::size_t bytes) noexcept override;
    void zero(void* p, std::size_t bytes) override;

    std::uint64_t used_high_bytes() const;  // bytes of live allocations, high-water mark
    std::uint64_t reserved_high_bytes()
        const;                             // bytes the pool held from the device, high-water mark
    std::uint64_t reserved_bytes() const;  // bytes the pool holds now

  private:
    cudaMemPool_t pool_{};
    cudaStream_t stream_{};
};

}  // namespace remat::rt
