// Rotary position embedding and causal self-attention (with GQA and attention dropout), forward
// and backward.
// Attention is flash-style in what it saves (q, k, v, out and the row log-sum-exp) but not in how
// it computes: one (batch, head) at a time it materializes the S x S scores in caller scratch and
// runs them through BLAS. That scratch is per call and O(S^2), which is the point: the runtime
// counts it as the transient it is, and the saved state stays O(S). No tiling, no threads.
//
// Scratch layout, in acc_t<T> elements (float for float and bf16, double for double), reused for
// every (batch, head) the call walks:
//   forward,  attention_forward_scratch = S*S + 4*S*D:
//     [0, S*S)                P   (S, S) scores Q K^T / sqrt(D), then in place the probabilities
//                                 softmax(scores) times the dropout factor, upper triangle 0
//     [S*S + 0*S*D, +S*D)     Q   (S, D) this query head's q, dense
//     [S*S + 1*S*D, +S*D)     K   (S, D) its key/value head's k, dense
//     [S*S + 2*S*D, +S*D)     V   (S, D) its key/value head's v, dense
//     [S*S + 3*S*D, +S*D)     O   (S, D) P V, before it is stored into out
//   backward, attention_backward_scratch = 2*S*S + 7*S*D:
//     [0, S*S)                P   (S, S) scores Q K^T / sqrt(D) recomputed, then in place the
//                                 dropped probabilities (softmax from the saved lse times the
//                                 dropout factor), upper triangle 0
//     [S*S, 2*S*S)            dP  (S, S) dO V^T, the gradient of the dropped probabilities, then
//                                 in place the gradient of the scaled scores (the dQ and dK GEMMs
//                                 apply the 1/sqrt(D)), upper triangle 0
//     [2*S*S + 0*S*D, +S*D)   Q   (S, D) this query head's q, dense
//     [2*S*S + 1*S*D, +S*D)   K   (S, D) the key/value head's k, dense
//     [2*S*S + 2*S*D, +S*D)   V   (S, D) the key/value head's v, dense
//     [2*S*S + 3*S*D, +S*D)   dO  (S, D) this query head's dout, dense
//     [2*S*S + 4*S*D, +S*D)   dQ  (S, D) this query head's gradient of q, from zero
//     [2*S*S + 5*S*D, +S*D)   dK  (S, D) the gradient of k summed over the query heads that share
//                                 the key/value head, from zero
//     [2*S*S + 6*S*D, +S*D)   dV  (S, D) likewise for v
// The backward accumulates (+=) into dq, dk and dv, as kernels.hpp's convention says: dQ is added
// into dq once per query head, dK and dV into dk and dv once per key/value head, so each stored
// element, bf16 included, is rounded once per call. Rotary's backward accumulates into dinp too.
#include <algorithm>
#include <cassert>
#include <cmath>
#include <limits>

#include "runtime/cpu/kernels.hpp"

