// What the fused attention is checked against, shared by the host run of its block programs
// (tests/flash_program_test.cpp) and the GPU run of its kernels
// (tests/gpu/attention_gemm_gpu_test.cpp): the shapes, their random inputs, the CPU backend's
// results on them, and the comparison with its tolerances.
#pragma once
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "runtime/cpu/kernels.hpp"

namespace remat::test {

using rt::AttentionShape;
using rt::bf16;
using rt::DropoutKey;

// Comparisons pass when |got - ref| <= atol + rtol * |ref|.
struct Tolerance {
    double atol, rtol;
};

// fp32: both sides accumulate in fp32 from identical inputs and differ only in summation order
// (and, for the fused attention, in the online softmax's rescaling): a few ulps of sums of order
// 1-10 here, ~1e-6, inside 1e-5.
// bf16: both sides read the same bf16 inputs, accumulate in fp32 and round each stored result to
// bf16 once; the fp32 values differ by summation order, which can flip that one rounding by one
// bf16 ulp: up to 2^-7 ~ 7.8e-3 relative just above a power of two. The fused attention also
// rounds its probabilities and score gradients to bf16 (2^-9 relative each) before the
// tensor-core products, errors that average out over a row: run on the host over these cases,
// the fused programs' worst bf16 difference from the CPU is that one ulp. So rtol 1e-2 (the
// issue's), and atol 2e-2 for results near 0, whose ulp is set by the terms that cancelled into
// them (one ulp at magnitude 2-4 is 1.6e-2).
template <class T>
constexpr Tolerance tolerance() {
    if constexpr (std::is_same_v<T, bf16>)
        return {2e-2, 1e-2};
    else
        return {1e-5, 1e-5};
}

template <class T>
std::vector<T> random_values(std::mt19937_64& rng, std::size_t n) {
    std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
    std::vector<T> x(n);
    for (T& e : x) e = rt::store<T>(dist(rng));
    return x;
}

template <class T>
void check_close(const char* what, const std::vector<T>& ref, const std::vector<T>& got,
                 Tolerance tol) {
    REQUIRE(ref.size() == got.size());
    std::size_t failures = 0;
    for (std::size_t k = 0; k < ref.size(); ++k) {
        const double r = static_cast<double>(rt::load(ref[k]));
        const double g = static_cast<double>(rt::load(got[k]));
        if (!(std::abs(g - r) <= tol.atol + tol.rtol * std::abs(r)) && ++failures <= 5)
            FAIL_CHECK(what << "[" << k << "]: reference " << r << ", got " << g);
    }
    CHECK_MESSAGE(failures == 0,
                  what << ": " << failures << " of " << ref.size() << " elements off");
}

// Where q, k and v lie in one buffer, as in kernels_test: either GPT-2's fused (B, S, 3*A*D)
// qkv (k and v use the first KV*D of their A*D slots, the rest must stay untouched) or three
// separate tensors back to back.
struct AttentionLayout {
    AttentionShape shape;
    std::size_t q_offset, k_offset, v_offset, size;

