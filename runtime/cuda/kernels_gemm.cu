// torch.nn.Linear's forward and backward on the GPU through cuBLAS (cublasGemmEx), with the CPU
// kernels' semantics (runtime/cpu/kernels_gemm.cpp): out(N, O) = inp(N, I) w(O, I)^T + bias(O);
// the backward accumulates (+=) into dinp, dw and dbias.
//
// Precision: bf16 operands and outputs with fp32 accumulation (CUBLAS_COMPUTE_32F, reductions in
// fp32), so a bf16 output is rounded once, after bias and beta * C are added in fp32, as the
// CPU's fp32 staging does. fp32 runs CUBLAS_COMPUTE_32F_PEDANTIC, which never uses TF32 whatever
// the handle's math mode, so results match the CPU's sgemm up to summation order.
//
// Deliberately not here: no workspace (cuBLAS stages nothing for these calls; the handle's own
// workspace is part of the runtime's reserve, not of the measured pool), no cudaMalloc, no
// epilogue fusion (cublasLt) and no tuning of algorithms: CUBLAS_GEMM_DEFAULT stands.
#include <cuda_bf16.h>

#include <cassert>
#include <climits>
#include <cstdint>
#include <type_traits>

#include "runtime/cuda/cuda_check.hpp"
#include "runtime/cuda/device.cuh"
#include "runtime/cuda/kernels.cuh"

namespace remat::rt::cuda {
namespace {

using namespace detail;

// The handle may be shared: every call binds it to this stream, with alpha and beta on the host,
// and forbids split-K reductions in the output type (cuBLAS's default allows them for bf16 C),
// so a bf16 output is rounded once, from fp32, as on the CPU. Other math-mode bits stay.
void bind(cublasHandle_t h, cudaStream_t s) {
    CUBLAS_CHECK(cublasSetStream(h, s));
    CUBLAS_CHECK(cublasSetPointerMode(h, CUBLAS_POINTER_MODE_HOST));
    cublasMath_t mode;
    CUBLAS_CHECK(cublasGetMathMode(h, &mode));
    CUBLAS_CHECK(cublasSetMathMode(
        h, static_cast<cublasMath_t>(mode | CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION)));
}

constexpr int threads = 256;

unsigned blocks_for(std::size_t n) {
    const std::size_t b = (n + threads - 1) / threads;
    assert(b <= static_cast<std::size_t>(INT_MAX) && "grid too large");
    return static_cast<unsigned>(b);
}

// ---- kernels ----

// out(N, O) rows = bias(O): the GEMM then adds onto them with beta = 1.
template <class D>
__global__ void fill_rows_kernel(D* out, const D* bias, std::size_t N, std::size_t O) {
    const std::size_t idx = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (idx < N * O) out[idx] = bias[idx % O];
}

// dbias(O) += column sums of dout(N, O). A block owns 32 adjacent columns (coalesced reads);
// its colsum_rows thread rows stride down the N rows, and row 0 adds their partials in a fixed
// order: deterministic, one fp32 sum and one rounding into dbias per column.
constexpr int colsum_cols = 32;
constexpr int colsum_rows = 16;

template <class D>
__global__ void add_column_sums_kernel(D* dbias, const D* dout, std::size_t N, std::size_t O) {
    __shared__ float partial[colsum_rows][colsum_cols];
    const std::size_t col = static_cast<std::size_t>(blockIdx.x) * colsum_cols + threadIdx.x;
    float sum = 0.0f;
    if (col < O)
        for (std::size_t n = threadIdx.y; n < N; n += colsum_rows) sum += ld(dout[n * O + col]);
    partial[threadIdx.y][threadIdx.x] = sum;
    __syncthreads();
    if (threadIdx.y != 0 || col >= O) return;
    float total = 0.0f;
    for (int r = 0; r < colsum_rows; ++r) total += partial[r][threadIdx.x];
    dbias[col] = st<D>(ld(dbias[col]) + total);
}

}  // namespace

// ---- launchers ----

template <class T>
std::uint64_t linear_forward_workspace(std::size_t, std::size_t, std::size_t) {
    return 0;
}
template <class T>
std::uint64_t linear_backward_workspace(std::size_t, std::size_t, std::size_t) {
    return 0;
}

template <class T>
void linear_forward(T* out, const T* inp, const T* w, const T* bias, std::size_t N, std::size_t I,
                    std::size_t O, void* /*workspace*/, cublasHandle_t h, cudaStream_t s) {
    if (N == 0 || O == 0) return;
    if (bias) {
        fill_rows_kernel<<<blocks_for(N * O), threads, 0, s>>>(dev(out), dev(bias), N, O);
        CUDA_CHECK(cudaGetLastError());
    }
    if (I == 0) {  // an empty sum: out is the bias alone (cuBLAS rejects a leading dimension of 0)
        if (!bias) CUDA_CHECK(cudaMemsetAsync(out, 0, N * O * sizeof(T), s));
        return;
    }
    bind(h, s);
    gemm(h, false, true, N, O, I, 1.0f, inp, I, w, I, bias ? 1.0f : 0.0f, out, O);
}

template <class T>
void linear_backward(T* dinp, T* dw, T* dbias, const T* dout, const T* inp, const T* w,
                     std::size_t N, std::size_t I, std::size_t O, void* /*workspace*/,
                     cublasHandle_t h, cudaStream_t s) {
    if (N == 0 || O == 0) return;  // dout is empty: nothing to add
    if (I > 0) {
        bind(h, s);
        gemm(h, false, false, N, I, O, 1.0f, dout, O, w, I, 1.0f, dinp, I);  // dinp += dout w
        gemm(h, true, false, O, I, N, 1.0f, dout, O, inp, I, 1.0f, dw, I);   // dw += dout^T inp
    }
    if (dbias) {
        const std::size_t n_blocks = (O + colsum_cols - 1) / colsum_cols;
        assert(n_blocks <= static_cast<std::size_t>(INT_MAX) && "grid too large");
        const dim3 grid(static_cast<unsigned>(n_blocks)), block(colsum_cols, colsum_rows);
        add_column_sums_kernel<<<grid, block, 0, s>>>(dev(dbias), dev(dout), N, O);
        CUDA_CHECK(cudaGetLastError());
    }
}

#define REMAT_INSTANTIATE(T)                                                                    \
    template std::uint64_t linear_forward_workspace<T>(std::size_t, std::size_t, std::size_t);  \
    template void linear_forward<T>(T*, const T*, const T*, const T*, std::size_t, std::size_t, \
                                    std::size_t, void*, cublasHandle_t, cudaStream_t);          \
    template std::uint64_t linear_backward_workspace<T>(std::size_t, std::size_t, std::size_t); \
    template void linear_backward<T>(T*, T*, T*, const T*, const T*, const T*, std::size_t,     \
                                     std::size_t, std::size_t, void*, cublasHandle_t,           \
                                     cudaStream_t);
REMAT_INSTANTIATE(float)
REMAT_INSTANTIATE(rt::bf16)
#undef REMAT_INSTANTIATE

}  // namespace remat::rt::cuda
