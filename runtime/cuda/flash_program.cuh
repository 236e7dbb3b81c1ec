// The fused causal attention's block programs: flash-style, so no S x S tensor exists anywhere,
// in memory or workspace. Written once for two callers:
//   - kernels_attention.cu runs each program as a CUDA kernel, one block of `block_threads`
//     threads per tile, with tensor-core products (WMMA) for bf16;
//   - tests/flash_program_test.cpp runs the same code on the host, one thread walking every
//     tile, against the CPU backend's attention (runtime/cpu/kernels_attention.cpp).
// So the tiling, the causal masks at tile edges, the online softmax, the dropout indices, GQA and
// the backward's split are tested in CI, which has no GPU; only the WMMA product and the launch
// need one (tests/gpu/attention_gemm_gpu_test.cpp).
//
// How a program reads: phases separated by blk.sync(). Every phase is a loop
//   for (int x = blk.tid; x < n; x += blk.threads)
// whose items write disjoint elements and read only what earlier phases wrote, so one thread
// running every item in order computes exactly what a CUDA block computes. Everything a tile
// keeps between phases lives in shared memory (nothing is carried in registers across a sync).
// Tile products go through a Product policy: C(M, N) fp32 (=, or +=) op(A)(M, K) op(B)(K, N),
// operands in shared memory.
//
// The semantics are the CPU kernels': q(B, S, A, D), k and v (B, S, KV, D) with row strides,
// out (B, S, A, D) contiguous, lse (B, A, S) fp32, dropout index of probability (b, h, i, j) =
// ((index0 + b) * A + h) * S * S + i * S + j, backward accumulating (+=) into dq, dk and dv with
// one rounding per stored element. Where the two differ: under bf16 the probabilities and the score
// gradients are rounded to bf16 before the tensor-core products (FlashAttention does the same); the
// GPU test's tolerance says what that costs.
//
// Programs and grids (one block per tile; the kernels put the heads on grid x, the tiles on y):
//   forward_tile   grid (B * A, ceil(S / tiles.rows)): a tile of query rows walks the key tiles
//                  it can see, keeping the running max m, sum l and output O (online softmax).
//   dq_tile        grid (B * A, ceil(S / tiles.rows)): recomputes the probabilities of its query
//                  rows from q, k and the saved lse, adds dS K into dq, and first writes
//                  delta = rowsum(dout * out) for its rows into the workspace.
//   dkv_tile       grid (B * KV, ceil(S / tiles.cols)): a tile of keys walks every query row
//                  of every query head that shares its key/value head, summing dK and dV. Runs
//                  after dq_tile (it reads delta).
// No atomics: every output element has one writer, so the results are deterministic.
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "runtime/numeric.hpp"

#if defined(__CUDACC__)
#include "runtime/cuda/device.cuh"
#define REMAT_TILE __device__
#else
#define REMAT_TILE
#endif

