// Elementwise CUDA kernels: residual add, accumulation, dropout, GELU (tanh), SwiGLU, the fp32
// <-> compute-dtype conversions FSDP needs, and one AdamW step on fp32 master parameters.
// Semantics are the CPU kernels' (runtime/cpu/kernels_elementwise.cpp, kernels_model.cpp):
// arithmetic in fp32, one rounding per stored element, backwards accumulate (+=) into their
// gradients, and dropout keeps element i iff uniform01(seed, stream, index0 + i) >= p, so both
// backends drop the same elements. Deliberately plain: grid-stride loops, no vectorized loads,
// no fusion, no allocation (dropout's p == 0 is a device-to-device copy, not a kernel).
#include <cuda_bf16.h>

#include <algorithm>
#include <cassert>
#include <cmath>
#include <type_traits>

#include "runtime/cuda/cuda_check.hpp"
#include "runtime/cuda/device.cuh"
#include "runtime/cuda/kernels.cuh"

namespace remat::rt::cuda {
namespace {

using namespace detail;

// GELU's tanh approximation constants (GPT-2's gelu_new), as the CPU's.
constexpr float gelu_c = 0.7978845608028654f;  // sqrt(2 / pi)
constexpr float gelu_k = 0.044715f;

// AdamW's per-step scalars, computed on the host in double and cast once, as the CPU does.
struct AdamWScalars {
    float decay, beta1, beta2, one_minus_beta1, one_minus_beta2, step_size, bias_correction2_sqrt,
        eps;
};

// ---- kernels ----
// E is the device element type: float or __nv_bfloat16. All loops are grid-stride over n.

template <class E>
__global__ void add_forward_kernel(E* out, const E* a, const E* b, std::size_t n) {
    for (std::size_t i = thread_index(); i < n; i += thread_count())
        out[i] = st<E>(ld(a[i]) + ld(b[i]));
}

template <class E>
__global__ void accumulate_kernel(E* dst, const E* src, std::size_t n) {
    for (std::size_t i = thread_index(); i < n; i += thread_count())
        dst[i] = st<E>(ld(dst[i]) + ld(src[i]));
}

template <class E>
__global__ void dropout_forward_kernel(E* out, const E* inp, std::size_t n, DropoutKey key,
                                       float scale) {
    for (std::size_t i = thread_index(); i < n; i += thread_count()) {
        const bool keep = dropout_keep(key.seed, key.stream, key.index0 + i, key.p);
        out[i] = st<E>(keep ? ld(inp[i]) * scale : 0.0f);
    }
}

template <class E>
__global__ void dropout_backward_kernel(E* dinp, const E* dout, std::size_t n, DropoutKey key,
                                        float scale) {
    for (std::size_t i = thread_index(); i < n; i += thread_count()) {
        const bool keep = dropout_keep(key.seed, key.stream, key.index0 + i, key.p);
        if (keep) dinp[i] = st<E>(ld(dinp[i]) + ld(dout[i]) * scale);
    }
}

template <class E>
__global__ void gelu_forward_kernel(E* out, const E* inp, std::size_t n) {
    for (std::size_t i = thread_index(); i < n; i += thread_count()) {
        const float x = ld(inp[i]);
        const float t = tanhf(gelu_c * (x + gelu_k * x * x * x));
        out[i] = st<E>(0.5f * x * (1.0f + t));
    }
}

template <class E>
__global__ void gelu_backward_kernel(E* dinp, const E* dout, const E* inp, std::size_t n) {
    for (std::size_t i = thread_index(); i < n; i += thread_count()) {
        const float x = ld(inp[i]);
        const float t = tanhf(gelu_c * (x + gelu_k * x * x * x));
        const float du = gelu_c * (1.0f + 3.0f * gelu_k * x * x);
        const float grad = 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * du;
        dinp[i] = st<E>(ld(dinp[i]) + ld(dout[i]) * grad);
    }
}

template <class E>
__global__ void swiglu_forward_kernel(E* out, const E* gate, const E* up, std::size_t n) {
    for (std::size_t i = thread_index(); i < n; i += thread_count()) {
        const float g = ld(gate[i]);
        const float sig = 1.0f / (1.0f + expf(-g));
        out[i] = st<E>(g * sig * ld(up[i]));
    }
}

template <class E>
__global__ void swiglu_backward_kernel(E* dgate, E* dup, const E* dout, const E* gate, const E* up,
                                       std::size_t n) {
    for (std::size_t i = thread_index(); i < n; i += thread_count()) {
        const float g = ld(gate[i]);
        const float u = ld(up[i]);
        const float d = ld(dout[i]);
        const float sig = 1.0f / (1.0f + expf(-g));
        const float dsilu = sig * (1.0f + g * (1.0f - sig));
        dgate[i] = st<E>(ld(dgate[i]) + d * u * dsilu);
        dup[i] = st<E>(ld(dup[i]) + d * g * sig);
    }
}

template <class E>
__global__ void add_to_fp32_kernel(float* dst, const E* src, std::size_t n) {
    for (std::size_t i = thread_index(); i < n; i += thread_count()) dst[i] += ld(src[i]);
}

template <class E>
__global__ void convert_from_fp32_kernel(E* dst, const float* src, std::size_t n) {
    for (std::size_t i = thread_index(); i < n; i += thread_count()) dst[i] = st<E>(src[i]);
}

__global__ void adamw_kernel(float* param, const float* grad, float* m, float* v, float* denom,
                             std::size_t n, AdamWScalars c) {
    for (std::size_t i = thread_index(); i < n; i += thread_count()) {
        const float g = grad[i];
        const float mi = c.beta1 * m[i] + c.one_minus_beta1 * g;
        const float vi = c.beta2 * v[i] + c.one_minus_beta2 * g * g;
        const float di = sqrtf(vi) / c.bias_correction2_sqrt + c.eps;
        m[i] = mi;
        v[i] = vi;
        denom[i] = di;
        param[i] = param[i] * c.decay - c.step_size * mi / di;
    }
}

// ---- launch configuration (block_threads, grid_for: device.cuh) ----

// 1 / (1 - p), the scale that keeps a dropped tensor's expectation; p == 1 drops everything.
float keep_scale(float p) {
    assert(p >= 0.0f && p <= 1.0f && "dropout probability must lie in [0, 1]");
    return p < 1.0f ? 1.0f / (1.0f - p) : 0.0f;
}

}  // namespace

// ---- launchers ----

template <class T>
void add_forward(T* out, const T* a, const T* b, std::size_t n, cudaStream_t s) {
    if (n == 0) return;
    add_forward_kernel<<<grid_for(n), block_threads, 0, s>>>(dev(out), dev(a), dev(b), n);
    CUDA_CHECK(cudaGetLastError());
}

template <class T>
void accumulate(T* dst, const T* src, std::size_t n, cudaStream_t s) {
    if (n == 0) return;
    accumulate_kernel<<<grid_for(n), block_threads, 0, s>>>(dev(dst), dev(src), n);
    CUDA_CHECK(cudaGetLastError());
}

template <class T>
void dropout_forward(T* out, const T* inp, std::size_t n, const DropoutKey& key, cudaStream_t s) {
    if (n == 0) return;
    if (key.p == 0.0f) {
        if (out != inp)
            CUDA_CHECK(cudaMemcpyAsync(out, inp, n * sizeof(T), cudaMemcpyDeviceToDevice, s));
        return;
    }
    dropout_forward_kernel<<<grid_for(n), block_threads, 0, s>>>(dev(out), dev(inp), n, key,
                                                                 keep_scale(key.p));
    CUDA_CHECK(cudaGetLastError());
}

// The mask is a pure function of the key, so the backward regenerates it and adds the kept,
// scaled dout into dinp.
template <class T>
void dropout_backward(T* dinp, const T* dout, std::size_t n, const DropoutKey& key,
                      cudaStream_t s) {
    if (n == 0) return;
    if (key.p == 0.0f) {
        accumulate(dinp, dout, n, s);
        return;
    }
    dropout_backward_kernel<<<grid_for(n), block_threads, 0, s>>>(dev(dinp), dev(dout), n, key,
                                                                  keep_scale(key.p));
    CUDA_CHECK(cudaGetLastError());
}

template <class T>
void gelu_forward(T* out, const T* inp, std::size_t n, cudaStream_t s) {
    if (n == 0) return;
    gelu_forward_kernel<<<grid_for(n), block_threads, 0, s>>>(dev(out), dev(inp), n);
    CUDA_CHECK(cudaGetLastError());
}

template <class T>
void gelu_backward(T* dinp, const T* dout, const T* inp, std::size_t n, cudaStream_t s) {
    if (n == 0) return;
    gelu_backward_kernel<<<grid_for(n), block_threads, 0, s>>>(dev(dinp), dev(dout), dev(inp), n);
    CUDA_CHECK(cudaGetLastError());
}

template <class T>
void swiglu_forward(T* out, const T* gate, const T* up, std::size_t n, cudaStream_t s) {
    if (n == 0) return;
    swiglu_forward_kernel<<<grid_for(n), block_threads, 0, s>>>(dev(out), dev(gate), dev(up), n);
    CUDA_CHECK(cudaGetLastError());
}

template <class T>
void swiglu_backward(T* dgate, T* dup, const T* dout, const T* gate, const T* up, std::size_t n,
                     cudaStream_t s) {
    if (n == 0) return;
    swiglu_backward_kernel<<<grid_for(n), block_threads, 0, s>>>(dev(dgate), dev(dup), dev(dout),
                                                                 dev(gate), dev(up), n);
    CUDA_CHECK(cudaGetLastError());
}

template <class T>
void add_to_fp32(float* dst, const T* src, std::size_t n, cudaStream_t s) {
    if (n == 0) return;
    add_to_fp32_kernel<<<grid_for(n), block_threads, 0, s>>>(dst, dev(src), n);
    CUDA_CHECK(cudaGetLastError());
}

template <class T>
void convert_from_fp32(T* dst, const float* src, std::size_t n, cudaStream_t s) {
    if (n == 0) return;
    convert_from_fp32_kernel<<<grid_for(n), block_threads, 0, s>>>(dev(dst), src, n);
    CUDA_CHECK(cudaGetLastError());
}

void adamw_step(float* param, const float* grad, float* m, float* v, float* denom, std::size_t n,
                const AdamW& opt, std::uint64_t step, cudaStream_t s) {
    assert(step >= 1 && "AdamW steps count from 1");
    if (n == 0) return;
    // Scalars in double, as torch computes them in Python (and the CPU kernel does), then cast
    // once.
    const double t = static_cast<double>(step);
    const AdamWScalars c{
        static_cast<float>(1.0 - opt.lr * opt.weight_decay),
        static_cast<float>(opt.beta1),
        static_cast<float>(opt.beta2),
        static_cast<float>(1.0 - opt.beta1),
        static_cast<float>(1.0 - opt.beta2),
        static_cast<float>(opt.lr / (1.0 - std::pow(opt.beta1, t))),
        static_cast<float>(std::sqrt(1.0 - std::pow(opt.beta2, t))),
        static_cast<float>(opt.eps),
    };
    adamw_kernel<<<grid_for(n), block_threads, 0, s>>>(param, grad, m, v, denom, n, c);
    CUDA_CHECK(cudaGetLastError());
}

#define REMAT_INSTANTIATE(T)                                                                       \
    template void add_forward<T>(T*, const T*, const T*, std::size_t, cudaStream_t);               \
    template void accumulate<T>(T*, const T*, std::size_t, cudaStream_t);                          \
    template void dropout_forward<T>(T*, const T*, std::size_t, const DropoutKey&, cudaStream_t);  \
    template void dropout_backward<T>(T*, const T*, std::size_t, const DropoutKey&, cudaStream_t); \
    template void gelu_forward<T>(T*, const T*, std::size_t, cudaStream_t);                        \
    template void gelu_backward<T>(T*, const T*, const T*, std::size_t, cudaStream_t);             \
    template void swiglu_forward<T>(T*, const T*, const T*, std::size_t, cudaStream_t);            \
    template void swiglu_backward<T>(T*, T*, const T*, const T*, const T*, std::size_t,            \
                                     cudaStream_t);                                                \
    template void add_to_fp32<T>(float*, const T*, std::size_t, cudaStream_t);                     \
    template void convert_from_fp32<T>(T*, const float*, std::size_t, cudaStream_t);
REMAT_INSTANTIATE(float)
REMAT_INSTANTIATE(bf16)
#undef REMAT_INSTANTIATE

}  // namespace remat::rt::cuda
