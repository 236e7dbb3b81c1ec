// Causal self-attention (GQA, attention dropout) forward and backward on the GPU, with the CPU
// kernels' semantics (runtime/cpu/kernels_attention.cpp): saves q, k, v, out and the row
// log-sum-exp lse(B, A, S); the backward recomputes the probabilities from q, k and lse and
// accumulates (+=) into dq, dk and dv.
//
// How: the host walks one (batch, head) at a time. A head's q, k, v rows (strided, bf16 or fp32)
// are gathered into dense fp32 blocks of the caller's workspace, the S x S products run as fp32
// cuBLAS GEMMs (CUBLAS_COMPUTE_32F_PEDANTIC: never TF32, for bf16 storage too) and one block
// per row does the mask, softmax and dropout. Dropout draws rt::uniform01 exactly as the CPU
// does, so both backends drop the same elements.
//
// Deliberately not here: no flash-style tiling, no fused kernel, no streams of its own and no
// cudaMalloc. The S x S matrices live only in the caller's workspace, reused for every
// (batch, head), so the transient is O(S^2) per call and the saved state stays O(S).
//
// Workspace layout, in fp32 elements (bytes = 4 * elements), the CPU's scratch layout:
//   forward,  attention_forward_workspace = 4 * (S*S + 4*S*D) bytes:
//     [0, S*S)                P   (S, S) scores Q K^T / sqrt(D), then in place the probabilities
//                                 softmax(scores) times the dropout factor, upper triangle 0
//     [S*S + 0*S*D, +S*D)     Q   (S, D) this query head's q, dense
//     [S*S + 1*S*D, +S*D)     K   (S, D) its key/value head's k, dense
//     [S*S + 2*S*D, +S*D)     V   (S, D) its key/value head's v, dense
//     [S*S + 3*S*D, +S*D)     O   (S, D) P V, before it is stored into out
//   backward, attention_backward_workspace = 4 * (2*S*S + 7*S*D) bytes:
//     [0, S*S)                P   (S, S) scores recomputed, then in place the dropped
//                                 probabilities (softmax from the saved lse times the dropout
//                                 factor), upper triangle 0
//     [S*S, 2*S*S)            dP  (S, S) dO V^T, then in place the gradient of the scaled
//                                 scores (the dQ and dK GEMMs apply 1/sqrt(D)), upper triangle 0
//     [2*S*S + 0*S*D, +S*D)   Q   (S, D) this query head's q, dense
//     [2*S*S + 1*S*D, +S*D)   K   (S, D) the key/value head's k, dense
//     [2*S*S + 2*S*D, +S*D)   V   (S, D) the key/value head's v, dense
//     [2*S*S + 3*S*D, +S*D)   dO  (S, D) this query head's dout, dense
//     [2*S*S + 4*S*D, +S*D)   dQ  (S, D) this query head's gradient of q
//     [2*S*S + 5*S*D, +S*D)   dK  (S, D) the gradient of k summed over the query heads that
//                                 share the key/value head, from zero
//     [2*S*S + 6*S*D, +S*D)   dV  (S, D) likewise for v
// dQ is added into dq once per query head, dK and dV into dk and dv once per key/value head, so
// each stored element, bf16 included, is rounded once per call, as on the CPU.
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

// The handle may be shared: every call binds it to this stream, with alpha and beta on the host.
void bind(cublasHandle_t h, cudaStream_t s) {
    CUBLAS_CHECK(cublasSetStream(h, s));
    CUBLAS_CHECK(cublasSetPointerMode(h, CUBLAS_POINTER_MODE_HOST));
}

constexpr int threads = 256;  // a multiple of 32: block_reduce works warp by warp

unsigned blocks_for(std::size_t n) {
    const std::size_t b = (n + threads - 1) / threads;
    assert(b <= static_cast<std::size_t>(INT_MAX) && "grid too large");
    return static_cast<unsigned>(b);
}

unsigned row_blocks(std::size_t S) {
    assert(S <= static_cast<std::size_t>(INT_MAX) && "sequence too long for one block per row");
    return static_cast<unsigned>(S);
}

// Index of probability (b, h, 0, 0) in the dropout stream, as documented in kernels.hpp.
std::uint64_t dropout_base(const AttentionShape& a, const DropoutKey& key, std::size_t b,
                           std::size_t h) {
    return ((key.index0 + b) * a.A + h) * a.S * a.S;
}

float keep_scale(const DropoutKey& key) {
    assert(key.p >= 0.0f && key.p < 1.0f && "attention dropout probability must lie in [0, 1)");
    return key.p > 0.0f ? 1.0f / (1.0f - key.p) : 1.0f;
}

