// Causal self-attention (GQA, attention dropout) forward and backward on the GPU: fused,
// flash-style kernels that keep q, k, v, out and the row log-sum-exp lse(B, A, S) and never form
// an S x S tensor. The block programs are in flash_program.cuh (run on the host by
// tests/flash_program_test.cpp); this file launches them, one CUDA block per tile, and supplies
// the tensor-core product.
//
// Products: bf16 with a head size that is a multiple of 16 runs on the tensor cores (WMMA, bf16
// operands, fp32 accumulation); fp32 (exact comparisons: never TF32) and other head sizes use
// the scalar product. Tiles: the largest of 64, 32 and 16 rows (and keys) whose programs fit the
// GPU's shared memory per block.
//
// Workspace: forward none; backward delta(B, A, S) fp32 = rowsum(dout * out), written by the dq
// kernel and read by the dk/dv kernel, so 4 * B * A * S bytes. No atomics: each output element
// has one writer, so results are deterministic run to run.
#include <cuda_bf16.h>
#include <mma.h>

#include <algorithm>
#include <cassert>
#include <climits>
#include <string>
#include <type_traits>

#include "runtime/cuda/cuda_check.hpp"
#include "runtime/cuda/device.cuh"
#include "runtime/cuda/flash_program.cuh"
#include "runtime/cuda/kernels.cuh"

