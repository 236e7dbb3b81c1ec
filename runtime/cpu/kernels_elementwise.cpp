// Elementwise kernels of the CPU backend: the dropout RNG, storage <-> arithmetic conversion,
// residual add, accumulation, dropout, GELU and SwiGLU, forward and backward.
// Forwards write (=) their outputs; backwards accumulate (+=) into every gradient they produce,
// as kernels.hpp's convention says, so a gradient buffer must not alias the dout it reads.
// Plain single-threaded loops: these ops are memory-bound and tiny next to the GEMMs, and the
// runtime measures memory, not speed. No SIMD intrinsics, no allocation.
#include <cassert>
#include <cmath>

#include "runtime/cpu/kernels.hpp"

namespace remat::cpu {
namespace {

// 1 / (1 - p), the scale that keeps a dropped tensor's expectation; p == 1 drops everything.
float keep_scale(float p) {
    assert(p >= 0.0f && p <= 1.0f && "dropout probability must lie in [0, 1]");
    return p < 1.0f ? 1.0f / (1.0f - p) : 0.0f;
}

template <class T>
void apply_dropout(T* out, const T* inp, std::size_t n, const DropoutKey& key) {
    using A = acc_t<T>;
    if (key.p == 0.0f) {
        if (out != inp) std::memmove(out, inp, n * sizeof(T));
        return;
    }
    const A scale = static_cast<A>(keep_scale(key.p));
    for (std::size_t i = 0; i < n; ++i) {
        const bool keep = dropout_keep(key.seed, key.stream, key.index0 + i, key.p);
        out[i] = store<T>(keep ? load(inp[i]) * scale : A(0));
    }
}

}  // namespace

template <class T>
void convert(acc_t<T>* dst, const T* src, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) dst[i] = load(src[i]);
}

template <class T>
void convert_back(T* dst, const acc_t<T>* src, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) dst[i] = store<T>(src[i]);
}

template <class T>
void add_forward(T* out, const T* a, const T* b, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) out[i] = store<T>(load(a[i]) + load(b[i]));
}

template <class T>
void accumulate(T* dst, const T* src, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) dst[i] = store<T>(load(dst[i]) + load(src[i]));
}

template <class T>
void dropout_forward(T* out, const T* inp, std::size_t n, const DropoutKey& key) {
    apply_dropout(out, inp, n, key);
}

// The mask is a pure function of the key, so the backward is the forward applied to dout, added
// into dinp.
template <class T>
void dropout_backward(T* dinp, const T* dout, std::size_t n, const DropoutKey& key) {
    using A = acc_t<T>;
    if (key.p == 0.0f) {
        accumulate(dinp, dout, n);
        return;
    }
    const A scale = static_cast<A>(keep_scale(key.p));
    for (std::size_t i = 0; i < n; ++i) {
        const bool keep = dropout_keep(key.seed, key.stream, key.index0 + i, key.p);
        if (keep) dinp[i] = store<T>(load(dinp[i]) + load(dout[i]) * scale);
    }
}

template <class T>
void gelu_forward(T* out, const T* inp, std::size_t n) {
    using A = acc_t<T>;
    const A c = static_cast<A>(0.7978845608028654);  // sqrt(2 / pi)
    const A k = static_cast<A>(0.044715);
    const A half = static_cast<A>(0.5);
    for (std::size_t i = 0; i < n; ++i) {
        const A x = load(inp[i]);
        const A t = std::tanh(c * (x + k * x * x * x));
        out[i] = store<T>(half * x * (A(1) + t));
    }
}

template <class T>
void gelu_backward(T* dinp, const T* dout, const T* inp, std::size_t n) {
    using A = acc_t<T>;
    const A c = static_cast<A>(0.7978845608028654);
    const A k = static_cast<A>(0.044715);
    const A half = static_cast<A>(0.5);
    for (std::size_t i = 0; i < n; ++i) {
        const A x = load(inp[i]);
        const A t = std::tanh(c * (x + k * x * x * x));
        const A du = c * (A(1) + A(3) * k * x * x);
        const A grad = half * (A(1) + t) + half * x * (A(1) - t * t) * du;
        dinp[i] = store<T>(load(dinp[i]) + load(dout[i]) * grad);
    }
}

template <class T>
void swiglu_forward(T* out, const T* gate, const T* up, std::size_t n) {
    using A = acc_t<T>;
    for (std::size_t i = 0; i < n; ++i) {
        const A g = load(gate[i]);
        const A sig = A(1) / (A(1) + std::exp(-g));
        out[i] = store<T>(g * sig * load(up[i]));
    }
}

template <class T>
void swiglu_backward(T* dgate, T* dup, const T* dout, const T* gate, const T* up, std::size_t n) {
    using A = acc_t<T>;
    for (std::size_t i = 0; i < n; ++i) {
        const A g = load(gate[i]);
        const A u = load(up[i]);
        const A d = load(dout[i]);
        const A sig = A(1) / (A(1) + std::exp(-g));
        const A dsilu = sig * (A(1) + g * (A(1) - sig));
        dgate[i] = store<T>(load(dgate[i]) + d * u * dsilu);
        dup[i] = store<T>(load(dup[i]) + d * g * sig);
    }
}

#define REMAT_INSTANTIATE(T)                                                         \
    template void convert<T>(acc_t<T>*, const T*, std::size_t);                      \
    template void convert_back<T>(T*, const acc_t<T>*, std::size_t);                 \
    template void add_forward<T>(T*, const T*, const T*, std::size_t);               \
    template void accumulate<T>(T*, const T*, std::size_t);                          \
    template void dropout_forward<T>(T*, const T*, std::size_t, const DropoutKey&);  \
    template void dropout_backward<T>(T*, const T*, std::size_t, const DropoutKey&); \
    template void gelu_forward<T>(T*, const T*, std::size_t);                        \
    template void gelu_backward<T>(T*, const T*, const T*, std::size_t);             \
    template void swiglu_forward<T>(T*, const T*, const T*, std::size_t);            \
    template void swiglu_backward<T>(T*, T*, const T*, const T*, const T*, std::size_t);
REMAT_INSTANTIATE(float)
REMAT_INSTANTIATE(bf16)
REMAT_INSTANTIATE(double)
#undef REMAT_INSTANTIATE

}  // namespace remat::cpu