namespace remat::rt::flash {

// Eight warps: a 64 x 64 tile's sixteen 16 x 16 products go two to a warp, and the backward, whose
// shared memory allows one block per SM at D = 64, still has eight warps to hide latency.
constexpr int block_threads = 256;
constexpr int row_parts =
    4;  // the forward's softmax splits each row of a tile into this many items

// A tile: `rows` query rows by `cols` keys, each a multiple of 16 (the tensor cores' tile). The
// launcher takes the largest that fits the GPU's shared memory (64 x 64 for bf16 at D = 64).
struct Tiles {
    int rows = 64, cols = 64;
};

// Product operands: as stored (row-major), or the transpose of what is stored.
struct Plain {};
struct Transposed {};

#if defined(__CUDACC__)
using cuda::detail::ld;
using cuda::detail::st;
#else
inline float ld(float x) { return x; }
inline float ld(bf16 x) { return to_float(x); }
template <class E>
E st(float x) {
    if constexpr (std::is_same_v<E, bf16>)
        return to_bf16(x);
    else
        return x;
}
#endif

REMAT_HD constexpr int imin(int a, int b) { return a < b ? a : b; }
REMAT_HD constexpr std::size_t round_up(std::size_t n, std::size_t to) {
    return (n + to - 1) / to * to;
}

// Where a tile's shared arrays lie: byte offsets, each 128-byte aligned (WMMA needs 32). Rows are
// padded (+8 elements for E, +4 for fp32) so that a column walk does not hit one bank.
class SharedLayout {
  public:
    REMAT_HD std::size_t take(std::size_t n_bytes) {
        const std::size_t at = bytes;
        bytes += round_up(n_bytes, 128);
        return at;
    }
    std::size_t bytes = 0;
};

struct TileShape {
    Tiles tiles;
    int ld_e;   // stride of (rows, D) tiles in E
    int ld_p;   // stride of (rows, tiles.cols) tiles in E
    int ld_f;   // stride of (rows, tiles.cols) tiles in fp32
    int ld_fd;  // stride of (rows, D) tiles in fp32
    REMAT_HD TileShape(int D, Tiles t)
        : tiles(t), ld_e(D + 8), ld_p(t.cols + 8), ld_f(t.cols + 4), ld_fd(D + 4) {}
};

struct ForwardLayout : TileShape {
    std::size_t q, k, v, p, s, o, part_max, part_sum, m0, m1, l;
    std::size_t bytes;
    REMAT_HD ForwardLayout(int D, std::size_t e_size, Tiles t) : TileShape(D, t) {
        SharedLayout L;
        q = L.take(e_size * t.rows * ld_e);
        k = L.take(e_size * t.cols * ld_e);
        v = L.take(e_size * t.cols * ld_e);
        p = L.take(e_size * t.rows * ld_p);
        s = L.take(sizeof(float) * t.rows * ld_f);
        o = L.take(sizeof(float) * t.rows * ld_fd);
        part_max = L.take(sizeof(float) * t.rows * row_parts);
        part_sum = L.take(sizeof(float) * t.rows * row_parts);
        m0 = L.take(sizeof(float) * t.rows);
        m1 = L.take(sizeof(float) * t.rows);
        l = L.take(sizeof(float) * t.rows);
        bytes = L.bytes;
    }
};

// Both backward programs use one layout: a query tile (q, dout), a key tile (k, v), the scores
// and their gradient (fp32), the probabilities and score gradients as product operands (E), two
// fp32 accumulators (dq uses acc0; dkv uses acc0 for dK and acc1 for dV) and per-row lse and delta.
struct BackwardLayout : TileShape {
    std::size_t q, dout, k, v, s, dp, p, ds, acc0, acc1, lse, delta;
    std::size_t bytes;
    REMAT_HD BackwardLayout(int D, std::size_t e_size, Tiles t, bool two_accumulators)
        : TileShape(D, t) {
        SharedLayout L;
        q = L.take(e_size * t.rows * ld_e);
        dout = L.take(e_size * t.rows * ld_e);
        k = L.take(e_size * t.cols * ld_e);
        v = L.take(e_size * t.cols * ld_e);
        s = L.take(sizeof(float) * t.rows * ld_f);
        dp = L.take(sizeof(float) * t.rows * ld_f);
        p = two_accumulators ? L.take(e_size * t.rows * ld_p) : 0;
        ds = L.take(e_size * t.rows * ld_p);
        const int acc_rows = two_accumulators ? t.cols : t.rows;
        acc0 = L.take(sizeof(float) * acc_rows * ld_fd);
        acc1 = two_accumulators ? L.take(sizeof(float) * acc_rows * ld_fd) : 0;
        lse = L.take(sizeof(float) * t.rows);
        delta = L.take(sizeof(float) * t.rows);
        bytes = L.bytes;
    }
};

template <class E>
struct ForwardArgs {
    E* out;
    float* lse;
    const E *q, *k, *v;
    AttentionShape a;
    DropoutKey dropout;
    Tiles tiles;
};

template <class E>
struct BackwardArgs {
    E *dq, *dk, *dv;
    const E *dout, *q, *k, *v, *out;
    const float* lse;
    float* delta;  // (B, A, S) workspace: dq_tile writes it, dkv_tile reads it
    AttentionShape a;
    DropoutKey dropout;
    Tiles tiles;
};

// A tile position in the attention problem, and the per-call constants every program needs.
struct Frame {
    std::size_t S, A, KV, D, group;
    float scale;  // 1 / sqrt(D)
    float keep;   // 1 / (1 - p): what a kept probability is multiplied by
    REMAT_HD explicit Frame(const AttentionShape& a, const DropoutKey& key)
        : S(a.S),
          A(a.A),
          KV(a.KV),
          D(a.D),
          group(a.A / a.KV),
          scale(1.0f / sqrtf(static_cast<float>(a.D))),
          keep(key.p > 0.0f ? 1.0f / (1.0f - key.p) : 1.0f) {}
};

template <class X>
REMAT_TILE X* at(unsigned char* smem, std::size_t offset) {
    return reinterpret_cast<X*>(smem + offset);
}

// dst(n_rows, D) in shared memory, stride ld = the first `valid` rows of src, `stride` apart;
// the rest zero, so padded rows add nothing to any product.
template <class E, class Blk>
REMAT_TILE void load_rows(const Blk& blk, E* dst, int ld, const E* src, std::size_t stride,
                          int valid, int n_rows, int D) {
    for (int x = blk.tid; x < n_rows * D; x += blk.threads) {
        const int r = x / D, d = x % D;
        dst[r * ld + d] = r < valid ? src[static_cast<std::size_t>(r) * stride + d] : st<E>(0.0f);
    }
}

// The scalar product: any shape, any type; fp32 accumulation in k order. The host's only product,
// and the GPU's for fp32 (exact comparisons: no TF32) and for head sizes WMMA cannot tile.
struct ScalarProduct {
    template <class Blk, class E, class OpA, class OpB>
    REMAT_TILE void operator()(const Blk& blk, float* C, int ldc, const E* A, int lda, OpA,
                               const E* B, int ldb, OpB, int M, int N, int K,
                               bool accumulate) const {
        for (int x = blk.tid; x < M * N; x += blk.threads) {
            const int i = x / N, j = x % N;
            float sum = accumulate ? C[i * ldc + j] : 0.0f;
            for (int kk = 0; kk < K; ++kk) {
                const float a =
                    ld(std::is_same_v<OpA, Transposed> ? A[kk * lda + i] : A[i * lda + kk]);
                const float b =
                    ld(std::is_same_v<OpB, Transposed> ? B[j * ldb + kk] : B[kk * ldb + j]);
                sum += a * b;
            }
            C[i * ldc + j] = sum;
        }
    }
};

// ---- forward ----

template <class E, class Blk, class Product>
REMAT_TILE void forward_tile(const Blk& blk, const Product& product, const ForwardArgs<E>& f,
                             std::size_t tile_i, std::size_t bh, unsigned char* smem) {
    const Frame fr(f.a, f.dropout);
    const int D = static_cast<int>(fr.D);
    const ForwardLayout L(D, sizeof(E), f.tiles);
    const int tile_rows = L.tiles.rows, tile_cols = L.tiles.cols;
    E* Qs = at<E>(smem, L.q);
    E* Ks = at<E>(smem, L.k);
    E* Vs = at<E>(smem, L.v);
    E* Ps = at<E>(smem, L.p);
    float* Ss = at<float>(smem, L.s);
    float* Os = at<float>(smem, L.o);
    float* part_max = at<float>(smem, L.part_max);
    float* part_sum = at<float>(smem, L.part_sum);
    float* m_cur = at<float>(smem, L.m0);  // running row max of the scaled scores
    float* m_next = at<float>(smem, L.m1);
    float* l = at<float>(smem, L.l);  // running sum of exp(score - m), before dropout

    const std::size_t b = bh / fr.A, h = bh % fr.A, kvh = h / fr.group;
    const std::size_t i0 = tile_i * tile_rows;
    const int rows = imin(tile_rows, static_cast<int>(fr.S - i0));
    const std::uint64_t drop_base = ((f.dropout.index0 + b) * fr.A + h) * fr.S * fr.S;

    load_rows(blk, Qs, L.ld_e, f.q + (b * fr.S + i0) * f.a.q_stride + h * fr.D, f.a.q_stride, rows,
              tile_rows, D);
    for (int x = blk.tid; x < tile_rows * D; x += blk.threads) Os[(x / D) * L.ld_fd + x % D] = 0.0f;
    for (int r = blk.tid; r < tile_rows; r += blk.threads) {
        m_cur[r] = -INFINITY;
        l[r] = 0.0f;
    }

    const int part_cols = tile_cols / row_parts;
    const std::size_t key_end = i0 + rows;  // causal: row i sees keys 0..i
    for (std::size_t j0 = 0; j0 < key_end; j0 += tile_cols) {
        const int cols = imin(tile_cols, static_cast<int>(fr.S - j0));
        const std::size_t kv_row = b * fr.S + j0;
        load_rows(blk, Ks, L.ld_e, f.k + kv_row * f.a.k_stride + kvh * fr.D, f.a.k_stride, cols,
                  tile_cols, D);
        load_rows(blk, Vs, L.ld_e, f.v + kv_row * f.a.v_stride + kvh * fr.D, f.a.v_stride, cols,
                  tile_cols, D);
        blk.sync();
        product(blk, Ss, L.ld_f, Qs, L.ld_e, Plain{}, Ks, L.ld_e, Transposed{}, tile_rows,
                tile_cols, D, false);
        blk.sync();
        // Row (r) sees column (c) when both are inside S and the key is not after the query.
        auto visible = [&](int r, int c) { return r < rows && c < cols && j0 + c <= i0 + r; };
        for (int x = blk.tid; x < tile_rows * row_parts; x += blk.threads) {
            const int r = x / row_parts, c0 = (x % row_parts) * part_cols;
            float mx = -INFINITY;
            for (int c = c0; c < c0 + part_cols; ++c)
                if (visible(r, c)) mx = fmaxf(mx, Ss[r * L.ld_f + c] * fr.scale);
            part_max[x] = mx;
        }
        blk.sync();
        for (int x = blk.tid; x < tile_rows * row_parts; x += blk.threads) {
            const int r = x / row_parts, c0 = (x % row_parts) * part_cols;
            float mx = m_cur[r];
            for (int p = 0; p < row_parts; ++p) mx = fmaxf(mx, part_max[r * row_parts + p]);
            float sum = 0.0f;
            for (int c = c0; c < c0 + part_cols; ++c) {
                float e = 0.0f;
                if (visible(r, c)) {
                    e = expf(Ss[r * L.ld_f + c] * fr.scale - mx);
                    sum += e;
                    e *= dropout_factor(f.dropout, drop_base + (i0 + r) * fr.S + j0 + c, fr.keep);
                }
                Ps[r * L.ld_p + c] = st<E>(e);
            }
            part_sum[x] = sum;
            if (x % row_parts == 0) m_next[r] = mx;
        }
        blk.sync();
        // O and l rescaled to the new max; a row that has seen nothing yet (mx still -inf) keeps 1.
        for (int x = blk.tid; x < tile_rows * D; x += blk.threads) {
            const int r = x / D;
            const float alpha = m_next[r] == -INFINITY ? 1.0f : expf(m_cur[r] - m_next[r]);
            Os[r * L.ld_fd + x % D] *= alpha;
            if (x % D == 0) {
                float sum = 0.0f;
                for (int p = 0; p < row_parts; ++p) sum += part_sum[r * row_parts + p];
                l[r] = l[r] * alpha + sum;
            }
        }
        blk.sync();
        product(blk, Os, L.ld_fd, Ps, L.ld_p, Plain{}, Vs, L.ld_e, Plain{}, tile_rows, D, tile_cols,
                true);
        float* swap = m_cur;
        m_cur = m_next;
        m_next = swap;
        blk.sync();  // the next tile's loads overwrite Ks and Vs
    }

    E* out = f.out + (b * fr.S + i0) * fr.A * fr.D + h * fr.D;
    for (int x = blk.tid; x < rows * D; x += blk.threads) {
        const int r = x / D, d = x % D;
        out[static_cast<std::size_t>(r) * fr.A * fr.D + d] = st<E>(Os[r * L.ld_fd + d] / l[r]);
    }
    for (int r = blk.tid; r < rows; r += blk.threads)
        f.lse[(b * fr.A + h) * fr.S + i0 + r] = m_cur[r] + logf(l[r]);
}

// ---- backward ----

// The shared middle of both backward programs, for one (query tile, key tile) pair whose q, dout,
// k, v, lse and delta are loaded: S = Q K^T and dP = dO V^T, then per element the dropped
// probability P (into Ps, only when Ps is given) and the score gradient times the scale
// dS = P (dP mask - delta) / sqrt(D) (into dSs).
template <class E, class Blk, class Product>
REMAT_TILE void score_gradients(const Blk& blk, const Product& product, const BackwardLayout& L,
                                const Frame& fr, const DropoutKey& key, std::size_t b,
                                std::size_t h, std::size_t i0, int rows, std::size_t j0, int cols,
                                unsigned char* smem, bool with_probabilities) {
    const int D = static_cast<int>(fr.D);
    const int tile_rows = L.tiles.rows, tile_cols = L.tiles.cols;
    const E* Qs = at<E>(smem, L.q);
    const E* dOs = at<E>(smem, L.dout);
    const E* Ks = at<E>(smem, L.k);
    const E* Vs = at<E>(smem, L.v);
    float* Ss = at<float>(smem, L.s);
    float* dPs = at<float>(smem, L.dp);
    E* Ps = with_probabilities ? at<E>(smem, L.p) : nullptr;
    E* dSs = at<E>(smem, L.ds);
    const float* lse = at<float>(smem, L.lse);
    const float* delta = at<float>(smem, L.delta);
    product(blk, Ss, L.ld_f, Qs, L.ld_e, Plain{}, Ks, L.ld_e, Transposed{}, tile_rows, tile_cols, D,
            false);
    product(blk, dPs, L.ld_f, dOs, L.ld_e, Plain{}, Vs, L.ld_e, Transposed{}, tile_rows, tile_cols,
            D, false);
    blk.sync();
    const std::uint64_t drop_base = ((key.index0 + b) * fr.A + h) * fr.S * fr.S;
    for (int x = blk.tid; x < tile_rows * tile_cols; x += blk.threads) {
        const int r = x / tile_cols, c = x % tile_cols;
        float p = 0.0f, ds = 0.0f;
        if (r < rows && c < cols && j0 + c <= i0 + r) {
            const float prob = expf(Ss[r * L.ld_f + c] * fr.scale - lse[r]);
            const float mask = dropout_factor(key, drop_base + (i0 + r) * fr.S + j0 + c, fr.keep);
            p = prob * mask;
            ds = prob * (dPs[r * L.ld_f + c] * mask - delta[r]) * fr.scale;
        }
        if (Ps) Ps[r * L.ld_p + c] = st<E>(p);
        dSs[r * L.ld_p + c] = st<E>(ds);
    }
    blk.sync();
}

// The query tile's q and dout, and its rows' lse and delta (from `delta`, or computed here as
// rowsum(dout * out) and written there when `compute_delta`).
template <class E, class Blk>
REMAT_TILE void load_query_tile(const Blk& blk, const BackwardLayout& L, const BackwardArgs<E>& g,
                                const Frame& fr, std::size_t b, std::size_t h, std::size_t i0,
                                int rows, unsigned char* smem, bool compute_delta) {
    const int D = static_cast<int>(fr.D);
    const int tile_rows = L.tiles.rows;
    const std::size_t o_stride = fr.A * fr.D;
    const E* dout = g.dout + (b * fr.S + i0) * o_stride + h * fr.D;
    load_rows(blk, at<E>(smem, L.q), L.ld_e, g.q + (b * fr.S + i0) * g.a.q_stride + h * fr.D,
              g.a.q_stride, rows, tile_rows, D);
    load_rows(blk, at<E>(smem, L.dout), L.ld_e, dout, o_stride, rows, tile_rows, D);
    float* lse = at<float>(smem, L.lse);
    float* delta = at<float>(smem, L.delta);
    const std::size_t row0 = (b * fr.A + h) * fr.S + i0;
    for (int r = blk.tid; r < tile_rows; r += blk.threads) {
        if (r >= rows) {
            lse[r] = delta[r] = 0.0f;
            continue;
        }
        lse[r] = g.lse[row0 + r];
        if (compute_delta) {
            const E* o = g.out + (b * fr.S + i0 + r) * o_stride + h * fr.D;
            float sum = 0.0f;
            for (int d = 0; d < D; ++d)
                sum += ld(dout[static_cast<std::size_t>(r) * o_stride + d]) * ld(o[d]);
            delta[r] = sum;
            g.delta[row0 + r] = sum;
        } else {
            delta[r] = g.delta[row0 + r];
        }
    }
}

// dst rows (`stride` apart) += the fp32 accumulator's first `valid` rows: one rounding each.
template <class E, class Blk>
REMAT_TILE void add_rows(const Blk& blk, E* dst, std::size_t stride, const float* acc, int ld_acc,
                         int valid, int D) {
    for (int x = blk.tid; x < valid * D; x += blk.threads) {
        const int r = x / D, d = x % D;
        E& e = dst[static_cast<std::size_t>(r) * stride + d];
        e = st<E>(ld(e) + acc[r * ld_acc + d]);
    }
}

template <class E, class Blk, class Product>
REMAT_TILE void dq_tile(const Blk& blk, const Product& product, const BackwardArgs<E>& g,
                        std::size_t tile_i, std::size_t bh, unsigned char* smem) {
    const Frame fr(g.a, g.dropout);
    const int D = static_cast<int>(fr.D);
    const BackwardLayout L(D, sizeof(E), g.tiles, false);
    const int tile_rows = L.tiles.rows, tile_cols = L.tiles.cols;
    const std::size_t b = bh / fr.A, h = bh % fr.A, kvh = h / fr.group;
    const std::size_t i0 = tile_i * tile_rows;
    const int rows = imin(tile_rows, static_cast<int>(fr.S - i0));
    float* dQs = at<float>(smem, L.acc0);
    load_query_tile(blk, L, g, fr, b, h, i0, rows, smem, true);
    for (int x = blk.tid; x < tile_rows * D; x += blk.threads)
        dQs[(x / D) * L.ld_fd + x % D] = 0.0f;
    const std::size_t key_end = i0 + rows;
    for (std::size_t j0 = 0; j0 < key_end; j0 += tile_cols) {
        const int cols = imin(tile_cols, static_cast<int>(fr.S - j0));
        const std::size_t kv_row = b * fr.S + j0;
        load_rows(blk, at<E>(smem, L.k), L.ld_e, g.k + kv_row * g.a.k_stride + kvh * fr.D,
                  g.a.k_stride, cols, tile_cols, D);
        load_rows(blk, at<E>(smem, L.v), L.ld_e, g.v + kv_row * g.a.v_stride + kvh * fr.D,
                  g.a.v_stride, cols, tile_cols, D);
        blk.sync();
        score_gradients<E>(blk, product, L, fr, g.dropout, b, h, i0, rows, j0, cols, smem, false);
        // dQ += dS K
        product(blk, dQs, L.ld_fd, at<E>(smem, L.ds), L.ld_p, Plain{}, at<E>(smem, L.k), L.ld_e,
                Plain{}, tile_rows, D, tile_cols, true);
        blk.sync();
    }
    add_rows(blk, g.dq + (b * fr.S + i0) * g.a.q_stride + h * fr.D, g.a.q_stride, dQs, L.ld_fd,
             rows, D);
}

template <class E, class Blk, class Product>
REMAT_TILE void dkv_tile(const Blk& blk, const Product& product, const BackwardArgs<E>& g,
                         std::size_t tile_j, std::size_t bkv, unsigned char* smem) {
    const Frame fr(g.a, g.dropout);
    const int D = static_cast<int>(fr.D);
    const BackwardLayout L(D, sizeof(E), g.tiles, true);
    const int tile_rows = L.tiles.rows, tile_cols = L.tiles.cols;
    const std::size_t b = bkv / fr.KV, kvh = bkv % fr.KV;
    const std::size_t j0 = tile_j * tile_cols;
    const int cols = imin(tile_cols, static_cast<int>(fr.S - j0));
    float* dKs = at<float>(smem, L.acc0);
    float* dVs = at<float>(smem, L.acc1);
    const std::size_t kv_row = b * fr.S + j0;
    load_rows(blk, at<E>(smem, L.k), L.ld_e, g.k + kv_row * g.a.k_stride + kvh * fr.D, g.a.k_stride,
              cols, tile_cols, D);
    load_rows(blk, at<E>(smem, L.v), L.ld_e, g.v + kv_row * g.a.v_stride + kvh * fr.D, g.a.v_stride,
              cols, tile_cols, D);
    for (int x = blk.tid; x < tile_cols * D; x += blk.threads) {
        dKs[(x / D) * L.ld_fd + x % D] = 0.0f;
        dVs[(x / D) * L.ld_fd + x % D] = 0.0f;
    }
    for (std::size_t h = kvh * fr.group; h < (kvh + 1) * fr.group; ++h) {
        // Causal: the first query row that sees key j0 is j0 itself.
        for (std::size_t i0 = j0 / tile_rows * tile_rows; i0 < fr.S; i0 += tile_rows) {
            const int rows = imin(tile_rows, static_cast<int>(fr.S - i0));
            load_query_tile(blk, L, g, fr, b, h, i0, rows, smem, false);
            blk.sync();
            score_gradients<E>(blk, product, L, fr, g.dropout, b, h, i0, rows, j0, cols, smem,
                               true);
            // dV += P^T dO, dK += dS^T Q
            product(blk, dVs, L.ld_fd, at<E>(smem, L.p), L.ld_p, Transposed{}, at<E>(smem, L.dout),
                    L.ld_e, Plain{}, tile_cols, D, tile_rows, true);
            product(blk, dKs, L.ld_fd, at<E>(smem, L.ds), L.ld_p, Transposed{}, at<E>(smem, L.q),
                    L.ld_e, Plain{}, tile_cols, D, tile_rows, true);
            blk.sync();
        }
    }
    add_rows(blk, g.dk + kv_row * g.a.k_stride + kvh * fr.D, g.a.k_stride, dKs, L.ld_fd, cols, D);
    add_rows(blk, g.dv + kv_row * g.a.v_stride + kvh * fr.D, g.a.v_stride, dVs, L.ld_fd, cols, D);
}

}  // namespace remat::rt::flash