namespace remat::rt::cuda {
namespace {

using namespace detail;
namespace fl = flash;

struct DeviceBlock {
    int tid, threads;
    __device__ void sync() const { __syncthreads(); }
};

// C(M, N) fp32 (=, or +=) op(A) op(B) on the tensor cores, one 16 x 16 tile of C per warp at a
// time. M, N and K are multiples of 16; the operands and C are 32-byte aligned with strides that
// are multiples of 8 (bf16) and 4 (fp32): flash::SharedLayout and TileShape's padding keep both.
struct WmmaProduct {
    template <class Blk, class OpA, class OpB>
    __device__ void operator()(const Blk& blk, float* C, int ldc, const __nv_bfloat16* A, int lda,
                               OpA, const __nv_bfloat16* B, int ldb, OpB, int M, int N, int K,
                               bool accumulate) const {
        namespace w = nvcuda::wmma;
        constexpr bool ta = std::is_same_v<OpA, fl::Transposed>;
        constexpr bool tb = std::is_same_v<OpB, fl::Transposed>;
        using LayoutA = std::conditional_t<ta, w::col_major, w::row_major>;
        using LayoutB = std::conditional_t<tb, w::col_major, w::row_major>;
        const int warp = blk.tid / 32, warps = blk.threads / 32, tiles_n = N / 16;
        for (int t = warp; t < (M / 16) * tiles_n; t += warps) {
            const int i = t / tiles_n * 16, j = t % tiles_n * 16;
            w::fragment<w::accumulator, 16, 16, 16, float> c;
            float* cp = C + i * ldc + j;
            if (accumulate)
                w::load_matrix_sync(c, cp, ldc, w::mem_row_major);
            else
                w::fill_fragment(c, 0.0f);
            for (int k = 0; k < K; k += 16) {
                w::fragment<w::matrix_a, 16, 16, 16, __nv_bfloat16, LayoutA> a;
                w::fragment<w::matrix_b, 16, 16, 16, __nv_bfloat16, LayoutB> b;
                w::load_matrix_sync(a, ta ? A + k * lda + i : A + i * lda + k, lda);
                w::load_matrix_sync(b, tb ? B + j * ldb + k : B + k * ldb + j, ldb);
                w::mma_sync(c, a, b, c);
            }
            w::store_matrix_sync(cp, c, ldc, w::mem_row_major);
        }
    }
};

__device__ DeviceBlock this_block() {
    return {static_cast<int>(threadIdx.x), static_cast<int>(blockDim.x)};
}

// Grids are (heads, tiles). Query tiles run last-first: the last see the most keys, and starting
// the longest blocks first shortens the tail.
template <class E, class Product>
__global__ void __launch_bounds__(fl::block_threads) forward_kernel(fl::ForwardArgs<E> f) {
    extern __shared__ __align__(128) unsigned char smem[];
    fl::forward_tile(this_block(), Product{}, f, gridDim.y - 1 - blockIdx.y, blockIdx.x, smem);
}

template <class E, class Product>
__global__ void __launch_bounds__(fl::block_threads) dq_kernel(fl::BackwardArgs<E> g) {
    extern __shared__ __align__(128) unsigned char smem[];
    fl::dq_tile(this_block(), Product{}, g, gridDim.y - 1 - blockIdx.y, blockIdx.x, smem);
}

// Key tiles run first-first: the first are seen by the most queries.
template <class E, class Product>
__global__ void __launch_bounds__(fl::block_threads) dkv_kernel(fl::BackwardArgs<E> g) {
    extern __shared__ __align__(128) unsigned char smem[];
    fl::dkv_tile(this_block(), Product{}, g, blockIdx.y, blockIdx.x, smem);
}

// A grid dimension, or a clear error past CUDA's limit (x: 2^31 - 1; y: 65535).
unsigned grid_dim(std::size_t n, std::size_t limit, const char* what) {
    if (n > limit)
        throw CudaError("attention: " + std::string(what) + " = " + std::to_string(n) +
                        " exceeds CUDA's grid limit of " + std::to_string(limit));
    return static_cast<unsigned>(n);
}
constexpr std::size_t grid_x_limit = INT_MAX, grid_y_limit = 65535;

std::size_t ceil_div(std::size_t a, std::size_t b) { return (a + b - 1) / b; }

// The shared memory each of the three programs needs at tile t, the largest of them.
template <class E>
std::size_t shared_bytes(int D, fl::Tiles t) {
    return std::max({fl::ForwardLayout(D, sizeof(E), t).bytes,
                     fl::BackwardLayout(D, sizeof(E), t, false).bytes,
                     fl::BackwardLayout(D, sizeof(E), t, true).bytes});
}

// The largest square tile whose programs fit this GPU's shared memory per block (opt-in limit:
// 227 KiB on sm_90, 163 KiB on sm_80).
template <class E>
fl::Tiles choose_tiles(std::size_t D) {
    int device = 0, limit = 0;
    CUDA_CHECK(cudaGetDevice(&device));
    CUDA_CHECK(cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
    const int d = static_cast<int>(D);
    for (const int t : {64, 32, 16})
        if (shared_bytes<E>(d, {t, t}) <= static_cast<std::size_t>(limit)) return {t, t};
    throw CudaError("attention: head size " + std::to_string(D) + " needs " +
                    std::to_string(shared_bytes<E>(d, {16, 16})) +
                    " bytes of shared memory per block at the smallest tile; this GPU allows " +
                    std::to_string(limit));
}

template <class Args>
void launch(void (*kernel)(Args), dim3 grid, std::size_t smem, const Args& args, cudaStream_t s) {
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    static_cast<int>(smem)));
    kernel<<<grid, fl::block_threads, smem, s>>>(args);
    CUDA_CHECK(cudaGetLastError());
}

// bf16 runs on the tensor cores when WMMA can tile the head size (the launchers' `if constexpr`
// keeps fp32 on the scalar product); the scalar product otherwise.
bool wmma_tiles(const AttentionShape& a) { return a.D % 16 == 0; }

void check_shape(const AttentionShape& a, const DropoutKey& dropout) {
    assert(a.KV > 0 && a.A % a.KV == 0 && "query heads must be a multiple of key/value heads");
    assert(dropout.p >= 0.0f && dropout.p < 1.0f &&
           "attention dropout probability must lie in [0, 1)");
    (void)a;
    (void)dropout;
}

}  // namespace

// ---- launchers ----

template <class T>
std::uint64_t attention_forward_workspace(const AttentionShape&) {
    return 0;
}

