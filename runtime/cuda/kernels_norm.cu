// LayerNorm (GPT-2) and RMSNorm (Llama) on (N, H) rows, forward and backward, with the CPU
// kernels' semantics (runtime/cpu/kernels_norm.cpp): fp32 statistics saved per row (mean, rstd),
// eps fixed at 1e-5 (LayerNorm) and 1e-6 (RMSNorm), two-pass variance, and backwards that
// accumulate (+=) into dinp, dweight and dbias.
// Forwards and the dinp part of the backwards run one block per row with fp32 block reductions.
// The parameter gradients are column sums over the N rows, reduced inside one block per 32
// columns and added once into the (possibly bf16) gradient. Deliberately no workspace and no
// atomics: the runtime measures the memory it allocates, so nothing here allocates, and the
// column sums come out in a fixed order (deterministic). Not tuned: no vectorized loads, no
// caching of the row in shared memory.
#include <cuda_bf16.h>

#include <cassert>
#include <climits>
#include <type_traits>

#include "runtime/cuda/cuda_check.hpp"
#include "runtime/cuda/device.cuh"
#include "runtime/cuda/kernels.cuh"

namespace remat::rt::cuda {
namespace {

using namespace detail;

constexpr float layernorm_eps = 1e-5f;
constexpr float rmsnorm_eps = 1e-6f;

constexpr unsigned row_threads = 256;  // threads of a per-row block; a multiple of 32
constexpr unsigned column_tile = 32;   // columns of a parameter-gradient block, one per lane
constexpr unsigned row_lanes = 16;     // rows a parameter-gradient block walks side by side

// ---- kernels ----
// E is the device element type: float or __nv_bfloat16. Row kernels: block b handles row b.

template <class E>
__global__ void layernorm_forward_kernel(E* out, float* mean, float* rstd, const E* inp,
                                         const E* weight, const E* bias, std::size_t H) {
    const std::size_t row = blockIdx.x;
    const E* x = inp + row * H;
    const float inv_h = 1.0f / static_cast<float>(H);
    float sum = 0.0f;
    for (std::size_t i = threadIdx.x; i < H; i += blockDim.x) sum += ld(x[i]);
    const float m = block_sum(sum) * inv_h;
    // Two passes rather than E[x^2] - E[x]^2, which cancels badly for rows with a large mean.
    float var = 0.0f;
    for (std::size_t i = threadIdx.x; i < H; i += blockDim.x) {
        const float d = ld(x[i]) - m;
        var += d * d;
    }
    const float r = 1.0f / sqrtf(block_sum(var) * inv_h + layernorm_eps);
    E* o = out + row * H;
    for (std::size_t i = threadIdx.x; i < H; i += blockDim.x)
        o[i] = st<E>((ld(x[i]) - m) * r * ld(weight[i]) + ld(bias[i]));
    if (threadIdx.x == 0) {
        mean[row] = m;
        rstd[row] = r;
    }
}

template <class E>
__global__ void layernorm_backward_dinp_kernel(E* dinp, const E* dout, const E* inp,
                                               const E* weight, const float* mean,
                                               const float* rstd, std::size_t H) {
    const std::size_t row = blockIdx.x;
    const E* x = inp + row * H;
    const E* d = dout + row * H;
    const float m = mean[row];
    const float r = rstd[row];
    const float inv_h = 1.0f / static_cast<float>(H);
    float dnorm_sum = 0.0f;
    float dnorm_norm_sum = 0.0f;
    for (std::size_t i = threadIdx.x; i < H; i += blockDim.x) {
        const float dnorm = ld(d[i]) * ld(weight[i]);
        dnorm_sum += dnorm;
        dnorm_norm_sum += dnorm * (ld(x[i]) - m) * r;
    }
    const float dnorm_mean = block_sum(dnorm_sum) * inv_h;
    const float dnorm_norm_mean = block_sum(dnorm_norm_sum) * inv_h;
    E* dx = dinp + row * H;
    for (std::size_t i = threadIdx.x; i < H; i += blockDim.x) {
        const float norm = (ld(x[i]) - m) * r;
        const float dnorm = ld(d[i]) * ld(weight[i]);
        dx[i] = st<E>(ld(dx[i]) + (dnorm - dnorm_mean - norm * dnorm_norm_mean) * r);
    }
}

// Block (column_tile, row_lanes): lane x owns column blockIdx.x * column_tile + x, lane y sums
// rows y, y + row_lanes, ...; the row_lanes partial sums are then added in a fixed order and the
// total goes into the gradient once (one rounding per call for bf16, as on the CPU).
template <class E>
__global__ void layernorm_params_kernel(E* dweight, E* dbias, const E* dout, const E* inp,
                                        const float* mean, const float* rstd, std::size_t N,
                                        std::size_t H) {
    __shared__ float partial_w[row_lanes][column_tile];
    __shared__ float partial_b[row_lanes][column_tile];
    const std::size_t col = std::size_t{blockIdx.x} * column_tile + threadIdx.x;
    float sum_w = 0.0f;
    float sum_b = 0.0f;
    if (col < H) {
        for (std::size_t n = threadIdx.y; n < N; n += row_lanes) {
            const float d = ld(dout[n * H + col]);
            const float norm = (ld(inp[n * H + col]) - mean[n]) * rstd[n];
            sum_w += norm * d;
            sum_b += d;
        }
    }
    partial_w[threadIdx.y][threadIdx.x] = sum_w;
    partial_b[threadIdx.y][threadIdx.x] = sum_b;
    __syncthreads();
    if (threadIdx.y != 0 || col >= H) return;
    for (unsigned y = 1; y < row_lanes; ++y) {
        sum_w += partial_w[y][threadIdx.x];
        sum_b += partial_b[y][threadIdx.x];
    }
    dweight[col] = st<E>(ld(dweight[col]) + sum_w);
    dbias[col] = st<E>(ld(dbias[col]) + sum_b);
}

template <class E>
__global__ void rmsnorm_forward_kernel(E* out, float* rstd, const E* inp, const E* weight,
                                       std::size_t H) {
    const std::size_t row = blockIdx.x;
    const E* x = inp + row * H;
    const float inv_h = 1.0f / static_cast<float>(H);
    float sum_sq = 0.0f;
    for (std::size_t i = threadIdx.x; i < H; i += blockDim.x) sum_sq += ld(x[i]) * ld(x[i]);
    const float r = 1.0f / sqrtf(block_sum(sum_sq) * inv_h + rmsnorm_eps);
    E* o = out + row * H;
    for (std::size_t i = threadIdx.x; i < H; i += blockDim.x)
        o[i] = st<E>(ld(weight[i]) * (ld(x[i]) * r));
    if (threadIdx.x == 0) rstd[row] = r;
}

template <class E>
__global__ void rmsnorm_backward_dinp_kernel(E* dinp, const E* dout, const E* inp, const E* weight,
                                             const float* rstd, std::size_t H) {
    const std::size_t row = blockIdx.x;
    const E* x = inp + row * H;
    const E* d = dout + row * H;
    const float r = rstd[row];
    const float inv_h = 1.0f / static_cast<float>(H);
    // d(x * rstd)/dx = rstd * (I - norm norm^T / H), with norm = x * rstd.
    float dnorm_norm_sum = 0.0f;
    for (std::size_t i = threadIdx.x; i < H; i += blockDim.x)
        dnorm_norm_sum += ld(d[i]) * ld(weight[i]) * ld(x[i]) * r;
    const float dnorm_norm_mean = block_sum(dnorm_norm_sum) * inv_h;
    E* dx = dinp + row * H;
    for (std::size_t i = threadIdx.x; i < H; i += blockDim.x) {
        const float dnorm = ld(d[i]) * ld(weight[i]);
        dx[i] = st<E>(ld(dx[i]) + (dnorm - ld(x[i]) * r * dnorm_norm_mean) * r);
    }
}

// As layernorm_params_kernel, for dweight alone (norm = x * rstd).
template <class E>
__global__ void rmsnorm_params_kernel(E* dweight, const E* dout, const E* inp, const float* rstd,
                                      std::size_t N, std::size_t H) {
    __shared__ float partial_w[row_lanes][column_tile];
    const std::size_t col = std::size_t{blockIdx.x} * column_tile + threadIdx.x;
    float sum_w = 0.0f;
    if (col < H)
        for (std::size_t n = threadIdx.y; n < N; n += row_lanes)
            sum_w += ld(inp[n * H + col]) * rstd[n] * ld(dout[n * H + col]);
    partial_w[threadIdx.y][threadIdx.x] = sum_w;
    __syncthreads();
    if (threadIdx.y != 0 || col >= H) return;
    for (unsigned y = 1; y < row_lanes; ++y) sum_w += partial_w[y][threadIdx.x];
    dweight[col] = st<E>(ld(dweight[col]) + sum_w);
}

// ---- launch configuration ----

// One block per row: N is the grid, whose x dimension holds 2^31 - 1 blocks.
unsigned row_grid(std::size_t N) {
    assert(N <= static_cast<std::size_t>(INT_MAX) && "too many rows for one grid");
    return static_cast<unsigned>(N);
}

// Parameter gradients: one (column_tile, row_lanes) block per column_tile columns.
dim3 params_grid(std::size_t H) {
    return dim3(static_cast<unsigned>((H + column_tile - 1) / column_tile));
}
dim3 params_block() { return dim3(column_tile, row_lanes); }

}  // namespace

// ---- launchers ----

template <class T>
void layernorm_forward(T* out, float* mean, float* rstd, const T* inp, const T* weight,
                       const T* bias, std::size_t N, std::size_t H, cudaStream_t s) {
    if (N == 0 || H == 0) return;
    layernorm_forward_kernel<<<row_grid(N), row_threads, 0, s>>>(dev(out), mean, rstd, dev(inp),
                                                                 dev(weight), dev(bias), H);
    CUDA_CHECK(cudaGetLastError());
}

template <class T>
void layernorm_backward(T* dinp, T* dweight, T* dbias, const T* dout, const T* inp, const T* weight,
                        const float* mean, const float* rstd, std::size_t N, std::size_t H,
                        cudaStream_t s) {
    if (N == 0 || H == 0) return;
    layernorm_params_kernel<<<params_grid(H), params_block(), 0, s>>>(
        dev(dweight), dev(dbias), dev(dout), dev(inp), mean, rstd, N, H);
    CUDA_CHECK(cudaGetLastError());
    layernorm_backward_dinp_kernel<<<row_grid(N), row_threads, 0, s>>>(
        dev(dinp), dev(dout), dev(inp), dev(weight), mean, rstd, H);
    CUDA_CHECK(cudaGetLastError());
}

template <class T>
void rmsnorm_forward(T* out, float* rstd, const T* inp, const T* weight, std::size_t N,
                     std::size_t H, cudaStream_t s) {
    if (N == 0 || H == 0) return;
    rmsnorm_forward_kernel<<<row_grid(N), row_threads, 0, s>>>(dev(out), rstd, dev(inp),
                                                               dev(weight), H);
    CUDA_CHECK(cudaGetLastError());
}

template <class T>
void rmsnorm_backward(T* dinp, T* dweight, const T* dout, const T* inp, const T* weight,
                      const float* rstd, std::size_t N, std::size_t H, cudaStream_t s) {
    if (N == 0 || H == 0) return;
    rmsnorm_params_kernel<<<params_grid(H), params_block(), 0, s>>>(dev(dweight), dev(dout),
                                                                    dev(inp), rstd, N, H);
    CUDA_CHECK(cudaGetLastError());
    rmsnorm_backward_dinp_kernel<<<row_grid(N), row_threads, 0, s>>>(dev(dinp), dev(dout), dev(inp),
                                                                     dev(weight), rstd, H);
    CUDA_CHECK(cudaGetLastError());
}

#define REMAT_INSTANTIATE(T)                                                                    \
    template void layernorm_forward<T>(T*, float*, float*, const T*, const T*, const T*,        \
                                       std::size_t, std::size_t, cudaStream_t);                 \
    template void layernorm_backward<T>(T*, T*, T*, const T*, const T*, const T*, const float*, \
                                        const float*, std::size_t, std::size_t, cudaStream_t);  \
    template void rmsnorm_forward<T>(T*, float*, const T*, const T*, std::size_t, std::size_t,  \
                                     cudaStream_t);                                             \
    template void rmsnorm_backward<T>(T*, T*, const T*, const T*, const T*, const float*,       \
                                      std::size_t, std::size_t, cudaStream_t);
REMAT_INSTANTIATE(float)
REMAT_INSTANTIATE(bf16)
#undef REMAT_INSTANTIATE

}  // namespace remat::rt::cuda