namespace remat::cpu {
namespace {

constexpr double rotary_theta = 10000.0;

// Frequencies are computed a block at a time on the stack so each (s, j) pays for one cos and one
// sin however many rows and heads share it.
constexpr std::size_t rotary_block = 64;

// sign = +1 rotates by +angle (forward); sign = -1 by -angle, the transpose (backward).
// add: out += the rotation (backward's accumulation) rather than out = it.
template <class T>
void rotate(T* out, const T* inp, std::size_t B, std::size_t S, std::size_t heads, std::size_t D,
            int sign, bool add) {
    using A = acc_t<T>;
    assert(D % 2 == 0 && "rotary needs an even head dimension");
    const std::size_t half = D / 2;
    for (std::size_t s = 0; s < S; ++s) {
        for (std::size_t j0 = 0; j0 < half; j0 += rotary_block) {
            const std::size_t j1 = std::min(half, j0 + rotary_block);
            A cos_j[rotary_block];
            A sin_j[rotary_block];
            for (std::size_t j = j0; j < j1; ++j) {
                // HF's inv_freq = 1 / theta^(2j / D), angle = position * inv_freq.
                const A inv_freq =
                    static_cast<A>(1.0 / std::pow(rotary_theta, static_cast<double>(2 * j) /
                                                                    static_cast<double>(D)));
                const A angle = static_cast<A>(s) * inv_freq;
                cos_j[j - j0] = std::cos(angle);
                sin_j[j - j0] = static_cast<A>(sign) * std::sin(angle);
            }
            for (std::size_t b = 0; b < B; ++b) {
                for (std::size_t h = 0; h < heads; ++h) {
                    const std::size_t row = ((b * S + s) * heads + h) * D;
                    for (std::size_t j = j0; j < j1; ++j) {
                        const A x1 = load(inp[row + j]);
                        const A x2 = load(inp[row + j + half]);
                        const A c = cos_j[j - j0];
                        const A sn = sin_j[j - j0];
                        const A y1 = x1 * c - x2 * sn;
                        const A y2 = x2 * c + x1 * sn;
                        out[row + j] = store<T>(add ? load(out[row + j]) + y1 : y1);
                        out[row + j + half] = store<T>(add ? load(out[row + j + half]) + y2 : y2);
                    }
                }
            }
        }
    }
}

// Copies the S rows of one head (D elements each, `stride` apart) into a dense (S, D) block.
template <class T>
void gather_head(acc_t<T>* dst, const T* src, std::size_t stride, std::size_t S, std::size_t D) {
    for (std::size_t i = 0; i < S; ++i) convert(dst + i * D, src + i * stride, D);
}

template <class T>
void scatter_head(T* dst, const acc_t<T>* src, std::size_t stride, std::size_t S, std::size_t D) {
    for (std::size_t i = 0; i < S; ++i) convert_back(dst + i * stride, src + i * D, D);
}

// Adds a dense (S, D) block into the S rows of one head: one rounding per element for bf16.
template <class T>
void add_head(T* dst, const acc_t<T>* src, std::size_t stride, std::size_t S, std::size_t D) {
    for (std::size_t i = 0; i < S; ++i)
        for (std::size_t d = 0; d < D; ++d)
            dst[i * stride + d] = store<T>(load(dst[i * stride + d]) + src[i * D + d]);
}

// Index of probability (b, h, 0, 0) in the dropout stream, as documented in kernels.hpp.
std::uint64_t attention_dropout_base(const AttentionShape& s, const DropoutKey& key, std::size_t b,
                                     std::size_t h) {
    return ((key.index0 + b) * s.A + h) * s.S * s.S;
}

template <class A>
A dropout_scale(const DropoutKey& key) {
    assert(key.p >= 0.0f && key.p < 1.0f && "attention dropout probability must lie in [0, 1)");
    return A(1) / (A(1) - static_cast<A>(key.p));
}

}  // namespace

template <class T>
void rotary_forward(T* out, const T* inp, std::size_t B, std::size_t S, std::size_t heads,
                    std::size_t D) {
    rotate(out, inp, B, S, heads, D, +1, false);
}

template <class T>
void rotary_backward(T* dinp, const T* dout, std::size_t B, std::size_t S, std::size_t heads,
                     std::size_t D) {
    rotate(dinp, dout, B, S, heads, D, -1, true);
}

namespace {

// Both attention cores, forward: the flash core writes lse (probs null), the eager core the
// probabilities rounded to T (lse null), and multiplies V by those rounded values.
template <class T>
void forward_core(T* out, acc_t<T>* lse, T* probs, const T* q, const T* k, const T* v,
                  const AttentionShape& s, const DropoutKey& dropout, acc_t<T>* scratch) {
    using A = acc_t<T>;
    const std::size_t S = s.S, D = s.D, group = s.A / s.KV;
    assert(s.KV > 0 && s.A % s.KV == 0 && "query heads must be a multiple of key/value heads");
    const A scale = A(1) / std::sqrt(static_cast<A>(D));
    const A keep_scale = dropout.p > 0.0f ? dropout_scale<A>(dropout) : A(1);
    A* P = scratch;    // (S, S) scores, then probabilities
    A* Q = P + S * S;  // (S, D)
    A* K = Q + S * D;  // (S, D)
    A* V = K + S * D;  // (S, D)
    A* O = V + S * D;  // (S, D)
    for (std::size_t b = 0; b < s.B; ++b) {
        for (std::size_t h = 0; h < s.A; ++h) {
            const std::size_t kvh = h / group;
            gather_head(Q, q + b * S * s.q_stride + h * D, s.q_stride, S, D);
            gather_head(K, k + b * S * s.k_stride + kvh * D, s.k_stride, S, D);
            gather_head(V, v + b * S * s.v_stride + kvh * D, s.v_stride, S, D);
            // The upper triangle is computed and then discarded: simpler than a triangular GEMM.
            gemm<A>(false, true, S, S, D, scale, Q, D, K, D, A(0), P, S);
            const std::uint64_t base = attention_dropout_base(s, dropout, b, h);
            for (std::size_t i = 0; i < S; ++i) {
                A* p = P + i * S;
                A mx = -std::numeric_limits<A>::infinity();
                for (std::size_t j = 0; j <= i; ++j) mx = std::max(mx, p[j]);
                A sum = 0;
                for (std::size_t j = 0; j <= i; ++j) sum += std::exp(p[j] - mx);
                const A l = mx + std::log(sum);
                if (lse) lse[(b * s.A + h) * S + i] = l;
                T* prow = probs ? probs + ((b * s.A + h) * S + i) * S : nullptr;
                for (std::size_t j = 0; j <= i; ++j) {
                    A prob = std::exp(p[j] - l);
                    if (prow) {
                        prow[j] = store<T>(prob);
                        prob = load(prow[j]);
                    }
                    p[j] = prob * dropout_factor(dropout, base + i * S + j, keep_scale);
                }
                for (std::size_t j = i + 1; j < S; ++j) {
                    p[j] = 0;
                    if (prow) prow[j] = store<T>(A(0));
                }
            }
            gemm<A>(false, false, S, D, S, A(1), P, S, V, D, A(0), O, D);
            scatter_head(out + b * S * s.A * D + h * D, O, s.A * D, S, D);
        }
    }
}

// Both attention cores, backward: the flash core recomputes the probabilities from q, k and lse
// and takes delta = dO . O (probs null); the eager core reads the saved probabilities and sums
// delta = rowsum(P * dP) through the dropout mask (out and lse null).
template <class T>
void backward_core(T* dq, T* dk, T* dv, const T* dout, const T* q, const T* k, const T* v,
                   const T* out, const acc_t<T>* lse, const T* probs, const AttentionShape& s,
                   const DropoutKey& dropout, acc_t<T>* scratch) {
    using A = acc_t<T>;
    const std::size_t S = s.S, D = s.D, group = s.A / s.KV;
    assert(s.KV > 0 && s.A % s.KV == 0 && "query heads must be a multiple of key/value heads");
    const A scale = A(1) / std::sqrt(static_cast<A>(D));
    const A keep_scale = dropout.p > 0.0f ? dropout_scale<A>(dropout) : A(1);
    const std::size_t o_stride = s.A * D;  // out and dout are contiguous (B, S, A, D)
    A* P = scratch;                        // (S, S) probabilities, after dropout once dP is formed
    A* dP = P + S * S;   // (S, S) gradient of the probabilities, then of the scores
    A* Q = dP + S * S;   // (S, D)
    A* K = Q + S * D;    // (S, D)
    A* V = K + S * D;    // (S, D)
    A* dO = V + S * D;   // (S, D)
    A* dQ = dO + S * D;  // (S, D), added into dq once per query head
    A* dK = dQ + S * D;  // (S, D), summed over the query heads that share this key/value head
    A* dV = dK + S * D;  // (S, D), likewise; both added into dk, dv once per key/value head
    for (std::size_t b = 0; b < s.B; ++b) {
        for (std::size_t kvh = 0; kvh < s.KV; ++kvh) {
            gather_head(K, k + b * S * s.k_stride + kvh * D, s.k_stride, S, D);
            gather_head(V, v + b * S * s.v_stride + kvh * D, s.v_stride, S, D);
            std::fill(dK, dK + S * D, A(0));
            std::fill(dV, dV + S * D, A(0));
            for (std::size_t h = kvh * group; h < (kvh + 1) * group; ++h) {
                gather_head(Q, q + b * S * s.q_stride + h * D, s.q_stride, S, D);
                const T* dout_h = dout + b * S * o_stride + h * D;
                gather_head(dO, dout_h, o_stride, S, D);
                if (!probs) gemm<A>(false, true, S, S, D, scale, Q, D, K, D, A(0), P, S);
                gemm<A>(false, true, S, S, D, A(1), dO, D, V, D, A(0), dP, S);
                const std::uint64_t base = attention_dropout_base(s, dropout, b, h);
                for (std::size_t i = 0; i < S; ++i) {
                    A* p = P + i * S;
                    A* dp = dP + i * S;
                    const T* prow = probs ? probs + ((b * s.A + h) * S + i) * S : nullptr;
                    A delta = 0;
                    if (prow) {
                        for (std::size_t j = 0; j <= i; ++j)
                            delta += load(prow[j]) *
                                     dropout_factor(dropout, base + i * S + j, keep_scale) * dp[j];
                    } else {
                        // rowsum(dP * P) through the dropout mask equals dO_i . O_i, because O
                        // was formed from the dropped probabilities.
                        const T* out_h = out + b * S * o_stride + h * D;
                        for (std::size_t d = 0; d < D; ++d)
                            delta += load(dout_h[i * o_stride + d]) * load(out_h[i * o_stride + d]);
                    }
                    for (std::size_t j = 0; j <= i; ++j) {
                        const A prob =
                            prow ? load(prow[j]) : std::exp(p[j] - lse[(b * s.A + h) * S + i]);
                        const A mask = dropout_factor(dropout, base + i * S + j, keep_scale);
                        p[j] = prob * mask;
                        dp[j] = prob * (dp[j] * mask - delta);
                    }
                    for (std::size_t j = i + 1; j < S; ++j) p[j] = dp[j] = 0;
                }
                gemm<A>(true, false, S, D, S, A(1), P, S, dO, D, A(1), dV, D);
                gemm<A>(false, false, S, D, S, scale, dP, S, K, D, A(0), dQ, D);
                gemm<A>(true, false, S, D, S, scale, dP, S, Q, D, A(1), dK, D);
                add_head(dq + b * S * s.q_stride + h * D, dQ, s.q_stride, S, D);
            }
            add_head(dk + b * S * s.k_stride + kvh * D, dK, s.k_stride, S, D);
            add_head(dv + b * S * s.v_stride + kvh * D, dV, s.v_stride, S, D);
        }
    }
}

}  // namespace

template <class T>
std::size_t attention_forward_scratch(const AttentionShape& s) {
    return s.S * s.S + 4 * s.S * s.D;  // P, then q, k, v and out of one head
}

template <class T>
std::size_t attention_backward_scratch(const AttentionShape& s) {
    return 2 * s.S * s.S +
           7 * s.S * s.D;  // P and dP, then q, k, v, dout, dq, dk and dv of one head
}

template <class T>
void attention_forward(T* out, acc_t<T>* lse, const T* q, const T* k, const T* v,
                       const AttentionShape& s, const DropoutKey& dropout, acc_t<T>* scratch) {
    forward_core<T>(out, lse, nullptr, q, k, v, s, dropout, scratch);
}

template <class T>
void attention_backward(T* dq, T* dk, T* dv, const T* dout, const T* q, const T* k, const T* v,
                        const T* out, const acc_t<T>* lse, const AttentionShape& s,
                        const DropoutKey& dropout, acc_t<T>* scratch) {
    backward_core<T>(dq, dk, dv, dout, q, k, v, out, lse, nullptr, s, dropout, scratch);
}

template <class T>
void eager_attention_forward(T* out, T* probs, const T* q, const T* k, const T* v,
                             const AttentionShape& s, const DropoutKey& dropout,
                             acc_t<T>* scratch) {
    forward_core<T>(out, nullptr, probs, q, k, v, s, dropout, scratch);
}

template <class T>
void eager_attention_backward(T* dq, T* dk, T* dv, const T* dout, const T* q, const T* k,
                              const T* v, const T* probs, const AttentionShape& s,
                              const DropoutKey& dropout, acc_t<T>* scratch) {
    backward_core<T>(dq, dk, dv, dout, q, k, v, nullptr, nullptr, probs, s, dropout, scratch);
}

#define REMAT_INSTANTIATE(T)                                                                       \
    template void rotary_forward<T>(T*, const T*, std::size_t, std::size_t, std::size_t,           \
                                    std::size_t);                                                  \
    template void rotary_backward<T>(T*, const T*, std::size_t, std::size_t, std::size_t,          \
                                     std::size_t);                                                 \
    template std::size_t attention_forward_scratch<T>(const AttentionShape&);                      \
    template void attention_forward<T>(T*, acc_t<T>*, const T*, const T*, const T*,                \
                                       const AttentionShape&, const DropoutKey&, acc_t<T>*);       \
    template std::size_t attention_backward_scratch<T>(const AttentionShape&);                     \
    template void attention_backward<T>(T*, T*, T*, const T*, const T*, const T*, const T*,        \
                                        const T*, const acc_t<T>*, const AttentionShape&,          \
                                        const DropoutKey&, acc_t<T>*);                             \
    template void eager_attention_forward<T>(T*, T*, const T*, const T*, const T*,                 \
                                             const AttentionShape&, const DropoutKey&, acc_t<T>*); \
    template void eager_attention_backward<T>(T*, T*, T*, const T*, const T*, const T*, const T*,  \
                                              const T*, const AttentionShape&, const DropoutKey&,  \
                                              acc_t<T>*);
REMAT_INSTANTIATE(float)
REMAT_INSTANTIATE(bf16)
REMAT_INSTANTIATE(double)
#undef REMAT_INSTANTIATE

}  // namespace remat::cpu
