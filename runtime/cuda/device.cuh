// Device-side helpers every CUDA kernel file shares (private to runtime/cuda/*.cu): the storage
// type behind rt::bf16, fp32 load/store, grid-stride indices, warp and block reductions, the
// grid of an elementwise launch, and the row-major cuBLAS GEMM. One home for each, so the
// kernel files hold only their kernels and launchers.
#pragma once
#include <cublas_v2.h>
#include <cuda_bf16.h>

#include <algorithm>
#include <cassert>
#include <climits>
#include <cmath>
#include <cstddef>
#include <type_traits>

#include "runtime/cuda/cuda_check.hpp"
#include "runtime/numeric.hpp"

namespace remat::rt::cuda::detail {

static_assert(sizeof(bf16) == sizeof(__nv_bfloat16) && alignof(bf16) == alignof(__nv_bfloat16),
              "rt::bf16 must be bit-compatible with __nv_bfloat16");

// The device type behind a storage type, and how cuBLAS names it.
template <class T>
struct Gemm;
template <>
struct Gemm<float> {
    using device_t = float;
    static constexpr cudaDataType_t data_type = CUDA_R_32F;
    static constexpr cublasComputeType_t compute = CUBLAS_COMPUTE_32F_PEDANTIC;  // never TF32
};
template <>
struct Gemm<bf16> {
    using device_t = __nv_bfloat16;
    static constexpr cudaDataType_t data_type = CUDA_R_16BF;
    static constexpr cublasComputeType_t compute = CUBLAS_COMPUTE_32F;
};
template <class T>
using device_t = typename Gemm<T>::device_t;

// rt::bf16 (host storage) -> __nv_bfloat16 (device arithmetic type); float stays float.
template <class T>
device_t<T>* dev(T* p) {
    return reinterpret_cast<device_t<T>*>(p);
}
template <class T>
const device_t<T>* dev(const T* p) {
    return reinterpret_cast<const device_t<T>*>(p);
}

__device__ __forceinline__ float ld(float x) { return x; }
__device__ __forceinline__ float ld(__nv_bfloat16 x) { return __bfloat162float(x); }
// Round to nearest even, as rt::to_bf16 does.
template <class E>
__device__ __forceinline__ E st(float x) {
    if constexpr (std::is_same_v<E, __nv_bfloat16>)
        return __float2bfloat16_rn(x);
    else
        return x;
}

__device__ __forceinline__ std::size_t thread_index() {
    return std::size_t{blockIdx.x} * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ std::size_t thread_count() {
    return std::size_t{gridDim.x} * blockDim.x;
}

__device__ __forceinline__ float warp_sum(float v) {
    for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int offset = 16; offset > 0; offset /= 2)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
    return v;
}

// Sum (max) of v over the block, returned to every thread; blockDim.x a multiple of 32.
__device__ inline float block_sum(float v) {
    __shared__ float partial[32];
    const unsigned lane = threadIdx.x % 32;
    const unsigned warp = threadIdx.x / 32;
    v = warp_sum(v);
    __syncthreads();  // readers of an earlier call are done with `partial`
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    return warp_sum(lane < blockDim.x / 32 ? partial[lane] : 0.0f);
}
__device__ inline float block_max(float v) {
    __shared__ float partial[32];
    const unsigned lane = threadIdx.x % 32;
    const unsigned warp = threadIdx.x / 32;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    return warp_max(lane < blockDim.x / 32 ? partial[lane] : -INFINITY);
}

// Elementwise launches: 256 threads (a multiple of 32, as the block reductions need), a capped
// grid that the kernels' grid-stride loops cover.
constexpr unsigned block_threads = 256;
constexpr std::size_t max_blocks = 8192;
inline unsigned grid_for(std::size_t n) {
    return static_cast<unsigned>(std::min((n + block_threads - 1) / block_threads, max_blocks));
}

inline int blas_int(std::size_t n) {
    assert(n <= static_cast<std::size_t>(INT_MAX) && "GEMM dimension does not fit cuBLAS's int");
    return static_cast<int>(n);
}

// Row-major C(M, N) = alpha op(A) op(B) + beta C, as cpu::gemm. cuBLAS is column-major and a
// row-major matrix read column-major is its transpose, so this asks cuBLAS for
// C^T = op(B)^T op(A)^T: B comes first, and the roles of M and N swap.
template <class T>
void gemm(cublasHandle_t h, bool trans_a, bool trans_b, std::size_t M, std::size_t N, std::size_t K,
          float alpha, const T* A, std::size_t lda, const T* B, std::size_t ldb, float beta, T* C,
          std::size_t ldc) {
    CUBLAS_CHECK(cublasGemmEx(h, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N,
                              trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, blas_int(N), blas_int(M),
                              blas_int(K), &alpha, B, Gemm<T>::data_type, blas_int(ldb), A,
                              Gemm<T>::data_type, blas_int(lda), &beta, C, Gemm<T>::data_type,
                              blas_int(ldc), Gemm<T>::compute, CUBLAS_GEMM_DEFAULT));
}

}  // namespace remat::rt::cuda::detail