    AttentionLayout(std::size_t B, std::size_t S, std::size_t A, std::size_t KV, std::size_t D,
                    bool fused) {
        if (fused) {
            shape = {B, S, A, KV, D, 3 * A * D, 3 * A * D, 3 * A * D};
            q_offset = 0;
            k_offset = A * D;
            v_offset = 2 * A * D;
            size = B * S * 3 * A * D;
        } else {
            shape = {B, S, A, KV, D, A * D, KV * D, KV * D};
            q_offset = 0;
            k_offset = B * S * A * D;
            v_offset = k_offset + B * S * KV * D;
            size = v_offset + B * S * KV * D;
        }
    }
    std::size_t out_size() const { return shape.B * shape.S * shape.A * shape.D; }
    std::size_t lse_size() const { return shape.B * shape.A * shape.S; }
};

struct AttentionCase {
    AttentionLayout layout;
    DropoutKey dropout;
    std::uint64_t seed;
};

// Sequences shorter than a tile, several tiles with a ragged last one (300 = 4 * 64 + 44), head
// sizes the tensor cores tile (16, 64) and one they cannot (8), GQA, the fused strided qkv,
// dropout with a batch slice placed by index0.
inline std::vector<AttentionCase> attention_cases() {
    return {
        {AttentionLayout(2, 13, 2, 2, 8, false), DropoutKey{}, 11},
        {AttentionLayout(2, 17, 4, 2, 16, false), DropoutKey{0.1f, 7, 8, 0}, 12},
        {AttentionLayout(2, 33, 4, 2, 8, true), DropoutKey{0.1f, 7, 9, 5}, 13},
        {AttentionLayout(1, 300, 2, 1, 16, true), DropoutKey{0.1f, 3, 4, 2}, 14},
        {AttentionLayout(1, 130, 4, 2, 64, false), DropoutKey{}, 15},
        {AttentionLayout(2, 128, 2, 2, 64, true), DropoutKey{0.2f, 5, 6, 1}, 16},
    };
}

// What a case reads: q, k and v in its layout, dout, and dx0, where the gradients start (random
// and non-zero, so that a backward that overwrites instead of accumulating fails).
template <class T>
struct AttentionInputs {
    std::vector<T> x, dout, dx0;
    explicit AttentionInputs(const AttentionCase& c) {
        std::mt19937_64 rng(c.seed);
        x = random_values<T>(rng, c.layout.size);
        dout = random_values<T>(rng, c.layout.out_size());
        dx0 = random_values<T>(rng, c.layout.size);
    }
};

// The CPU kernels' scratch for a forward or a backward of shape s (both cores use the same).
template <class T>
std::vector<float> cpu_scratch(const AttentionShape& s) {
    return std::vector<float>(
        std::max(cpu::attention_forward_scratch<T>(s), cpu::attention_backward_scratch<T>(s)));
}

// The flash core's CPU results on one case: out, lse, and dx0 plus the gradients.
template <class T>
struct AttentionReference : AttentionInputs<T> {
    std::vector<T> out, dx;
    std::vector<float> lse;

    explicit AttentionReference(const AttentionCase& c) : AttentionInputs<T>(c) {
        const AttentionLayout& L = c.layout;
        const AttentionShape& s = L.shape;
        const T* in = this->x.data();
        std::vector<float> scratch = cpu_scratch<T>(s);
        out.resize(L.out_size());
        lse.resize(L.lse_size());
        cpu::attention_forward<T>(out.data(), lse.data(), in + L.q_offset, in + L.k_offset,
                                  in + L.v_offset, s, c.dropout, scratch.data());
        dx = this->dx0;
        cpu::attention_backward<T>(dx.data() + L.q_offset, dx.data() + L.k_offset,
                                   dx.data() + L.v_offset, this->dout.data(), in + L.q_offset,
                                   in + L.k_offset, in + L.v_offset, out.data(), lse.data(), s,
                                   c.dropout, scratch.data());
    }
};

// The eager core's CPU results on one case (cpu::eager_attention_forward): out, the saved
// probabilities (B, A, S, S), and dx0 plus the gradients.
template <class T>
struct EagerAttentionReference : AttentionInputs<T> {
    std::vector<T> out, probs, dx;

    explicit EagerAttentionReference(const AttentionCase& c) : AttentionInputs<T>(c) {
        const AttentionLayout& L = c.layout;
        const AttentionShape& s = L.shape;
        const T* in = this->x.data();
        std::vector<float> scratch = cpu_scratch<T>(s);
        out.resize(L.out_size());
        probs.resize(s.B * s.A * s.S * s.S);
        cpu::eager_attention_forward<T>(out.data(), probs.data(), in + L.q_offset, in + L.k_offset,
                                        in + L.v_offset, s, c.dropout, scratch.data());
        dx = this->dx0;
        cpu::eager_attention_backward<T>(dx.data() + L.q_offset, dx.data() + L.k_offset,
                                         dx.data() + L.v_offset, this->dout.data(), in + L.q_offset,
                                         in + L.k_offset, in + L.v_offset, probs.data(), s,
                                         c.dropout, scratch.data());
    }
};

// One line that names a case, for INFO() in the tests that loop over cases.
inline std::string describe(const AttentionCase& c) {
    const AttentionShape& s = c.layout.shape;
    return "B " + std::to_string(s.B) + " S " + std::to_string(s.S) + " A " + std::to_string(s.A) +
           " KV " + std::to_string(s.KV) + " D " + std::to_string(s.D) + " q_stride " +
           std::to_string(s.q_stride) + " dropout " + std::to_string(c.dropout.p);
}

}  // namespace remat::test
