// One check family for CUDA runtime and cuBLAS calls (NVIDIA samples' habit): a failing call
// throws CudaError naming the call, the file and the line, or DeviceOutOfMemory
// (runtime/allocator.hpp) when the device had no memory for it, so that a run reports it as the
// out-of-memory line. Launches are checked with CUDA_CHECK(cudaGetLastError()) right after them.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace remat::rt {

struct CudaError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

[[noreturn]] void throw_cuda(const char* call, const char* what, const char* file, int line,
                             bool out_of_memory);

}  // namespace remat::rt

#define CUDA_CHECK(call)                                                                       \
    do {                                                                                       \
        const cudaError_t remat_err_ = (call);                                                 \
        if (remat_err_ != cudaSuccess)                                                         \
            ::remat::rt::throw_cuda(#call, cudaGetErrorString(remat_err_), __FILE__, __LINE__, \
                                    remat_err_ == cudaErrorMemoryAllocation);                  \
    } while (0)

#define CUBLAS_CHECK(call)                                                                       \
    do {                                                                                         \
        const cublasStatus_t remat_st_ = (call);                                                 \
        if (remat_st_ != CUBLAS_STATUS_SUCCESS)                                                  \
            ::remat::rt::throw_cuda(#call, cublasGetStatusString(remat_st_), __FILE__, __LINE__, \
                                    remat_st_ == CUBLAS_STATUS_ALLOC_FAILED);                    \
    } while (0)
