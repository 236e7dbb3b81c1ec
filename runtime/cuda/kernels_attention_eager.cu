// The eager attention core on the GPU (cpu::eager_attention_forward's semantics): the scores as
// cuBLAS GEMMs, a causal softmax kernel, and the probabilities P (B, A, S, S) saved in the
// storage type, as eager PyTorch code keeps them. One batch row at a time; within it, one strided
// batched GEMM per (query head within its group), batched over the key/value heads, so GQA needs
// no copies.
//
// Workspace, per batch row (reused for the next), e = sizeof(T):
//   forward,  4 A S S + e A S S bytes:
//     [0, 4 A S S)          scores (A, S, S) fp32, scaled by 1 / sqrt(D)
//     [4 A S S, +e A S S)   Pk (A, S, S): P where dropout keeps it, else 0 (exact in bf16; the
//                           PV GEMM's alpha applies 1 / (1 - p), as the CPU multiplies in fp32)
//   backward, 4 A S S + 2 e A S S + 8 S KV D bytes:
//     [0, 4 A S S)          dPd (A, S, S) fp32 = dO V^T, the gradient of the dropped probabilities
//     then e A S S          dS (A, S, S): the scores' gradient times 1 / sqrt(D), rounded to e
//                           as the GEMM operand (the CPU keeps it in fp32: bf16 differs there)
//     then e A S S          Pk (A, S, S), as forward; the dV GEMM's alpha applies 1 / (1 - p)
//     then 4 S KV D         dK (S, KV, D) fp32, summed over each key/value head's query heads
//     then 4 S KV D         dV (S, KV, D) fp32, likewise
// dq takes its GEMM with beta = 1 (one rounding per element); dk and dv are added from the fp32
// sums once per call, as on the CPU.
#include <cuda_bf16.h>

#include <cassert>
#include <climits>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "runtime/cuda/cuda_check.hpp"
#include "runtime/cuda/device.cuh"
#include "runtime/cuda/kernels.cuh"

