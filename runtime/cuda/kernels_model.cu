// The ends of the model on the GPU: token + position embedding, rotary position embedding
// (Llama, theta 10000, HF's rotate-half), and cross-entropy over the vocabulary, each forward and
// backward, with the CPU kernels' semantics (runtime/cpu/kernels_model.cpp and the rotary part of
// kernels_attention.cpp). Backwards accumulate (+=) into dwte, dwpe, dinp and dlogits.
// Deliberately not here: AdamW (kernels_elementwise.cu), ignore_index or label smoothing (targets
// are always valid ids; nothing checks them on the device), a fused classifier, any allocation.
// Nothing uses atomics, so every result is the same run to run:
//   - dwte: a token id may repeat anywhere in the batch. Each row is linked to the next row with
//     its id (workspace), and one thread per (first row of an id, column) walks the chain in row
//     order, rounding once per row as the CPU does, so dwte equals the CPU's bit for bit.
//   - dwpe is summed per position in fp32 and added once, as on the CPU.
//   - the loss: each row's lse is written, then one block sums lse - logit[target] over the rows
//     in a fixed order into the caller's device double.
#include <cuda_bf16.h>

#include <algorithm>
#include <cassert>
#include <climits>
#include <cmath>
#include <type_traits>

#include "runtime/cuda/cuda_check.hpp"
#include "runtime/cuda/device.cuh"
#include "runtime/cuda/kernels.cuh"