// ---- kernels ----

struct MaxOp {
    __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};
struct SumOp {
    __device__ float operator()(float a, float b) const { return a + b; }
};

// Every thread of the block gets the same result, combined in the same order on every run.
// `shared` holds 32 floats; the leading barrier lets a previous reduction finish reading it.
template <class Op>
__device__ float block_reduce(float v, Op op, float* shared) {
    for (int offset = 16; offset > 0; offset >>= 1)
        v = op(v, __shfl_xor_sync(0xffffffffu, v, offset));
    __syncthreads();
    if (threadIdx.x % 32 == 0) shared[threadIdx.x / 32] = v;
    __syncthreads();
    float r = shared[0];
    for (unsigned w = 1; w < blockDim.x / 32; ++w) r = op(r, shared[w]);
    return r;
}

// What dropout multiplies probability `index` by: 0 when dropped, 1 / (1 - p) when kept.
__device__ inline float dropout_factor(const DropoutKey& key, std::uint64_t index, float keep) {
    if (key.p == 0.0f) return 1.0f;
    return rt::uniform01(key.seed, key.stream, index) >= key.p ? keep : 0.0f;
}

// dst(S, D) dense fp32 = the S rows of one head, `stride` elements apart.
template <class D>
__global__ void gather_head_kernel(float* dst, const D* src, std::size_t stride, std::size_t S,
                                   std::size_t Dh) {
    const std::size_t idx = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (idx >= S * Dh) return;
    dst[idx] = ld(src[(idx / Dh) * stride + idx % Dh]);
}

// The S rows of one head = (add: their old value +) src(S, D): one rounding per element.
template <class D>
__global__ void store_head_kernel(D* dst, const float* src, std::size_t stride, std::size_t S,
                                  std::size_t Dh, bool add) {
    const std::size_t idx = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (idx >= S * Dh) return;
    D& x = dst[(idx / Dh) * stride + idx % Dh];
    x = st<D>(add ? ld(x) + src[idx] : src[idx]);
}

struct SoftmaxRows {
    float* P;    // (S, S) scaled scores in, dropped probabilities out
    float* lse;  // (S) this head's row log-sum-exp
    std::size_t S;
    std::uint64_t base;  // dropout index of element (i, j) = base + i * S + j
    DropoutKey key;
    float keep;  // 1 / (1 - p)
};

// One block per row i: softmax over the causal prefix j <= i, then dropout; j > i set to 0.
__global__ void softmax_rows_kernel(SoftmaxRows r) {
    __shared__ float shared[32];
    const std::size_t i = blockIdx.x;
    float* p = r.P + i * r.S;
    float mx = -INFINITY;
    for (std::size_t j = threadIdx.x; j <= i; j += blockDim.x) mx = fmaxf(mx, p[j]);
    mx = block_reduce(mx, MaxOp{}, shared);
    float sum = 0.0f;
    for (std::size_t j = threadIdx.x; j <= i; j += blockDim.x) sum += expf(p[j] - mx);
    sum = block_reduce(sum, SumOp{}, shared);
    const float l = mx + logf(sum);
    if (threadIdx.x == 0) r.lse[i] = l;
    const std::uint64_t row_base = r.base + i * r.S;
    for (std::size_t j = threadIdx.x; j < r.S; j += blockDim.x)
        p[j] = j <= i ? expf(p[j] - l) * dropout_factor(r.key, row_base + j, r.keep) : 0.0f;
}

template <class D>
struct BackwardRows {
    float* P;          // (S, S) scaled scores in, dropped probabilities out
    float* dP;         // (S, S) dO V^T in, gradient of the scaled scores out
    const D* out;      // this head's out rows, o_stride apart
    const D* dout;     // this head's dout rows, o_stride apart
    const float* lse;  // (S) this head's saved row log-sum-exp
    std::size_t S, Dh, o_stride;
    std::uint64_t base;  // dropout index of element (i, j) = base + i * S + j
    DropoutKey key;
    float keep;  // 1 / (1 - p)
};

