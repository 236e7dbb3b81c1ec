// LayerNorm (GPT-2) and RMSNorm (Llama), forward and backward, on (N, H) rows.
// Statistics and arithmetic in acc_t<T>; the forward saves mean / rstd per row so the backward
// does not recompute them. Eps values are fixed to torch's and HF's defaults (1e-5 LayerNorm,
// 1e-6 LlamaRMSNorm), not configurable. Single-threaded, no allocation.
// Backwards accumulate (+=) into dinp and the parameter gradients alike (kernels.hpp's
// convention), so dinp must not alias dout.
#include <algorithm>
#include <cmath>

#include "runtime/cpu/kernels.hpp"

namespace remat::cpu {
namespace {

constexpr double layernorm_eps = 1e-5;
constexpr double rmsnorm_eps = 1e-6;

// Parameter gradients are summed over all N rows in acc_t and added to the (possibly bf16)
// gradient once, so a bf16 dweight is rounded once per call rather than once per row. Columns
// go in blocks so the partial sums live on the stack.
constexpr std::size_t column_block = 256;

}  // namespace

template <class T>
void layernorm_forward(T* out, acc_t<T>* mean, acc_t<T>* rstd, const T* inp, const T* weight,
                       const T* bias, std::size_t N, std::size_t H) {
    using A = acc_t<T>;
    const A inv_h = A(1) / static_cast<A>(H);
    for (std::size_t n = 0; n < N; ++n) {
        const T* x = inp + n * H;
        A sum = 0;
        for (std::size_t i = 0; i < H; ++i) sum += load(x[i]);
        const A m = sum * inv_h;
        // Two passes rather than E[x^2] - E[x]^2, which cancels badly for rows with a large mean.
        A var = 0;
        for (std::size_t i = 0; i < H; ++i) {
            const A d = load(x[i]) - m;
            var += d * d;
        }
        var *= inv_h;
        const A r = A(1) / std::sqrt(var + static_cast<A>(layernorm_eps));
        T* o = out + n * H;
        for (std::size_t i = 0; i < H; ++i)
            o[i] = store<T>((load(x[i]) - m) * r * load(weight[i]) + load(bias[i]));
        mean[n] = m;
        rstd[n] = r;
    }
}

template <class T>
void layernorm_backward(T* dinp, T* dweight, T* dbias, const T* dout, const T* inp, const T* weight,
                        const acc_t<T>* mean, const acc_t<T>* rstd, std::size_t N, std::size_t H) {
    using A = acc_t<T>;
    for (std::size_t c0 = 0; c0 < H; c0 += column_block) {
        const std::size_t c1 = std::min(H, c0 + column_block);
        A sum_w[column_block] = {};
        A sum_b[column_block] = {};
        for (std::size_t n = 0; n < N; ++n) {
            const T* x = inp + n * H;
            const T* d = dout + n * H;
            for (std::size_t i = c0; i < c1; ++i) {
                const A norm = (load(x[i]) - mean[n]) * rstd[n];
                sum_w[i - c0] += norm * load(d[i]);
                sum_b[i - c0] += load(d[i]);
            }
        }
        for (std::size_t i = c0; i < c1; ++i) {
            dweight[i] = store<T>(load(dweight[i]) + sum_w[i - c0]);
            dbias[i] = store<T>(load(dbias[i]) + sum_b[i - c0]);
        }
    }
    const A inv_h = A(1) / static_cast<A>(H);
    for (std::size_t n = 0; n < N; ++n) {
        const T* x = inp + n * H;
        const T* d = dout + n * H;
        const A m = mean[n];
        const A r = rstd[n];
        A dnorm_mean = 0;
        A dnorm_norm_mean = 0;
        for (std::size_t i = 0; i < H; ++i) {
            const A dnorm = load(d[i]) * load(weight[i]);
            dnorm_mean += dnorm;
            dnorm_norm_mean += dnorm * (load(x[i]) - m) * r;
        }
        dnorm_mean *= inv_h;
        dnorm_norm_mean *= inv_h;
        T* dx = dinp + n * H;
        for (std::size_t i = 0; i < H; ++i) {
            const A norm = (load(x[i]) - m) * r;
            const A dnorm = load(d[i]) * load(weight[i]);
            dx[i] = store<T>(load(dx[i]) + (dnorm - dnorm_mean - norm * dnorm_norm_mean) * r);
        }
    }
}

template <class T>
void rmsnorm_forward(T* out, acc_t<T>* rstd, const T* inp, const T* weight, std::size_t N,
                     std::size_t H) {
    using A = acc_t<T>;
    const A inv_h = A(1) / static_cast<A>(H);
    for (std::size_t n = 0; n < N; ++n) {
        const T* x = inp + n * H;
        A sum_sq = 0;
        for (std::size_t i = 0; i < H; ++i) sum_sq += load(x[i]) * load(x[i]);
        const A r = A(1) / std::sqrt(sum_sq * inv_h + static_cast<A>(rmsnorm_eps));
        T* o = out + n * H;
        for (std::size_t i = 0; i < H; ++i) o[i] = store<T>(load(weight[i]) * (load(x[i]) * r));
        rstd[n] = r;
    }
}

template <class T>
void rmsnorm_backward(T* dinp, T* dweight, const T* dout, const T* inp, const T* weight,
                      const acc_t<T>* rstd, std::size_t N, std::size_t H) {
    using A = acc_t<T>;
    for (std::size_t c0 = 0; c0 < H; c0 += column_block) {
        const std::size_t c1 = std::min(H, c0 + column_block);
        A sum_w[column_block] = {};
        for (std::size_t n = 0; n < N; ++n) {
            const T* x = inp + n * H;
            const T* d = dout + n * H;
            for (std::size_t i = c0; i < c1; ++i)
                sum_w[i - c0] += load(x[i]) * rstd[n] * load(d[i]);
        }
        for (std::size_t i = c0; i < c1; ++i)
            dweight[i] = store<T>(load(dweight[i]) + sum_w[i - c0]);
    }
    const A inv_h = A(1) / static_cast<A>(H);
    for (std::size_t n = 0; n < N; ++n) {
        const T* x = inp + n * H;
        const T* d = dout + n * H;
        const A r = rstd[n];
        // d(x * rstd)/dx = rstd * (I - norm norm^T / H), with norm = x * rstd.
        A dnorm_norm_mean = 0;
        for (std::size_t i = 0; i < H; ++i)
            dnorm_norm_mean += load(d[i]) * load(weight[i]) * load(x[i]) * r;
        dnorm_norm_mean *= inv_h;
        T* dx = dinp + n * H;
        for (std::size_t i = 0; i < H; ++i) {
            const A dnorm = load(d[i]) * load(weight[i]);
            dx[i] = store<T>(load(dx[i]) + (dnorm - load(x[i]) * r * dnorm_norm_mean) * r);
        }
    }
}

#define REMAT_INSTANTIATE(T)                                                                       \
    template void layernorm_forward<T>(T*, acc_t<T>*, acc_t<T>*, const T*, const T*, const T*,     \
                                       std::size_t, std::size_t);                                  \
    template void layernorm_backward<T>(T*, T*, T*, const T*, const T*, const T*, const acc_t<T>*, \
                                        const acc_t<T>*, std::size_t, std::size_t);                \
    template void rmsnorm_forward<T>(T*, acc_t<T>*, const T*, const T*, std::size_t, std::size_t); \
    template void rmsnorm_backward<T>(T*, T*, const T*, const T*, const T*, const acc_t<T>*,       \
                                      std::size_t, std::size_t);
REMAT_INSTANTIATE(float)
REMAT_INSTANTIATE(bf16)
REMAT_INSTANTIATE(double)
#undef REMAT_INSTANTIATE

}  // namespace remat::cpu
