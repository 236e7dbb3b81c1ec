// The ends of the model and the optimizer: token + position embedding, cross-entropy over the
// vocabulary, and one AdamW step, each forward and backward where it has one. Backwards
// accumulate (+=) into dwte, dwpe and dlogits, as kernels.hpp's convention says.
// Targets are always valid token ids (no ignore_index), the loss is a sum (the caller's `scale`
// turns it into a mean), and AdamW has no amsgrad, maximize or gradient clipping.
#include <algorithm>
#include <cassert>
#include <cmath>

#include "runtime/cpu/kernels.hpp"

namespace remat::cpu {

template <class T>
void embedding_forward(T* out, const std::int32_t* ids, const T* wte, const T* wpe, std::size_t N,
                       std::size_t S, std::size_t H) {
    using A = acc_t<T>;
    for (std::size_t n = 0; n < N; ++n) {
        assert(ids[n] >= 0 && "token ids are non-negative");
        const T* tok = wte + static_cast<std::size_t>(ids[n]) * H;
        const T* pos = wpe ? wpe + (n % S) * H : nullptr;
        T* o = out + n * H;
        for (std::size_t i = 0; i < H; ++i)
            o[i] = store<T>(load(tok[i]) + (pos ? load(pos[i]) : A(0)));
    }
}

template <class T>
void embedding_backward(T* dwte, T* dwpe, const T* dout, const std::int32_t* ids, std::size_t N,
                        std::size_t S, std::size_t H) {
    using A = acc_t<T>;
    // A token id may repeat anywhere in the batch, so dwte takes one rounding per row; rows for a
    // position are known (n % S), so dwpe sums them in acc_t first and rounds once.
    for (std::size_t n = 0; n < N; ++n) {
        T* dtok = dwte + static_cast<std::size_t>(ids[n]) * H;
        const T* d = dout + n * H;
        for (std::size_t i = 0; i < H; ++i) dtok[i] = store<T>(load(dtok[i]) + load(d[i]));
    }
    if (!dwpe) return;
    constexpr std::size_t block = 256;
    for (std::size_t s = 0; s < std::min(S, N); ++s) {
        for (std::size_t c0 = 0; c0 < H; c0 += block) {
            const std::size_t c1 = std::min(H, c0 + block);
            A sum[block] = {};
            for (std::size_t n = s; n < N; n += S)
                for (std::size_t i = c0; i < c1; ++i) sum[i - c0] += load(dout[n * H + i]);
            T* dpos = dwpe + s * H;
            for (std::size_t i = c0; i < c1; ++i) dpos[i] = store<T>(load(dpos[i]) + sum[i - c0]);
        }
    }
}

template <class T>
double cross_entropy_forward(acc_t<T>* lse, const T* logits, const std::int32_t* targets,
                             std::size_t N, std::size_t V) {
    using A = acc_t<T>;
    double loss = 0;
    for (std::size_t n = 0; n < N; ++n) {
        const T* x = logits + n * V;
        A mx = load(x[0]);
        for (std::size_t j = 1; j < V; ++j) mx = std::max(mx, load(x[j]));
        A sum = 0;
        for (std::size_t j = 0; j < V; ++j) sum += std::exp(load(x[j]) - mx);
        const A l = mx + std::log(sum);
        lse[n] = l;
        assert(targets[n] >= 0 && static_cast<std::size_t>(targets[n]) < V &&
               "target outside the vocabulary");
        loss += static_cast<double>(l - load(x[targets[n]]));
    }
    return loss;
}

template <class T>
void cross_entropy_backward(T* dlogits, const T* logits, const acc_t<T>* lse,
                            const std::int32_t* targets, std::size_t N, std::size_t V,
                            acc_t<T> scale) {
    using A = acc_t<T>;
    for (std::size_t n = 0; n < N; ++n) {
        const T* x = logits + n * V;
        T* dx = dlogits + n * V;
        const std::size_t t = static_cast<std::size_t>(targets[n]);
        for (std::size_t j = 0; j < V; ++j) {
            const A prob = std::exp(load(x[j]) - lse[n]);
            dx[j] = store<T>(load(dx[j]) + scale * (prob - (j == t ? A(1) : A(0))));
        }
    }
}

template <class T>
void adamw_step(T* param, const T* grad, T* m, T* v, T* denom, std::size_t n, const AdamW& opt,
                std::uint64_t step) {
    using A = acc_t<T>;
    assert(step >= 1 && "AdamW steps count from 1");
    // Scalars in double, as torch computes them in Python, then cast once for the element loop.
    const double t = static_cast<double>(step);
    const A decay = static_cast<A>(1.0 - opt.lr * opt.weight_decay);
    const A beta1 = static_cast<A>(opt.beta1);
    const A beta2 = static_cast<A>(opt.beta2);
    const A one_minus_beta1 = static_cast<A>(1.0 - opt.beta1);
    const A one_minus_beta2 = static_cast<A>(1.0 - opt.beta2);
    const A step_size = static_cast<A>(opt.lr / (1.0 - std::pow(opt.beta1, t)));
    const A bias_correction2_sqrt = static_cast<A>(std::sqrt(1.0 - std::pow(opt.beta2, t)));
    const A eps = static_cast<A>(opt.eps);
    for (std::size_t i = 0; i < n; ++i) {
        const A g = load(grad[i]);
        const A mi = beta1 * load(m[i]) + one_minus_beta1 * g;
        const A vi = beta2 * load(v[i]) + one_minus_beta2 * g * g;
        const A di = std::sqrt(vi) / bias_correction2_sqrt + eps;
        m[i] = store<T>(mi);
        v[i] = store<T>(vi);
        denom[i] = store<T>(di);
        param[i] = store<T>(load(param[i]) * decay - step_size * mi / di);
    }
}

#define REMAT_INSTANTIATE(T)                                                                     \
    template void embedding_forward<T>(T*, const std::int32_t*, const T*, const T*, std::size_t, \
                                       std::size_t, std::size_t);                                \
    template void embedding_backward<T>(T*, T*, const T*, const std::int32_t*, std::size_t,      \
                                        std::size_t, std::size_t);                               \
    template double cross_entropy_forward<T>(acc_t<T>*, const T*, const std::int32_t*,           \
                                             std::size_t, std::size_t);                          \
    template void cross_entropy_backward<T>(T*, const T*, const acc_t<T>*, const std::int32_t*,  \
                                            std::size_t, std::size_t, acc_t<T>);                 \
    template void adamw_step<T>(T*, const T*, T*, T*, T*, std::size_t, const AdamW&, std::uint64_t);
REMAT_INSTANTIATE(float)
REMAT_INSTANTIATE(bf16)
REMAT_INSTANTIATE(double)
#undef REMAT_INSTANTIATE

}  // namespace remat::cpu