// One block per row i. delta_i = dO_i . O_i equals rowsum(dP * P) through the dropout mask,
// because O was formed from the dropped probabilities; then dS = P * (dP * mask - delta).
template <class D>
__global__ void backward_rows_kernel(BackwardRows<D> r) {
    __shared__ float shared[32];
    const std::size_t i = blockIdx.x;
    float delta = 0.0f;
    for (std::size_t d = threadIdx.x; d < r.Dh; d += blockDim.x)
        delta += ld(r.dout[i * r.o_stride + d]) * ld(r.out[i * r.o_stride + d]);
    delta = block_reduce(delta, SumOp{}, shared);
    const float l = r.lse[i];
    float* p = r.P + i * r.S;
    float* dp = r.dP + i * r.S;
    const std::uint64_t row_base = r.base + i * r.S;
    for (std::size_t j = threadIdx.x; j < r.S; j += blockDim.x) {
        if (j <= i) {
            const float prob = expf(p[j] - l);
            const float mask = dropout_factor(r.key, row_base + j, r.keep);
            p[j] = prob * mask;
            dp[j] = prob * (dp[j] * mask - delta);
        } else {
            p[j] = 0.0f;
            dp[j] = 0.0f;
        }
    }
}

template <class D>
void gather_head(float* dst, const D* src, std::size_t stride, std::size_t S, std::size_t Dh,
                 cudaStream_t s) {
    gather_head_kernel<<<blocks_for(S * Dh), threads, 0, s>>>(dst, src, stride, S, Dh);
    CUDA_CHECK(cudaGetLastError());
}

template <class D>
void store_head(D* dst, const float* src, std::size_t stride, std::size_t S, std::size_t Dh,
                bool add, cudaStream_t s) {
    store_head_kernel<<<blocks_for(S * Dh), threads, 0, s>>>(dst, src, stride, S, Dh, add);
    CUDA_CHECK(cudaGetLastError());
}

}  // namespace

// ---- launchers ----

template <class T>
std::uint64_t attention_forward_workspace(const AttentionShape& a) {
    return sizeof(float) * (a.S * a.S + 4 * a.S * a.D);  // P, then q, k, v and out of one head
}

template <class T>
void attention_forward(T* out, float* lse, const T* q, const T* k, const T* v,
                       const AttentionShape& a, const DropoutKey& dropout, void* workspace,
                       cublasHandle_t h, cudaStream_t s) {
    const std::size_t S = a.S, D = a.D;
    assert(a.KV > 0 && a.A % a.KV == 0 && "query heads must be a multiple of key/value heads");
    if (a.B == 0 || S == 0 || a.A == 0 || D == 0) return;
    const std::size_t group = a.A / a.KV;
    const float scale = 1.0f / std::sqrt(static_cast<float>(D));
    const float keep = keep_scale(dropout);
    float* P = static_cast<float*>(workspace);  // (S, S) scores, then probabilities
    float* Q = P + S * S;                       // (S, D)
    float* K = Q + S * D;                       // (S, D)
    float* V = K + S * D;                       // (S, D)
    float* O = V + S * D;                       // (S, D)
    bind(h, s);
    for (std::size_t b = 0; b < a.B; ++b) {
        for (std::size_t kvh = 0; kvh < a.KV; ++kvh) {
            gather_head(K, dev(k) + b * S * a.k_stride + kvh * D, a.k_stride, S, D, s);
            gather_head(V, dev(v) + b * S * a.v_stride + kvh * D, a.v_stride, S, D, s);
            for (std::size_t hq = kvh * group; hq < (kvh + 1) * group; ++hq) {
                gather_head(Q, dev(q) + b * S * a.q_stride + hq * D, a.q_stride, S, D, s);
                // The upper triangle is computed, then discarded: simpler than a triangular GEMM.
                gemm(h, false, true, S, S, D, scale, Q, D, K, D, 0.0f, P, S);
                const SoftmaxRows rows{
                    P, lse + (b * a.A + hq) * S, S, dropout_base(a, dropout, b, hq), dropout, keep};
                softmax_rows_kernel<<<row_blocks(S), threads, 0, s>>>(rows);
                CUDA_CHECK(cudaGetLastError());
                gemm(h, false, false, S, D, S, 1.0f, P, S, V, D, 0.0f, O, D);
                store_head(dev(out) + b * S * a.A * D + hq * D, O, a.A * D, S, D, false, s);
            }
        }
    }
}

template <class T>
std::uint64_t attention_backward_workspace(const AttentionShape& a) {
    // P and dP, then q, k, v, dout, dq, dk and dv of one head
    return sizeof(float) * (2 * a.S * a.S + 7 * a.S * a.D);
}

