// The CUDA backend: Backend<T> over the CUDA launchers (runtime/cuda/kernels.cuh), one stream,
// one cuBLAS handle, and its own stream-ordered memory pool. The cuBLAS workspace and an 8-byte
// loss accumulator are allocated outside the pool (cudaMalloc at start-up): they belong to the
// reserve, like the CUDA context, not to what the pool measures.
//
//   auto b = make_cuda_backend<bf16>(0);       // device 0; throws InputError without a GPU
//   b->pool().used_high_bytes();
#pragma once
#include <cuda_runtime.h>

#include <memory>

#include "runtime/backend.hpp"
#include "runtime/cuda/memory.hpp"

namespace remat::rt {

template <class T>
class CudaBackendBase : public Backend<T> {
  public:
    virtual cudaStream_t stream() const = 0;
    virtual CudaPool& pool() const = 0;
};

template <class T>
std::shared_ptr<const CudaBackendBase<T>> make_cuda_backend(int device);

// Collectives for rank 0 of W on one GPU: each is replaced by a local copy of exactly the size
// the real collective produces (all-gather: the unit, from this rank's shard repeated;
// reduce-scatter: this rank's slice), so the memory and the bytes moved are those of W-way FSDP.
// The values are not a real W-rank run's; the loss sum is this rank's times W.
template <class T>
class Collectives;
template <class T>
std::unique_ptr<Collectives<T>> make_emulated_collectives(std::size_t world, cudaStream_t stream);

}  // namespace remat::rt