namespace remat::rt::cuda {
namespace {

using namespace detail;

constexpr double rotary_theta = 10000.0;

// ---- kernels ----
// E is the device element type: float or __nv_bfloat16.

// out(N, H) = wte[ids[n]] + (wpe ? wpe[n % S] : 0), grid-stride over N * H.
template <class E>
__global__ void embedding_forward_kernel(E* out, const std::int32_t* ids, const E* wte,
                                         const E* wpe, std::size_t N, std::size_t S,
                                         std::size_t H) {
    for (std::size_t idx = thread_index(); idx < N * H; idx += thread_count()) {
        const std::size_t n = idx / H;
        const std::size_t i = idx % H;
        const float tok = ld(wte[static_cast<std::size_t>(ids[n]) * H + i]);
        out[idx] = st<E>(tok + (wpe ? ld(wpe[(n % S) * H + i]) : 0.0f));
    }
}

// One thread per row n: next[n] = the next row with the same id (N if none). Every row starts as
// the first of its id; the next row is marked not first. Run after first[] is set to 1.
__global__ void link_occurrences_kernel(std::int32_t* next, std::int32_t* first,
                                        const std::int32_t* ids, std::size_t N) {
    for (std::size_t n = thread_index(); n < N; n += thread_count()) {
        std::size_t m = n + 1;
        while (m < N && ids[m] != ids[n]) ++m;
        next[n] = static_cast<std::int32_t>(m);
        if (m < N) first[m] = 0;
    }
}

__global__ void fill_kernel(std::int32_t* x, std::int32_t value, std::size_t n) {
    for (std::size_t k = thread_index(); k < n; k += thread_count()) x[k] = value;
}

// dwte[ids[n]] += dout[n] row after row, as the CPU: one thread per (first row of an id, column)
// walks that id's rows in order, rounding to E after each, and stores once.
template <class E>
__global__ void embedding_backward_wte_kernel(E* dwte, const E* dout, const std::int32_t* ids,
                                              const std::int32_t* next, const std::int32_t* first,
                                              std::size_t N, std::size_t H) {
    for (std::size_t idx = thread_index(); idx < N * H; idx += thread_count()) {
        const std::size_t n = idx / H;
        if (!first[n]) continue;
        const std::size_t i = idx % H;
        E* d = dwte + static_cast<std::size_t>(ids[n]) * H + i;
        float acc = ld(*d);
        for (std::size_t m = n; m < N; m = static_cast<std::size_t>(next[m]))
            acc = ld(st<E>(acc + ld(dout[m * H + i])));
        *d = st<E>(acc);
    }
}

// dwpe[s] += sum of dout over the rows n = s, s + S, ...: one thread per (s, i) of the min(S, N)
// positions present, summing in fp32 and rounding once.
template <class E>
__global__ void embedding_backward_wpe_kernel(E* dwpe, const E* dout, std::size_t N, std::size_t S,
                                              std::size_t H) {
    const std::size_t positions = S < N ? S : N;
    for (std::size_t idx = thread_index(); idx < positions * H; idx += thread_count()) {
        float sum = 0.0f;
        for (std::size_t n = idx / H; n < N; n += S) sum += ld(dout[n * H + idx % H]);
        dwpe[idx] = st<E>(ld(dwpe[idx]) + sum);
    }
}

// x(B, S, heads, D): one thread per (row, j < D/2) rotates the pair (j, j + D/2) of the row by
// sign * angle, angle = s * inv_freq(j). add: out += the rotation (the backward) instead of =.
// inv_freq is computed in double and cast, as the CPU does: a float pow could differ from it by
// an ulp, which position s multiplies into the angle.
template <class E>
__global__ void rotary_kernel(E* out, const E* inp, std::size_t B, std::size_t S, std::size_t heads,
                              std::size_t D, float sign, bool add) {
    const std::size_t half = D / 2;
    const std::size_t pairs = B * S * heads * half;
    for (std::size_t idx = thread_index(); idx < pairs; idx += thread_count()) {
        const std::size_t j = idx % half;
        const std::size_t row = idx / half;  // (b * S + s) * heads + h
        const std::size_t s = (row / heads) % S;
        const float inv_freq = static_cast<float>(
            1.0 / pow(rotary_theta, static_cast<double>(2 * j) / static_cast<double>(D)));
        const float angle = static_cast<float>(s) * inv_freq;
        const float c = cosf(angle);
        const float sn = sign * sinf(angle);
        const std::size_t k1 = row * D + j;
        const std::size_t k2 = k1 + half;
        const float x1 = ld(inp[k1]);
        const float x2 = ld(inp[k2]);
        const float y1 = x1 * c - x2 * sn;
        const float y2 = x2 * c + x1 * sn;
        out[k1] = st<E>(add ? ld(out[k1]) + y1 : y1);
        out[k2] = st<E>(add ? ld(out[k2]) + y2 : y2);
    }
}

// One block per row: lse = max + log(sum exp(x - max)).
template <class E>
__global__ void cross_entropy_forward_kernel(float* lse, const E* logits, std::size_t V) {
    const std::size_t row = blockIdx.x;
    const E* x = logits + row * V;
    float mx = -INFINITY;
    for (std::size_t j = threadIdx.x; j < V; j += blockDim.x) mx = fmaxf(mx, ld(x[j]));
    mx = block_max(mx);
    float sum = 0.0f;
    for (std::size_t j = threadIdx.x; j < V; j += blockDim.x) sum += expf(ld(x[j]) - mx);
    sum = block_sum(sum);
    if (threadIdx.x == 0) lse[row] = mx + logf(sum);
}

// One block: *loss_sum = the sum over rows of lse - x[target] (each in fp32, as on the CPU), in
// double, each thread taking rows tid, tid + blockDim, ... and the block adding the threads'
// sums pairwise in a fixed tree: the same bits every run.
template <class E>
__global__ void loss_sum_kernel(double* loss_sum, const float* lse, const E* logits,
                                const std::int32_t* targets, std::size_t N, std::size_t V) {
    __shared__ double partial[block_threads];
    double sum = 0.0;
    for (std::size_t row = threadIdx.x; row < N; row += blockDim.x)
        sum += static_cast<double>(lse[row] -
                                   ld(logits[row * V + static_cast<std::size_t>(targets[row])]));
    partial[threadIdx.x] = sum;
    __syncthreads();
    for (unsigned half = blockDim.x / 2; half > 0; half /= 2) {
        if (threadIdx.x < half) partial[threadIdx.x] += partial[threadIdx.x + half];
        __syncthreads();
    }
    if (threadIdx.x == 0) *loss_sum = partial[0];
}

// One block per row: dlogits += scale * (softmax(logits) - onehot(target)).
template <class E>
__global__ void cross_entropy_backward_kernel(E* dlogits, const E* logits, const float* lse,
                                              const std::int32_t* targets, std::size_t V,
                                              float scale) {
    const std::size_t row = blockIdx.x;
    const E* x = logits + row * V;
    E* dx = dlogits + row * V;
    const float l = lse[row];
    const std::size_t t = static_cast<std::size_t>(targets[row]);
    for (std::size_t j = threadIdx.x; j < V; j += blockDim.x) {
        const float prob = expf(ld(x[j]) - l);
        dx[j] = st<E>(ld(dx[j]) + scale * (prob - (j == t ? 1.0f : 0.0f)));
    }
}

// ---- launch configuration ----

// One block per row: N is the grid, whose x dimension holds 2^31 - 1 blocks.
unsigned row_grid(std::size_t N) {
    assert(N <= static_cast<std::size_t>(INT_MAX) && "too many rows for one grid");
    return static_cast<unsigned>(N);
}

template <class T>
void rotate(T* out, const T* inp, std::size_t B, std::size_t S, std::size_t heads, std::size_t D,
            float sign, bool add, cudaStream_t s) {
    assert(D % 2 == 0 && "rotary needs an even head dimension");
    const std::size_t pairs = B * S * heads * (D / 2);
    if (pairs == 0) return;
    rotary_kernel<<<grid_for(pairs), block_threads, 0, s>>>(dev(out), dev(inp), B, S, heads, D,
                                                            sign, add);
    CUDA_CHECK(cudaGetLastError());
}

}  // namespace

// ---- launchers ----

template <class T>
void embedding_forward(T* out, const std::int32_t* ids, const T* wte, const T* wpe, std::size_t N,
                       std::size_t S, std::size_t H, cudaStream_t s) {
    if (N * H == 0) return;
    embedding_forward_kernel<<<grid_for(N * H), block_threads, 0, s>>>(dev(out), ids, dev(wte),
                                                                       dev(wpe), N, S, H);
    CUDA_CHECK(cudaGetLastError());
}

std::uint64_t embedding_backward_workspace(std::size_t N) {
    return 2 * sizeof(std::int32_t) * N;  // next and first, one each per row
}

template <class T>
void embedding_backward(T* dwte, T* dwpe, const T* dout, const std::int32_t* ids, std::size_t N,
                        std::size_t S, std::size_t H, void* workspace, cudaStream_t s) {
    if (N * H == 0) return;
    assert(N <= static_cast<std::size_t>(INT_MAX) && "row links are int32");
    std::int32_t* next = static_cast<std::int32_t*>(workspace);
    std::int32_t* first = next + N;
    fill_kernel<<<grid_for(N), block_threads, 0, s>>>(first, 1, N);
    CUDA_CHECK(cudaGetLastError());
    link_occurrences_kernel<<<grid_for(N), block_threads, 0, s>>>(next, first, ids, N);
    CUDA_CHECK(cudaGetLastError());
    embedding_backward_wte_kernel<<<grid_for(N * H), block_threads, 0, s>>>(dev(dwte), dev(dout),
                                                                            ids, next, first, N, H);
    CUDA_CHECK(cudaGetLastError());
    if (!dwpe) return;
    embedding_backward_wpe_kernel<<<grid_for(std::min(S, N) * H), block_threads, 0, s>>>(
        dev(dwpe), dev(dout), N, S, H);
    CUDA_CHECK(cudaGetLastError());
}

template <class T>
void rotary_forward(T* out, const T* inp, std::size_t B, std::size_t S, std::size_t heads,
                    std::size_t D, cudaStream_t s) {
    rotate(out, inp, B, S, heads, D, +1.0f, false, s);
}

// The rotation's transpose is the rotation by -angle, added into dinp.
template <class T>
void rotary_backward(T* dinp, const T* dout, std::size_t B, std::size_t S, std::size_t heads,
                     std::size_t D, cudaStream_t s) {
    rotate(dinp, dout, B, S, heads, D, -1.0f, true, s);
}

template <class T>
void cross_entropy_forward(double* loss_sum, float* lse, const T* logits,
                           const std::int32_t* targets, std::size_t N, std::size_t V,
                           cudaStream_t s) {
    CUDA_CHECK(cudaMemsetAsync(loss_sum, 0, sizeof(double), s));
    if (N == 0) return;
    assert(V > 0 && "cross-entropy needs a vocabulary");
    cross_entropy_forward_kernel<<<row_grid(N), block_threads, 0, s>>>(lse, dev(logits), V);
    CUDA_CHECK(cudaGetLastError());
    loss_sum_kernel<<<1, block_threads, 0, s>>>(loss_sum, lse, dev(logits), targets, N, V);
    CUDA_CHECK(cudaGetLastError());
}

template <class T>
void cross_entropy_backward(T* dlogits, const T* logits, const float* lse,
                            const std::int32_t* targets, std::size_t N, std::size_t V, float scale,
                            cudaStream_t s) {
    if (N == 0 || V == 0) return;
    cross_entropy_backward_kernel<<<row_grid(N), block_threads, 0, s>>>(dev(dlogits), dev(logits),
                                                                        lse, targets, V, scale);
    CUDA_CHECK(cudaGetLastError());
}

#define REMAT_INSTANTIATE(T)                                                                     \
    template void embedding_forward<T>(T*, const std::int32_t*, const T*, const T*, std::size_t, \
                                       std::size_t, std::size_t, cudaStream_t);                  \
    template void embedding_backward<T>(T*, T*, const T*, const std::int32_t*, std::size_t,      \
                                        std::size_t, std::size_t, void*, cudaStream_t);          \
    template void rotary_forward<T>(T*, const T*, std::size_t, std::size_t, std::size_t,         \
                                    std::size_t, cudaStream_t);                                  \
    template void rotary_backward<T>(T*, const T*, std::size_t, std::size_t, std::size_t,        \
                                     std::size_t, cudaStream_t);                                 \
    template void cross_entropy_forward<T>(double*, float*, const T*, const std::int32_t*,       \
                                           std::size_t, std::size_t, cudaStream_t);              \
    template void cross_entropy_backward<T>(T*, const T*, const float*, const std::int32_t*,     \
                                            std::size_t, std::size_t, float, cudaStream_t);
REMAT_INSTANTIATE(float)
REMAT_INSTANTIATE(bf16)
#undef REMAT_INSTANTIATE

}  // namespace remat::rt::cuda
