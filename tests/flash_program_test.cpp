// The fused attention's block programs (runtime/cuda/flash_program.cuh) run on the host against
// the CPU backend's attention, so that their tiling, masks, online softmax, dropout indices, GQA
// and backward split are checked without a GPU. The GPU test runs the same cases through the
// kernels. Shared memory starts as NaN bytes for every tile, as garbage would on a GPU: a program
// that reads a shared element before writing it fails. One case also runs each tile with
// flash::block_threads real threads meeting at a std::barrier, a CUDA block's phases.
#include "runtime/cuda/flash_program.cuh"

#include <doctest/doctest.h>

#include <barrier>
#include <thread>
#include <vector>

#include "tests/attention_cases.hpp"

namespace {

namespace flash = remat::rt::flash;
using namespace remat::test;

// One thread walks every item of every phase: what a CUDA block computes, in order.
struct SerialBlock {
    int tid = 0;
    int threads = 1;
    void sync() const {}
};

// Several threads, each a CUDA thread, meeting at every sync.
struct ThreadedBlock {
    int tid;
    int threads;
    std::barrier<>* barrier;
    void sync() const { barrier->arrive_and_wait(); }
};

// Runs program(block, tile, row, smem) over the grid (tiles x rows), one tile at a time.
template <class Program>
void run_grid(std::size_t tiles, std::size_t rows, std::size_t smem_bytes, int threads,
              Program program) {
    std::vector<unsigned char> smem(smem_bytes);
    for (std::size_t row = 0; row < rows; ++row) {
        for (std::size_t tile = 0; tile < tiles; ++tile) {
            std::fill(smem.begin(), smem.end(), static_cast<unsigned char>(0xff));
            if (threads == 1) {
                program(SerialBlock{}, tile, row, smem.data());
                continue;
            }
            std::barrier<> barrier(threads);
            std::vector<std::jthread> pool;
            for (int t = 0; t < threads; ++t)
                pool.emplace_back([&, t] {
                    program(ThreadedBlock{t, threads, &barrier}, tile, row, smem.data());
                });
        }
    }
}

std::size_t ceil_div(std::size_t a, std::size_t b) { return (a + b - 1) / b; }

template <class T>
void check_case(const AttentionCase& c, int threads, flash::Tiles tiles = {}) {
    const AttentionLayout& L = c.layout;
    const remat::rt::AttentionShape& s = L.shape;
    INFO(describe(c));
    CAPTURE(threads);
    CAPTURE(tiles.rows);
    CAPTURE(tiles.cols);
    const AttentionReference<T> ref(c);
    const flash::ScalarProduct product;
    const int D = static_cast<int>(s.D);

    std::vector<T> out(L.out_size());
    std::vector<float> lse(L.lse_size());
    const flash::ForwardArgs<T> f{out.data(),
                                  lse.data(),
                                  ref.x.data() + L.q_offset,
                                  ref.x.data() + L.k_offset,
                                  ref.x.data() + L.v_offset,
                                  s,
                                  c.dropout,
                                  tiles};
    run_grid(ceil_div(s.S, tiles.rows), s.B * s.A, flash::ForwardLayout(D, sizeof(T), tiles).bytes,
             threads, [&](const auto& blk, std::size_t tile, std::size_t bh, unsigned char* smem) {
                 flash::forward_tile(blk, product, f, tile, bh, smem);
             });
    check_close("out", ref.out, out, tolerance<T>());
    // lse is fp32 on both sides, from the same inputs: the fp32 tolerance holds for bf16 too.
    check_close("lse", ref.lse, lse, tolerance<float>());

    // The backward reads the CPU's out and lse, so that it is judged on its own.
    std::vector<T> dx = ref.dx0;
    std::vector<float> delta(L.lse_size(), std::nanf(""));
    const flash::BackwardArgs<T> g{dx.data() + L.q_offset,
                                   dx.data() + L.k_offset,
                                   dx.data() + L.v_offset,
                                   ref.dout.data(),
                                   ref.x.data() + L.q_offset,
                                   ref.x.data() + L.k_offset,
                                   ref.x.data() + L.v_offset,
                                   ref.out.data(),
                                   ref.lse.data(),
                                   delta.data(),
                                   s,
                                   c.dropout,
                                   tiles};
    run_grid(ceil_div(s.S, tiles.rows), s.B * s.A,
             flash::BackwardLayout(D, sizeof(T), tiles, false).bytes, threads,
             [&](const auto& blk, std::size_t tile, std::size_t bh, unsigned char* smem) {
                 flash::dq_tile(blk, product, g, tile, bh, smem);
             });
    run_grid(ceil_div(s.S, tiles.cols), s.B * s.KV,
             flash::BackwardLayout(D, sizeof(T), tiles, true).bytes, threads,
             [&](const auto& blk, std::size_t tile, std::size_t bkv, unsigned char* smem) {
                 flash::dkv_tile(blk, product, g, tile, bkv, smem);
             });
    check_close("dqkv", ref.dx, dx, tolerance<T>());
}

}  // namespace

TEST_SUITE("flash") {
    TEST_CASE("flash::programs match the CPU attention, fp32") {
        for (const AttentionCase& c : attention_cases()) check_case<float>(c, 1);
    }
    TEST_CASE("flash::programs match the CPU attention, bf16 (products on bf16 operands)") {
        for (const AttentionCase& c : attention_cases()) check_case<remat::rt::bf16>(c, 1);
    }
    TEST_CASE("flash::programs with the smaller tiles a GPU with less shared memory gets") {
        // Square and oblong: a query tile that starts inside a key tile and the reverse.
        for (const flash::Tiles tiles :
             {flash::Tiles{32, 32}, flash::Tiles{16, 32}, flash::Tiles{32, 16}}) {
            for (const AttentionCase& c : attention_cases()) {
                check_case<float>(c, 1, tiles);
                check_case<remat::rt::bf16>(c, 1, tiles);
            }
        }
    }
    TEST_CASE("flash::programs give the same result when a block's threads run its phases") {
        // GQA, fused strided qkv, dropout, a ragged second tile: every phase's split across
        // threads.
        const AttentionCase c{AttentionLayout(1, 70, 4, 2, 16, true),
                              remat::rt::DropoutKey{0.1f, 7, 9, 5}, 17};
        check_case<float>(c, flash::block_threads);
    }
}
