// The CUDA backend's math: launchers with the CPU kernels' semantics (runtime/cpu/kernels.hpp),
// on device pointers, each on an explicit stream and checked after launch. T is float or
// rt::bf16 (bit-compatible with __nv_bfloat16; kernels reinterpret it). Arithmetic in fp32.
// Every backward accumulates (+=) into its gradients. Launchers never allocate: workspaces come
// from the caller, with sizes from the *_workspace functions (bytes).
//
//   cuda::layernorm_forward<T>(out, mean, rstd, inp, w, b, N, H, stream);
//
// Kernels are split by family: kernels_elementwise.cu, kernels_norm.cu, kernels_model.cu
// (embedding, rotary, cross-entropy, AdamW), kernels_gemm.cu (cuBLAS linear),
// kernels_attention.cu. Dropout draws rt::uniform01(seed, stream, index) exactly as the CPU does,
// so both backends drop the same elements.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "runtime/numeric.hpp"

namespace remat::rt::cuda {

// ---- elementwise (kernels_elementwise.cu) ----
template <class T>
void add_forward(T* out, const T* a, const T* b, std::size_t n, cudaStream_t s);
template <class T>
void accumulate(T* dst, const T* src, std::size_t n, cudaStream_t s);
template <class T>
void dropout_forward(T* out, const T* inp, std::size_t n, const DropoutKey& key, cudaStream_t s);
template <class T>
void dropout_backward(T* dinp, const T* dout, std::size_t n, const DropoutKey& key, cudaStream_t s);
template <class T>
void gelu_forward(T* out, const T* inp, std::size_t n, cudaStream_t s);
template <class T>
void gelu_backward(T* dinp, const T* dout, const T* inp, std::size_t n, cudaStream_t s);
template <class T>
void swiglu_forward(T* out, const T* gate, const T* up, std::size_t n, cudaStream_t s);
template <class T>
void swiglu_backward(T* dgate, T* dup, const T* dout, const T* gate, const T* up, std::size_t n,
                     cudaStream_t s);
// dst(n, fp32) += src(n, T)
template <class T>
void add_to_fp32(float* dst, const T* src, std::size_t n, cudaStream_t s);
// dst(n, T) = src(n, fp32) converted: FSDP's all-gather of fp32 shards into the compute dtype.
template <class T>
void convert_from_fp32(T* dst, const float* src, std::size_t n, cudaStream_t s);
void adamw_step(float* param, const float* grad, float* m, float* v, float* denom, std::size_t n,
                const AdamW& opt, std::uint64_t step, cudaStream_t s);

// ---- norms (kernels_norm.cu); statistics fp32, one per row ----
template <class T>
void layernorm_forward(T* out, float* mean, float* rstd, const T* inp, const T* weight,
                       const T* bias, std::size_t N, std::size_t H, cudaStream_t s);
template <class T>
void layernorm_backward(T* dinp, T* dweight, T* dbias, const T* dout, const T* inp, const T* weight,
                        const float* mean, const float* rstd, std::size_t N, std::size_t H,
                        cudaStream_t s);
template <class T>
void rmsnorm_forward(T* out, float* rstd, const T* inp, const T* weight, std::size_t N,
                     std::size_t H, cudaStream_t s);
template <class T>
void rmsnorm_backward(T* dinp, T* dweight, const T* dout, const T* inp, const T* weight,
                      const float* rstd, std::size_t N, std::size_t H, cudaStream_t s);

// ---- embedding, rotary, cross-entropy (kernels_model.cu) ----
template <class T>
void embedding_forward(T* out, const std::int32_t* ids, const T* wte, const T* wpe, std::size_t N,
                       std::size_t S, std::size_t H, cudaStream_t s);
// Workspace: 8 N bytes (each row's link to the next row with its id, and whether it is the first).
std::uint64_t embedding_backward_workspace(std::size_t N);
template <class T>
void embedding_backward(T* dwte, T* dwpe, const T* dout, const std::int32_t* ids, std::size_t N,
                        std::size_t S, std::size_t H, void* workspace, cudaStream_t s);
template <class T>
void rotary_forward(T* out, const T* inp, std::size_t B, std::size_t S, std::size_t heads,
                    std::size_t D, cudaStream_t s);
template <class T>
void rotary_backward(T* dinp, const T* dout, std::size_t B, std::size_t S, std::size_t heads,
                     std::size_t D, cudaStream_t s);
// Sum over rows of the loss, written to *loss_sum (device, one double); lse(N).
template <class T>
void cross_entropy_forward(double* loss_sum, float* lse, const T* logits,
                           const std::int32_t* targets, std::size_t N, std::size_t V,
                           cudaStream_t s);
template <class T>
void cross_entropy_backward(T* dlogits, const T* logits, const float* lse,
                            const std::int32_t* targets, std::size_t N, std::size_t V, float scale,
                            cudaStream_t s);

// ---- linear through cuBLAS (kernels_gemm.cu): bf16 inputs, fp32 accumulation; fp32 with TF32 off
// ----
template <class T>
std::uint64_t linear_forward_workspace(std::size_t N, std::size_t I, std::size_t O);
template <class T>
void linear_forward(T* out, const T* inp, const T* w, const T* bias, std::size_t N, std::size_t I,
                    std::size_t O, void* workspace, cublasHandle_t h, cudaStream_t s);
template <class T>
std::uint64_t linear_backward_workspace(std::size_t N, std::size_t I, std::size_t O);
template <class T>
void linear_backward(T* dinp, T* dw, T* dbias, const T* dout, const T* inp, const T* w,
                     std::size_t N, std::size_t I, std::size_t O, void* workspace, cublasHandle_t h,
                     cudaStream_t s);

// ---- causal attention (kernels_attention.cu): fused, flash-style; saves q, k, v, out and lse, no
// S x S ----
template <class T>
std::uint64_t attention_forward_workspace(const AttentionShape& a);  // 0
template <class T>
void attention_forward(T* out, float* lse, const T* q, const T* k, const T* v,
                       const AttentionShape& a, const DropoutKey& dropout, void* workspace,
                       cudaStream_t s);
template <class T>
std::uint64_t attention_backward_workspace(const AttentionShape& a);  // 4 B A S: delta
template <class T>
void attention_backward(T* dq, T* dk, T* dv, const T* dout, const T* q, const T* k, const T* v,
                        const T* out, const float* lse, const AttentionShape& a,
                        const DropoutKey& dropout, void* workspace, cudaStream_t s);

// ---- causal attention, eager (kernels_attention_eager.cu): cuBLAS scores and a causal softmax
// kernel, one batch row at a time; saves probs (B, A, S, S) (cpu::eager_attention_forward) ----
template <class T>
std::uint64_t eager_attention_forward_workspace(const AttentionShape& a);  // (4 + e) A S S
template <class T>
void eager_attention_forward(T* out, T* probs, const T* q, const T* k, const T* v,
                             const AttentionShape& a, const DropoutKey& dropout, void* workspace,
                             cublasHandle_t h, cudaStream_t s);
template <class T>
std::uint64_t eager_attention_backward_workspace(
    const AttentionShape& a);  // (4 + 2e) A S S + 8 S KV D
template <class T>
void eager_attention_backward(T* dq, T* dk, T* dv, const T* dout, const T* q, const T* k,
                              const T* v, const T* probs, const AttentionShape& a,
                              const DropoutKey& dropout, void* workspace, cublasHandle_t h,
                              cudaStream_t s);

}  // namespace remat::rt::cuda