template <class T>
void attention_backward(T* dq, T* dk, T* dv, const T* dout, const T* q, const T* k, const T* v,
                        const T* out, const float* lse, const AttentionShape& a,
                        const DropoutKey& dropout, void* workspace, cublasHandle_t h,
                        cudaStream_t s) {
    const std::size_t S = a.S, D = a.D;
    assert(a.KV > 0 && a.A % a.KV == 0 && "query heads must be a multiple of key/value heads");
    if (a.B == 0 || S == 0 || a.A == 0 || D == 0) return;
    const std::size_t group = a.A / a.KV;
    const std::size_t o_stride = a.A * D;  // out and dout are contiguous (B, S, A, D)
    const float scale = 1.0f / std::sqrt(static_cast<float>(D));
    const float keep = keep_scale(dropout);
    float* P = static_cast<float*>(workspace);  // (S, S) probabilities, dropped once dP is formed
    float* dP = P + S * S;                      // (S, S) gradient of the probabilities, then scores
    float* Q = dP + S * S;                      // (S, D)
    float* K = Q + S * D;                       // (S, D)
    float* V = K + S * D;                       // (S, D)
    float* dO = V + S * D;                      // (S, D)
    float* dQ = dO + S * D;                     // (S, D), added into dq once per query head
    float* dK = dQ + S * D;                     // (S, D), summed over the kv head's query heads
    float* dV = dK + S * D;                     // (S, D), likewise; dK and dV are adjacent
    bind(h, s);
    for (std::size_t b = 0; b < a.B; ++b) {
        for (std::size_t kvh = 0; kvh < a.KV; ++kvh) {
            gather_head(K, dev(k) + b * S * a.k_stride + kvh * D, a.k_stride, S, D, s);
            gather_head(V, dev(v) + b * S * a.v_stride + kvh * D, a.v_stride, S, D, s);
            CUDA_CHECK(cudaMemsetAsync(dK, 0, 2 * S * D * sizeof(float), s));  // dK and dV
            for (std::size_t hq = kvh * group; hq < (kvh + 1) * group; ++hq) {
                const device_t<T>* dout_h = dev(dout) + b * S * o_stride + hq * D;
                const device_t<T>* out_h = dev(out) + b * S * o_stride + hq * D;
                gather_head(Q, dev(q) + b * S * a.q_stride + hq * D, a.q_stride, S, D, s);
                gather_head(dO, dout_h, o_stride, S, D, s);
                gemm(h, false, true, S, S, D, scale, Q, D, K, D, 0.0f, P, S);
                gemm(h, false, true, S, S, D, 1.0f, dO, D, V, D, 0.0f, dP, S);
                const BackwardRows<device_t<T>> rows{P,
                                                     dP,
                                                     out_h,
                                                     dout_h,
                                                     lse + (b * a.A + hq) * S,
                                                     S,
                                                     D,
                                                     o_stride,
                                                     dropout_base(a, dropout, b, hq),
                                                     dropout,
                                                     keep};
                backward_rows_kernel<<<row_blocks(S), threads, 0, s>>>(rows);
                CUDA_CHECK(cudaGetLastError());
                gemm(h, true, false, S, D, S, 1.0f, P, S, dO, D, 1.0f, dV, D);  // dV += P^T dO
                gemm(h, false, false, S, D, S, scale, dP, S, K, D, 0.0f, dQ,
                     D);  // dQ = dS K / sqrt(D)
                gemm(h, true, false, S, D, S, scale, dP, S, Q, D, 1.0f, dK,
                     D);  // dK += dS^T Q / sqrt(D)
                store_head(dev(dq) + b * S * a.q_stride + hq * D, dQ, a.q_stride, S, D, true, s);
            }
            store_head(dev(dk) + b * S * a.k_stride + kvh * D, dK, a.k_stride, S, D, true, s);
            store_head(dev(dv) + b * S * a.v_stride + kvh * D, dV, a.v_stride, S, D, true, s);
        }
    }
}

#define REMAT_INSTANTIATE(T)                                                                \
    template std::uint64_t attention_forward_workspace<T>(const AttentionShape&);           \
    template void attention_forward<T>(T*, float*, const T*, const T*, const T*,            \
                                       const AttentionShape&, const DropoutKey&, void*,     \
                                       cublasHandle_t, cudaStream_t);                       \
    template std::uint64_t attention_backward_workspace<T>(const AttentionShape&);          \
    template void attention_backward<T>(T*, T*, T*, const T*, const T*, const T*, const T*, \
                                        const T*, const float*, const AttentionShape&,      \
                                        const DropoutKey&, void*, cublasHandle_t, cudaStream_t);
REMAT_INSTANTIATE(float)
REMAT_INSTANTIATE(rt::bf16)
#undef REMAT_INSTANTIATE

}  // namespace remat::rt::cuda