namespace remat::rt::cuda {
namespace {

using namespace detail;

// Row-major strided-batched C = alpha op(A) op(B) + beta C, operands of storage type T (device
// pointers), C in fp32 or T; types and compute mode from detail::Gemm<T>, so fp32 never uses
// TF32. cuBLAS is column-major, so it is asked for C^T = op(B)^T op(A)^T, as detail::gemm does.
template <class T, class C>
void gemm_batched(cublasHandle_t h, bool ta, bool tb, std::size_t M, std::size_t N, std::size_t K,
                  float alpha, const device_t<T>* A, std::size_t lda, std::size_t stride_a,
                  const device_t<T>* B, std::size_t ldb, std::size_t stride_b, float beta, C* Cm,
                  std::size_t ldc, std::size_t stride_c, std::size_t batch) {
    const cudaDataType_t c_type = std::is_same_v<C, float> ? CUDA_R_32F : Gemm<T>::data_type;
    CUBLAS_CHECK(cublasGemmStridedBatchedEx(
        h, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, blas_int(N), blas_int(M),
        blas_int(K), &alpha, B, Gemm<T>::data_type, blas_int(ldb), static_cast<long long>(stride_b),
        A, Gemm<T>::data_type, blas_int(lda), static_cast<long long>(stride_a), &beta, Cm, c_type,
        blas_int(ldc), static_cast<long long>(stride_c), blas_int(batch), Gemm<T>::compute,
        CUBLAS_GEMM_DEFAULT));
}

void bind(cublasHandle_t h, cudaStream_t s) {
    CUBLAS_CHECK(cublasSetStream(h, s));
    CUBLAS_CHECK(cublasSetPointerMode(h, CUBLAS_POINTER_MODE_HOST));
}

struct Rows {
    std::size_t A, S;
    std::uint64_t base;  // dropout index of (this batch row, head 0, 0, 0)
    DropoutKey key;
    float keep;  // 1 / (1 - p)
};

// One block per (head, row i) of one batch row: P = softmax of the scaled scores over j <= i,
// rounded once into probs (0 above the diagonal), and Pk = that rounded P where dropout keeps it.
template <class E>
__global__ void softmax_kernel(E* probs, E* pk, const float* scores, Rows r) {
    const std::size_t row = blockIdx.x, i = row % r.S;
    const float* s = scores + row * r.S;
    E* p = probs + row * r.S;
    E* d = pk + row * r.S;
    float mx = -INFINITY;
    for (std::size_t j = threadIdx.x; j <= i; j += blockDim.x) mx = fmaxf(mx, s[j]);
    mx = block_max(mx);
    float sum = 0.0f;
    for (std::size_t j = threadIdx.x; j <= i; j += blockDim.x) sum += expf(s[j] - mx);
    sum = block_sum(sum);
    const float l = mx + logf(sum);
    const std::uint64_t index = r.base + row * r.S;  // (h, i, 0) of this batch row
    for (std::size_t j = threadIdx.x; j < r.S; j += blockDim.x) {
        const E e = st<E>(j <= i ? expf(s[j] - l) : 0.0f);
        p[j] = e;
        d[j] =
            j <= i && dropout_keep(r.key.seed, r.key.stream, index + j, r.key.p) ? e : st<E>(0.0f);
    }
}

// One block per (head, row i): from the saved P and dPd = dO V^T, delta = rowsum(P * mask * dPd),
// dS = P (mask dPd - delta) / sqrt(D) and Pk = P where kept, both as GEMM operands.
template <class E>
__global__ void softmax_backward_kernel(E* ds, E* pk, const E* probs, const float* dpd, Rows r,
                                        float scale) {
    const std::size_t row = blockIdx.x, i = row % r.S;
    const E* p = probs + row * r.S;
    const float* g = dpd + row * r.S;
    const std::uint64_t index = r.base + row * r.S;
    float delta = 0.0f;
    for (std::size_t j = threadIdx.x; j <= i; j += blockDim.x)
        delta += ld(p[j]) * dropout_factor(r.key, index + j, r.keep) * g[j];
    delta = block_sum(delta);
    for (std::size_t j = threadIdx.x; j < r.S; j += blockDim.x) {
        float dsj = 0.0f;
        E pkj = st<E>(0.0f);
        if (j <= i) {
            const float prob = ld(p[j]);
            const float mask = dropout_factor(r.key, index + j, r.keep);
            dsj = prob * (mask * g[j] - delta) * scale;
            if (mask != 0.0f) pkj = p[j];
        }
        ds[row * r.S + j] = st<E>(dsj);
        pk[row * r.S + j] = pkj;
    }
}

// dst rows (`stride` apart, `width` elements each) += src (rows, width) fp32: one rounding each.
template <class E>
__global__ void add_rows_kernel(E* dst, std::size_t stride, const float* src, std::size_t rows,
                                std::size_t width) {
    for (std::size_t x = thread_index(); x < rows * width; x += thread_count()) {
        E& e = dst[(x / width) * stride + x % width];
        e = st<E>(ld(e) + src[x]);
    }
}

unsigned row_blocks(std::size_t n) {
    assert(n <= static_cast<std::size_t>(INT_MAX) && "too many attention rows for one grid");
    return static_cast<unsigned>(n);
}

Rows rows_of(const AttentionShape& a, const DropoutKey& key, std::size_t b) {
    assert(key.p >= 0.0f && key.p < 1.0f && "attention dropout probability must lie in [0, 1)");
    return {a.A, a.S, (key.index0 + b) * a.A * a.S * a.S, key,
            key.p > 0.0f ? 1.0f / (1.0f - key.p) : 1.0f};
}

}  // namespace

template <class T>
std::uint64_t eager_attention_forward_workspace(const AttentionShape& a) {
    return (sizeof(float) + sizeof(T)) * a.A * a.S * a.S;
}

template <class T>
void eager_attention_forward(T* out, T* probs, const T* q, const T* k, const T* v,
                             const AttentionShape& a, const DropoutKey& dropout, void* workspace,
                             cublasHandle_t h, cudaStream_t s) {
    assert(a.KV > 0 && a.A % a.KV == 0 && "query heads must be a multiple of key/value heads");
    if (a.B == 0 || a.S == 0 || a.A == 0 || a.D == 0) return;
    using E = device_t<T>;
    const std::size_t S = a.S, D = a.D, A = a.A, KV = a.KV, group = A / KV, SS = S * S;
    const float scale = 1.0f / std::sqrt(static_cast<float>(D));
    float* scores = static_cast<float*>(workspace);
    E* pk = reinterpret_cast<E*>(scores + A * SS);
    bind(h, s);
    for (std::size_t b = 0; b < a.B; ++b) {
        const E* qb = dev(q) + b * S * a.q_stride;
        const E* kb = dev(k) + b * S * a.k_stride;
        const E* vb = dev(v) + b * S * a.v_stride;
        E* pb = dev(probs) + b * A * SS;
        // Head h = kvh * group + g reads key/value head kvh: batched over kvh for each g.
        for (std::size_t g = 0; g < group; ++g)
            gemm_batched<T>(h, false, true, S, S, D, scale, qb + g * D, a.q_stride, group * D, kb,
                            a.k_stride, D, 0.0f, scores + g * SS, S, group * SS, KV);
        const Rows rows = rows_of(a, dropout, b);
        softmax_kernel<<<row_blocks(A * S), block_threads, 0, s>>>(pb, pk, scores, rows);
        CUDA_CHECK(cudaGetLastError());
        E* ob = dev(out) + b * S * A * D;
        for (std::size_t g = 0; g < group; ++g)  // out = keep * Pk V
            gemm_batched<T>(h, false, false, S, D, S, rows.keep, pk + g * SS, S, group * SS, vb,
                            a.v_stride, D, 0.0f, ob + g * D, A * D, group * D, KV);
    }
}

template <class T>
std::uint64_t eager_attention_backward_workspace(const AttentionShape& a) {
    return (sizeof(float) + 2 * sizeof(T)) * a.A * a.S * a.S + 2 * sizeof(float) * a.S * a.KV * a.D;
}

template <class T>
void eager_attention_backward(T* dq, T* dk, T* dv, const T* dout, const T* q, const T* k,
                              const T* v, const T* probs, const AttentionShape& a,
                              const DropoutKey& dropout, void* workspace, cublasHandle_t h,
                              cudaStream_t s) {
    assert(a.KV > 0 && a.A % a.KV == 0 && "query heads must be a multiple of key/value heads");
    if (a.B == 0 || a.S == 0 || a.A == 0 || a.D == 0) return;
    using E = device_t<T>;
    const std::size_t S = a.S, D = a.D, A = a.A, KV = a.KV, group = A / KV, SS = S * S;
    const float scale = 1.0f / std::sqrt(static_cast<float>(D));
    float* dpd = static_cast<float*>(workspace);
    E* ds = reinterpret_cast<E*>(dpd + A * SS);
    E* pk = ds + A * SS;
    float* dK = reinterpret_cast<float*>(pk + A * SS);  // (S, KV, D)
    float* dV = dK + S * KV * D;
    assert(reinterpret_cast<std::uintptr_t>(dK) % alignof(float) == 0);
    bind(h, s);
    for (std::size_t b = 0; b < a.B; ++b) {
        const E* qb = dev(q) + b * S * a.q_stride;
        const E* kb = dev(k) + b * S * a.k_stride;
        const E* vb = dev(v) + b * S * a.v_stride;
        const E* dob = dev(dout) + b * S * A * D;
        const E* pb = dev(probs) + b * A * SS;
        E* dqb = dev(dq) + b * S * a.q_stride;
        for (std::size_t g = 0; g < group; ++g)  // dPd = dO V^T
            gemm_batched<T>(h, false, true, S, S, D, 1.0f, dob + g * D, A * D, group * D, vb,
                            a.v_stride, D, 0.0f, dpd + g * SS, S, group * SS, KV);
        const Rows rows = rows_of(a, dropout, b);
        softmax_backward_kernel<<<row_blocks(A * S), block_threads, 0, s>>>(ds, pk, pb, dpd, rows,
                                                                            scale);
        CUDA_CHECK(cudaGetLastError());
        for (std::size_t g = 0; g < group; ++g) {
            const float sum =
                g == 0 ? 0.0f : 1.0f;  // the first query head of each group starts the sums
            // dq += dS K; dK (+)= dS^T Q; dV (+)= keep Pk^T dO
            gemm_batched<T>(h, false, false, S, D, S, 1.0f, ds + g * SS, S, group * SS, kb,
                            a.k_stride, D, 1.0f, dqb + g * D, a.q_stride, group * D, KV);
            gemm_batched<T>(h, true, false, S, D, S, 1.0f, ds + g * SS, S, group * SS, qb + g * D,
                            a.q_stride, group * D, sum, dK, KV * D, D, KV);
            gemm_batched<T>(h, true, false, S, D, S, rows.keep, pk + g * SS, S, group * SS,
                            dob + g * D, A * D, group * D, sum, dV, KV * D, D, KV);
        }
        add_rows_kernel<<<grid_for(S * KV * D), block_threads, 0, s>>>(dev(dk) + b * S * a.k_stride,
                                                                       a.k_stride, dK, S, KV * D);
        CUDA_CHECK(cudaGetLastError());
        add_rows_kernel<<<grid_for(S * KV * D), block_threads, 0, s>>>(dev(dv) + b * S * a.v_stride,
                                                                       a.v_stride, dV, S, KV * D);
        CUDA_CHECK(cudaGetLastError());
    }
}

#define REMAT_INSTANTIATE(T)                                                                      \
    template std::uint64_t eager_attention_forward_workspace<T>(const AttentionShape&);           \
    template void eager_attention_forward<T>(T*, T*, const T*, const T*, const T*,                \
                                             const AttentionShape&, const DropoutKey&, void*,     \
                                             cublasHandle_t, cudaStream_t);                       \
    template std::uint64_t eager_attention_backward_workspace<T>(const AttentionShape&);          \
    template void eager_attention_backward<T>(T*, T*, T*, const T*, const T*, const T*, const T*, \
                                              const T*, const AttentionShape&, const DropoutKey&, \
                                              void*, cublasHandle_t, cudaStream_t);
REMAT_INSTANTIATE(float)
REMAT_INSTANTIATE(rt::bf16)
#undef REMAT_INSTANTIATE

}  // namespace remat::rt::cuda