template <class T>
void attention_forward(T* out, float* lse, const T* q, const T* k, const T* v,
                       const AttentionShape& a, const DropoutKey& dropout, void*, cudaStream_t s) {
    check_shape(a, dropout);
    if (a.B == 0 || a.S == 0 || a.A == 0 || a.D == 0) return;
    using E = device_t<T>;
    const fl::Tiles tiles = choose_tiles<E>(a.D);
    const fl::ForwardArgs<E> f{dev(out), lse, dev(q), dev(k), dev(v), a, dropout, tiles};
    const dim3 grid(grid_dim(a.B * a.A, grid_x_limit, "batch x heads"),
                    grid_dim(ceil_div(a.S, tiles.rows), grid_y_limit, "query tiles"));
    const std::size_t smem = fl::ForwardLayout(static_cast<int>(a.D), sizeof(E), tiles).bytes;
    if constexpr (std::is_same_v<T, bf16>) {
        if (wmma_tiles(a)) return launch(forward_kernel<E, WmmaProduct>, grid, smem, f, s);
    }
    launch(forward_kernel<E, fl::ScalarProduct>, grid, smem, f, s);
}

template <class T>
std::uint64_t attention_backward_workspace(const AttentionShape& a) {
    return sizeof(float) * a.B * a.A * a.S;  // delta
}

template <class T>
void attention_backward(T* dq, T* dk, T* dv, const T* dout, const T* q, const T* k, const T* v,
                        const T* out, const float* lse, const AttentionShape& a,
                        const DropoutKey& dropout, void* workspace, cudaStream_t s) {
    check_shape(a, dropout);
    if (a.B == 0 || a.S == 0 || a.A == 0 || a.D == 0) return;
    using E = device_t<T>;
    const fl::Tiles tiles = choose_tiles<E>(a.D);
    const fl::BackwardArgs<E> g{
        dev(dq), dev(dk), dev(dv),  dev(dout), dev(q),
        dev(k),  dev(v),  dev(out), lse,       static_cast<float*>(workspace),
        a,       dropout, tiles};
    const int D = static_cast<int>(a.D);
    const dim3 dq_grid(grid_dim(a.B * a.A, grid_x_limit, "batch x heads"),
                       grid_dim(ceil_div(a.S, tiles.rows), grid_y_limit, "query tiles"));
    const dim3 dkv_grid(grid_dim(a.B * a.KV, grid_x_limit, "batch x key/value heads"),
                        grid_dim(ceil_div(a.S, tiles.cols), grid_y_limit, "key tiles"));
    const std::size_t dq_smem = fl::BackwardLayout(D, sizeof(E), tiles, false).bytes;
    const std::size_t dkv_smem = fl::BackwardLayout(D, sizeof(E), tiles, true).bytes;
    if constexpr (std::is_same_v<T, bf16>) {
        if (wmma_tiles(a)) {
            launch(dq_kernel<E, WmmaProduct>, dq_grid, dq_smem, g, s);
            launch(dkv_kernel<E, WmmaProduct>, dkv_grid, dkv_smem, g, s);
            return;
        }
    }
    launch(dq_kernel<E, fl::ScalarProduct>, dq_grid, dq_smem, g, s);
    launch(dkv_kernel<E, fl::ScalarProduct>, dkv_grid, dkv_smem, g, s);
}

#define REMAT_INSTANTIATE(T)                                                                \
    template std::uint64_t attention_forward_workspace<T>(const AttentionShape&);           \
    template void attention_forward<T>(T*, float*, const T*, const T*, const T*,            \
                                       const AttentionShape&, const DropoutKey&, void*,     \
                                       cudaStream_t);                                       \
    template std::uint64_t attention_backward_workspace<T>(const AttentionShape&);          \
    template void attention_backward<T>(T*, T*, T*, const T*, const T*, const T*, const T*, \
                                        const T*, const float*, const AttentionShape&,      \
                                        const DropoutKey&, void*, cudaStream_t);
REMAT_INSTANTIATE(float)
REMAT_INSTANTIATE(rt::bf16)
#undef REMAT_INSTANTIATE

}  // namespace remat::rt::cuda
