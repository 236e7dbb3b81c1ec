#include "runtime/cuda/memory.hpp"

#include <limits>
#include <new>

#include "runtime/cuda/cuda_check.hpp"

namespace remat::rt {

CudaPool::CudaPool(int device, cudaStream_t stream) : stream_(stream) {
    cudaMemPoolProps props{};
    props.allocType = cudaMemAllocationTypePinned;
    props.handleTypes = cudaMemHandleTypeNone;
    props.location.type = cudaMemLocationTypeDevice;
    props.location.id = device;
    CUDA_CHECK(cudaMemPoolCreate(&pool_, &props));
    std::uint64_t keep_all = std::numeric_limits<std::uint64_t>::max();
    CUDA_CHECK(cudaMemPoolSetAttribute(pool_, cudaMemPoolAttrReleaseThreshold, &keep_all));
}

CudaPool::~CudaPool() {
    cudaStreamSynchronize(stream_);
    cudaMemPoolDestroy(pool_);
}

void* CudaPool::take(std::size_t bytes) {
    void* p = nullptr;
    const cudaError_t e = cudaMallocFromPoolAsync(&p, bytes, pool_, stream_);
    if (e == cudaErrorMemoryAllocation) {
        cudaGetLastError();  // not sticky: the run stops with an out-of-memory report
        throw std::bad_alloc();
    }
    CUDA_CHECK(e);
    return p;
}

void CudaPool::give(void* p, std::size_t) noexcept { cudaFreeAsync(p, stream_); }

void CudaPool::zero(void* p, std::size_t bytes) {
    CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, stream_));
}

std::uint64_t CudaPool::used_high_bytes() const {
    std::uint64_t v = 0;
    CUDA_CHECK(cudaMemPoolGetAttribute(pool_, cudaMemPoolAttrUsedMemHigh, &v));
    return v;
}

std::uint64_t CudaPool::reserved_bytes() const {
    std::uint64_t v = 0;
    CUDA_CHECK(cudaMemPoolGetAttribute(pool_, cudaMemPoolAttrReservedMemCurrent, &v));
    return v;
}

std::uint64_t CudaPool::reserved_high_bytes() const {
    std::uint64_t v = 0;
    CUDA_CHECK(cudaMemPoolGetAttribute(pool_, cudaMemPoolAttrReservedMemHigh, &v));
    return v;
}

}  // namespace remat::rt
