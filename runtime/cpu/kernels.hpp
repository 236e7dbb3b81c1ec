// The CPU backend's math: forward and backward of every op the runtime's transformer blocks
// use, on raw row-major arrays. Kernels never allocate: every buffer, fp32 staging and scratch
// included, comes from the caller (the executor takes it from the rank's counting allocator),
// so that the measured bytes are all the bytes. Sizes of staging and scratch buffers are given
// by the `*_staging` / `*_scratch` functions beside each kernel.
//
//   linear_forward<bf16>(out, inp, w, bias, N, I, O, staging);   // staging:
//   linear_forward_staging<bf16>(N, I, O) floats linear_backward<bf16>(dinp, dw, dbias, dout, inp,
//   w, N, I, O, staging);
//
// Storage types T: float (fp32), bf16 (bf16-mixed activations and gathered weights) and double
// (the finite-difference tests). Arithmetic runs in acc_t<T>: double for double, float otherwise.
// GEMMs go through OpenBLAS (sgemm, dgemm); OpenBLAS has no bf16 GEMM, so bf16 GEMMs convert
// their operands into fp32 staging buffers the caller provides.
//
// Conventions (llm.c's): outputs first, then inputs, then sizes. Gradients carry a `d` prefix.
// A backward *accumulates* (+=) into every gradient it produces, activations' and parameters'
// alike: a tensor read by several ops (a residual input, the input of q, k and v projections)
// receives the sum of their gradients in one buffer, which the executor zeroes when it
// allocates it. (CHANGED: earlier drafts said activation gradients are written with =.) Shapes: N
// rows (= B*S), S sequence, H hidden, A heads, KV key/value heads, D head dimension, F FFN width, V
// vocabulary.
#pragma once
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "runtime/numeric.hpp"

namespace remat::cpu {

using rt::acc_t;
using rt::AdamW;
using rt::AttentionShape;
using rt::bf16;
using rt::DropoutKey;
using rt::load;
using rt::store;
using rt::to_bf16;
using rt::to_float;

// ---- counter-based random numbers (dropout) ----
// A pure function of (seed, stream, index): the same mask on recompute, on any rank, in any
// order. `stream` names the op and step (the executor derives it); `index` is the element's
// position in the global batch, so W ranks with b rows draw what one rank with W*b rows draws.
using rt::dropout_factor;
using rt::dropout_keep;
using rt::uniform01;

// ---- elementwise ----
template <class T>
void convert(acc_t<T>* dst, const T* src, std::size_t n);  // to arithmetic type
template <class T>
void convert_back(T* dst, const acc_t<T>* src, std::size_t n);  // from arithmetic type
template <class T>
void add_forward(T* out, const T* a, const T* b, std::size_t n);
template <class T>
void accumulate(T* dst, const T* src, std::size_t n);  // dst += src

// out = dropout(inp); backward regenerates the mask from the key (nothing is saved).
template <class T>
void dropout_forward(T* out, const T* inp, std::size_t n, const DropoutKey& key);
template <class T>
void dropout_backward(T* dinp, const T* dout, std::size_t n, const DropoutKey& key);

// GELU, tanh approximation (GPT-2's gelu_new): saves its input.
template <class T>
void gelu_forward(T* out, const T* inp, std::size_t n);
template <class T>
void gelu_backward(T* dinp, const T* dout, const T* inp, std::size_t n);

// SwiGLU: out = silu(gate) * up; saves gate and up.
template <class T>
void swiglu_forward(T* out, const T* gate, const T* up, std::size_t n);
template <class T>
void swiglu_backward(T* dgate, T* dup, const T* dout, const T* gate, const T* up, std::size_t n);

// ---- norms (statistics in acc_t<T>, one per row) ----
template <class T>
void layernorm_forward(T* out, acc_t<T>* mean, acc_t<T>* rstd, const T* inp, const T* weight,
                       const T* bias, std::size_t N, std::size_t H);
template <class T>
void layernorm_backward(T* dinp, T* dweight, T* dbias, const T* dout, const T* inp, const T* weight,
                        const acc_t<T>* mean, const acc_t<T>* rstd, std::size_t N, std::size_t H);
template <class T>
void rmsnorm_forward(T* out, acc_t<T>* rstd, const T* inp, const T* weight, std::size_t N,
                     std::size_t H);
template <class T>
void rmsnorm_backward(T* dinp, T* dweight, const T* dout, const T* inp, const T* weight,
                      const acc_t<T>* rstd, std::size_t N, std::size_t H);

// ---- GEMM ----
// Row-major C(M, N) = alpha * op(A) * op(B) + beta * C through cblas; T = float or double.
template <class T>
void gemm(bool trans_a, bool trans_b, std::size_t M, std::size_t N, std::size_t K, acc_t<T> alpha,
          const T* A, std::size_t lda, const T* B, std::size_t ldb, acc_t<T> beta, T* C,
          std::size_t ldc);

// out(N, O) = inp(N, I) * w(O, I)^T + bias(O), as torch.nn.Linear (bias may be null).
// Staging, in floats: 0 for float and double; for bf16 the fp32 copies of inp, w and out.
template <class T>
std::size_t linear_forward_staging(std::size_t N, std::size_t I, std::size_t O);
template <class T>
void linear_forward(T* out, const T* inp, const T* w, const T* bias, std::size_t N, std::size_t I,
                    std::size_t O, float* staging);
// dinp += dout * w; dw += dout^T * inp; dbias += column sums of dout (dbias may be null).
// Staging for bf16: fp32 copies of dout, w, inp, dinp and dw.
template <class T>
std::size_t linear_backward_staging(std::size_t N, std::size_t I, std::size_t O);
template <class T>
void linear_backward(T* dinp, T* dw, T* dbias, const T* dout, const T* inp, const T* w,
                     std::size_t N, std::size_t I, std::size_t O, float* staging);

// ---- rotary position embedding (Llama, theta 10000, rotate-half convention of HF) ----
// x(B, S, heads, D) -> out; position of row s is s. cos/sin are computed, not stored.
template <class T>
void rotary_forward(T* out, const T* inp, std::size_t B, std::size_t S, std::size_t heads,
                    std::size_t D);
template <class T>
void rotary_backward(T* dinp, const T* dout, std::size_t B, std::size_t S, std::size_t heads,
                     std::size_t D);

// ---- causal attention (flash-style: saves q, k, v, out and the log-sum-exp, no S x S tensor) ----
// q(B, S, A, D), k and v (B, S, KV, D), each row of a tensor starting `*_stride` elements after
// the previous one (3*H for GPT-2's fused qkv, A*D or KV*D for separate tensors); out(B, S, A, D)
// contiguous; lse(B, A, S). Head h reads key/value head h / (A / KV). Scale 1/sqrt(D).
// Dropout on the probabilities (p = 0: none) is regenerated in backward from the key; element
// (b, h, i, j) has index ((b0 + b) * A + h) * S * S + i * S + j, b0 = key.index0.
// Scratch in acc_t<T> elements, per call (the kernel walks one (b, head) at a time).
template <class T>
std::size_t attention_forward_scratch(const AttentionShape& s);
template <class T>
void attention_forward(T* out, acc_t<T>* lse, const T* q, const T* k, const T* v,
                       const AttentionShape& s, const DropoutKey& dropout, acc_t<T>* scratch);
template <class T>
std::size_t attention_backward_scratch(const AttentionShape& s);
// dq, dk, dv use the same strides as q, k, v and are accumulated (+=) where they lie.
template <class T>
void attention_backward(T* dq, T* dk, T* dv, const T* dout, const T* q, const T* k, const T* v,
                        const T* out, const acc_t<T>* lse, const AttentionShape& s,
                        const DropoutKey& dropout, acc_t<T>* scratch);

// ---- causal attention, eager: materialized scores and a causal softmax; saves the probabilities
// ---- Shapes, strides, scale and dropout as above. probs(B, A, S, S): softmax of the fp32 scores
// over the causal prefix, rounded to T (0 above the diagonal), before dropout; out is formed
// from those rounded values times the dropout factor. The backward reads probs instead of
// recomputing them and takes delta = rowsum(P * dP) through the mask. Scratch: the flash core's
// (attention_forward_scratch, attention_backward_scratch).
template <class T>
void eager_attention_forward(T* out, T* probs, const T* q, const T* k, const T* v,
                             const AttentionShape& s, const DropoutKey& dropout, acc_t<T>* scratch);
template <class T>
void eager_attention_backward(T* dq, T* dk, T* dv, const T* dout, const T* q, const T* k,
                              const T* v, const T* probs, const AttentionShape& s,
                              const DropoutKey& dropout, acc_t<T>* scratch);

// ---- embedding ----
// out(N, H) = wte[ids[n]] + (wpe ? wpe[n % S] : 0).
template <class T>
void embedding_forward(T* out, const std::int32_t* ids, const T* wte, const T* wpe, std::size_t N,
                       std::size_t S, std::size_t H);
template <class T>
void embedding_backward(T* dwte, T* dwpe, const T* dout, const std::int32_t* ids, std::size_t N,
                        std::size_t S, std::size_t H);

// ---- cross-entropy over the vocabulary ----
// Returns the sum over the N rows of -log softmax(logits)[target]; writes lse(N).
template <class T>
double cross_entropy_forward(acc_t<T>* lse, const T* logits, const std::int32_t* targets,
                             std::size_t N, std::size_t V);
// dlogits += scale * (softmax(logits) - onehot(target)); scale = dloss/d(sum), e.g. 1/tokens.
template <class T>
void cross_entropy_backward(T* dlogits, const T* logits, const acc_t<T>* lse,
                            const std::int32_t* targets, std::size_t N, std::size_t V,
                            acc_t<T> scale);

// ---- AdamW (decoupled weight decay), on fp32 (or double) master parameters ----
// `denom` is a parameter-sized temporary (sqrt(v_hat) + eps), as torch's foreach AdamW makes.
template <class T>
void adamw_step(T* param, const T* grad, T* m, T* v, T* denom, std::size_t n, const AdamW& opt,
                std::uint64_t step);

}  // namespace remat::cpu
