// The CPU kernels: every backward against central finite differences in double, forwards against
// naive references and across storage types (float vs double, bf16 vs float), and the dropout
// RNG's determinism. Performance is not tested here; shapes are tiny so the file runs in well
// under a second.
#include "runtime/cpu/kernels.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "tests/attention_cases.hpp"

using namespace remat::cpu;

namespace {

using Vec = std::vector<double>;

// Every backward accumulates (+=) into each gradient it produces, activations' and parameters'
// alike, so every test starts each gradient from random values g0 and compares g - g0 with the
// finite difference: a backward that overwrites (or zeroes) a gradient fails.
//
// Central differences in double with step h = 1e-6: the truncation error, O(h^2 * f'''), is about
// 1e-12, and the rounding error, about 1e-16 * |objective| / h, is about 1e-9 for the objectives
// of order 1-10 used here. Both sit well below atol 1e-7; rtol 1e-6 covers larger gradients,
// whose objectives (and so rounding error) grow with them.
constexpr double fd_step = 1e-6;
constexpr double fd_atol = 1e-7;
constexpr double fd_rtol = 1e-6;

Vec random_vec(std::mt19937_64& rng, std::size_t n, double lo = -1.0, double hi = 1.0) {
    std::uniform_real_distribution<double> dist(lo, hi);
    Vec x(n);
    for (double& e : x) e = dist(rng);
    return x;
}

double weighted_sum(const Vec& out, const Vec& weights) {
    REQUIRE(out.size() == weights.size());
    double sum = 0;
    for (std::size_t i = 0; i < out.size(); ++i) sum += out[i] * weights[i];
    return sum;
}

Vec minus(const Vec& a, const Vec& b) {
    Vec d(a.size());
    for (std::size_t i = 0; i < a.size(); ++i) d[i] = a[i] - b[i];
    return d;
}

// Compares `grad` with the central difference of `objective` in every element of `x`, which the
// objective reads by reference.
template <class Objective>
void check_gradient(const std::string& what, Vec& x, const Vec& grad, Objective objective) {
    REQUIRE(grad.size() == x.size());
    std::size_t failures = 0;
    for (std::size_t k = 0; k < x.size(); ++k) {
        const double saved = x[k];
        x[k] = saved + fd_step;
        const double up = objective();
        x[k] = saved - fd_step;
        const double down = objective();
        x[k] = saved;
        const double ref = (up - down) / (2 * fd_step);
        if (std::abs(grad[k] - ref) > fd_atol + fd_rtol * std::abs(ref) && ++failures <= 5)
            FAIL_CHECK(what << "[" << k << "]: analytic " << grad[k] << ", finite difference "
                            << ref);
    }
    CHECK_MESSAGE(failures == 0, what << ": " << failures << " of " << x.size() << " elements off");
}

void check_close(const std::string& what, const Vec& ref, const Vec& got, double atol,
                 double rtol) {
    REQUIRE(ref.size() == got.size());
    std::size_t failures = 0;
    for (std::size_t k = 0; k < ref.size(); ++k)
        if (!(std::abs(got[k] - ref[k]) <= atol + rtol * std::abs(ref[k])) && ++failures <= 5)
            FAIL_CHECK(what << "[" << k << "]: reference " << ref[k] << ", got " << got[k]);
    CHECK_MESSAGE(failures == 0,
                  what << ": " << failures << " of " << ref.size() << " elements off");
}

template <class T>
std::vector<T> from_double(const Vec& x) {
    std::vector<T> y(x.size());
    for (std::size_t i = 0; i < x.size(); ++i) y[i] = store<T>(static_cast<acc_t<T>>(x[i]));
    return y;
}

template <class T>
Vec to_double(const std::vector<T>& y) {
    Vec x(y.size());
    for (std::size_t i = 0; i < y.size(); ++i) x[i] = static_cast<double>(load(y[i]));
    return x;
}

// Inputs of the cross-type checks are made exactly representable in bf16 first, so the bf16 and
// float runs differ only by what the kernels round, not by what the test feeds them.
Vec round_to_bf16(const Vec& x) { return to_double(from_double<bf16>(x)); }

// ---- linear ----

struct LinearRun {
    Vec out, dinp, dw, dbias;
};

// dinp, dw and dbias start from dinp0, dw0 and dbias0, so a backward that overwrites instead of
// accumulating fails the cross-type checks too.
template <class T>
LinearRun run_linear(const Vec& inp, const Vec& w, const Vec& bias, const Vec& dout,
                     const Vec& dinp0, const Vec& dw0, const Vec& dbias0, std::size_t N,
                     std::size_t I, std::size_t O) {
    const auto inp_t = from_double<T>(inp), w_t = from_double<T>(w), bias_t = from_double<T>(bias);
    std::vector<float> staging(
        std::max(linear_forward_staging<T>(N, I, O), linear_backward_staging<T>(N, I, O)));
    std::vector<T> out(N * O);
    linear_forward<T>(out.data(), inp_t.data(), w_t.data(), bias_t.data(), N, I, O, staging.data());
    const auto dout_t = from_double<T>(dout);
    std::vector<T> dinp = from_double<T>(dinp0), dw = from_double<T>(dw0),
                   dbias = from_double<T>(dbias0);
    linear_backward<T>(dinp.data(), dw.data(), dbias.data(), dout_t.data(), inp_t.data(),
                       w_t.data(), N, I, O, staging.data());
    return {to_double(out), to_double(dinp), to_double(dw), to_double(dbias)};
}

// ---- attention ----

// Where q, k and v lie in one buffer (GPT-2's fused qkv or three tensors): the GPU and flash tests'
// layout.
using remat::test::AttentionLayout;

struct AttentionRun {
    Vec out, lse, dx;  // dx in the layout of the inputs
};

// Scratch gets a guard tail; a kernel that writes past its `*_scratch` size fails the test.
template <class A>
std::vector<A> guarded(std::size_t n) {
    return std::vector<A>(n + 16, A(12345));
}
template <class A>
void check_guard(const std::vector<A>& scratch, std::size_t n) {
    for (std::size_t i = n; i < scratch.size(); ++i)
        if (scratch[i] != A(12345))
            FAIL("kernel wrote past its scratch size at " << i << " of " << n);
}

// Forward, then backward when `dout` is given. `dx0` is what the gradient buffer holds before the
// backward (zeros when empty), which must add into every element that lies in q, k or v and leave
// the rest alone.
template <class T>
AttentionRun run_attention(const AttentionLayout& L, const Vec& x, const Vec& dout,
                           const DropoutKey& key, const Vec& dx0 = {}) {
    using A = acc_t<T>;
    const auto xt = from_double<T>(x);
    std::vector<T> out(L.out_size());
    std::vector<A> lse(L.lse_size());
    const std::size_t fwd_n = attention_forward_scratch<T>(L.shape);
    auto scratch = guarded<A>(fwd_n);
    attention_forward<T>(out.data(), lse.data(), xt.data() + L.q_offset, xt.data() + L.k_offset,
                         xt.data() + L.v_offset, L.shape, key, scratch.data());
    check_guard(scratch, fwd_n);
    AttentionRun run{to_double(out), to_double(lse), {}};
    if (dout.empty()) return run;
    auto dx = from_double<T>(dx0.empty() ? Vec(x.size(), 0.0) : dx0);
    REQUIRE(dx.size() == x.size());
    const auto dout_t = from_double<T>(dout);
    const std::size_t bwd_n = attention_backward_scratch<T>(L.shape);
    auto bscratch = guarded<A>(bwd_n);
    attention_backward<T>(dx.data() + L.q_offset, dx.data() + L.k_offset, dx.data() + L.v_offset,
                          dout_t.data(), xt.data() + L.q_offset, xt.data() + L.k_offset,
                          xt.data() + L.v_offset, out.data(), lse.data(), L.shape, key,
                          bscratch.data());
    check_guard(bscratch, bwd_n);
    run.dx = to_double(dx);
    return run;
}

// The eager core (saved probabilities), as run_attention runs the flash core; lse is left empty
// and `probs` (B, A, S, S) holds what the forward saved.
struct EagerRun {
    Vec out, probs, dx;
};

template <class T>
EagerRun run_eager_attention(const AttentionLayout& L, const Vec& x, const Vec& dout,
                             const DropoutKey& key, const Vec& dx0 = {}) {
    using A = acc_t<T>;
    const AttentionShape& s = L.shape;
    const auto xt = from_double<T>(x);
    std::vector<T> out(L.out_size()), probs(s.B * s.A * s.S * s.S);
    const std::size_t fwd_n = attention_forward_scratch<T>(s);
    auto scratch = guarded<A>(fwd_n);
    eager_attention_forward<T>(out.data(), probs.data(), xt.data() + L.q_offset,
                               xt.data() + L.k_offset, xt.data() + L.v_offset, s, key,
                               scratch.data());
    check_guard(scratch, fwd_n);
    EagerRun run{to_double(out), to_double(probs), {}};
    if (dout.empty()) return run;
    auto dx = from_double<T>(dx0.empty() ? Vec(x.size(), 0.0) : dx0);
    const auto dout_t = from_double<T>(dout);
    const std::size_t bwd_n = attention_backward_scratch<T>(s);
    auto bscratch = guarded<A>(bwd_n);
    eager_attention_backward<T>(dx.data() + L.q_offset, dx.data() + L.k_offset,
                                dx.data() + L.v_offset, dout_t.data(), xt.data() + L.q_offset,
                                xt.data() + L.k_offset, xt.data() + L.v_offset, probs.data(), s,
                                key, bscratch.data());
    check_guard(bscratch, bwd_n);
    run.dx = to_double(dx);
    return run;
}

// Attention inputs exact in bf16 (q, k, v in [-2, 2]; dout and the gradients' start in [-1, 1]),
// so that float and bf16 runs read the same values.
struct Bf16Inputs {
    Vec x, dout, dx0;
    Bf16Inputs(const AttentionLayout& L, std::uint64_t seed) {
        std::mt19937_64 rng(seed);
        x = round_to_bf16(random_vec(rng, L.size, -2, 2));
        dout = round_to_bf16(random_vec(rng, L.out_size()));
        dx0 = round_to_bf16(random_vec(rng, L.size));
    }
};

// Materializes every softmax row, as eager attention does, in double.
Vec naive_attention(const AttentionLayout& L, const Vec& x, const DropoutKey& key, Vec& lse) {
    const AttentionShape& s = L.shape;
    const std::size_t group = s.A / s.KV;
    auto at = [&](std::size_t offset, std::size_t stride, std::size_t b, std::size_t i,
                  std::size_t head,
                  std::size_t d) { return x[offset + (b * s.S + i) * stride + head * s.D + d]; };
    Vec out(L.out_size(), 0.0);
    lse.assign(L.lse_size(), 0.0);
    for (std::size_t b = 0; b < s.B; ++b)
        for (std::size_t h = 0; h < s.A; ++h)
            for (std::size_t i = 0; i < s.S; ++i) {
                Vec scores(i + 1);
                for (std::size_t j = 0; j <= i; ++j) {
                    double dot = 0;
                    for (std::size_t d = 0; d < s.D; ++d)
                        dot += at(L.q_offset, s.q_stride, b, i, h, d) *
                               at(L.k_offset, s.k_stride, b, j, h / group, d);
                    scores[j] = dot / std::sqrt(static_cast<double>(s.D));
                }
                double sum = 0;
                for (double sc : scores) sum += std::exp(sc);
                lse[(b * s.A + h) * s.S + i] = std::log(sum);
                for (std::size_t j = 0; j <= i; ++j) {
                    double prob = std::exp(scores[j]) / sum;
                    if (key.p > 0) {
                        const std::uint64_t index =
                            ((key.index0 + b) * s.A + h) * s.S * s.S + i * s.S + j;
                        prob = dropout_keep(key.seed, key.stream, index, key.p)
                                   ? prob / (1.0 - key.p)
                                   : 0.0;
                    }
                    for (std::size_t d = 0; d < s.D; ++d)
                        out[((b * s.S + i) * s.A + h) * s.D + d] +=
                            prob * at(L.v_offset, s.v_stride, b, j, h / group, d);
                }
            }
    return out;
}

void check_attention_gradients(const AttentionLayout& L, float p, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    Vec x = random_vec(rng, L.size);
    const Vec weights = random_vec(rng, L.out_size());
    const DropoutKey key{p, 42, 7, 0};
    // The backward adds into dq, dk and dv; the fused buffer's unused k/v slots, which no
    // objective reads, must keep their starting values (finite difference 0).
    const Vec dx0 = random_vec(rng, L.size);
    const AttentionRun run = run_attention<double>(L, x, weights, key, dx0);
    check_gradient("dqkv", x, minus(run.dx, dx0),
                   [&] { return weighted_sum(run_attention<double>(L, x, {}, key).out, weights); });
}

}  // namespace

TEST_SUITE("kernels") {
    TEST_CASE("kernels::bf16") {
        SUBCASE("to_bf16 rounds to nearest even") {
            CHECK(to_bf16(1.0f).bits == 0x3f80);
            CHECK(to_bf16(-2.0f).bits == 0xc000);
            CHECK(to_bf16(1.0f + 0x1.0p-8f).bits == 0x3f80);               // halfway, down to even
            CHECK(to_bf16(1.0f + 3 * 0x1.0p-8f).bits == 0x3f82);           // halfway, up to even
            CHECK(to_bf16(1.0f + 0x1.0p-8f + 0x1.0p-20f).bits == 0x3f81);  // past halfway, up
            CHECK(to_bf16(std::numeric_limits<float>::infinity()).bits == 0x7f80);
            CHECK(to_bf16(std::numeric_limits<float>::max()).bits ==
                  0x7f80);  // rounds up to infinity
            CHECK(std::isnan(to_float(to_bf16(std::numeric_limits<float>::quiet_NaN()))));
        }
        SUBCASE("values with 8 significant bits round-trip exactly") {
            for (float f : {0.0f, 1.0f, -1.5f, 0.15625f, 65280.0f, 0x1.fep-100f})
                CHECK(to_float(to_bf16(f)) == f);
        }
        SUBCASE("convert and convert_back round-trip bf16") {
            const std::vector<bf16> x = {to_bf16(0.5f), to_bf16(-3.25f), to_bf16(1e-3f)};
            std::vector<float> f(x.size());
            std::vector<bf16> y(x.size());
            convert(f.data(), x.data(), x.size());
            convert_back(y.data(), f.data(), f.size());
            for (std::size_t i = 0; i < x.size(); ++i) CHECK(y[i].bits == x[i].bits);
            CHECK(f[1] == -3.25f);
        }
    }

    TEST_CASE("kernels::add_forward and accumulate") {
        const Vec a = {1, 2, 3}, b = {0.5, -4, 8};
        Vec out(3);
        add_forward(out.data(), a.data(), b.data(), 3);
        CHECK(out == Vec{1.5, -2, 11});
        accumulate(out.data(), a.data(), 3);
        CHECK(out == Vec{2.5, 0, 14});
    }

    TEST_CASE("kernels::dropout") {
        SUBCASE("uniform01 lies in [0, 1) and is a pure function of its arguments") {
            double sum = 0;
            std::size_t outside = 0, unstable = 0;
            for (std::uint64_t i = 0; i < 1000; ++i) {
                const float u = uniform01(1, 2, i);
                outside += !(u >= 0.0f && u < 1.0f);
                unstable += u != uniform01(1, 2, i);
                sum += u;
            }
            CHECK(outside == 0);
            CHECK(unstable == 0);
            CHECK(sum / 1000 == doctest::Approx(0.5).epsilon(0.05));
            CHECK(uniform01(1, 2, 3) != uniform01(1, 3, 3));
            CHECK(uniform01(1, 2, 3) != uniform01(2, 2, 3));
        }
        SUBCASE("keeps about 1 - p, scales kept elements by 1 / (1 - p), same mask every call") {
            const std::size_t n = 100000;
            const float p = 0.1f;
            const std::vector<float> inp(n, 1.0f);
            std::vector<float> a(n), b(n);
            const DropoutKey key{p, 1234, 5, 0};
            dropout_forward(a.data(), inp.data(), n, key);
            dropout_forward(b.data(), inp.data(), n, key);
            CHECK(a == b);
            std::size_t kept = 0, kept_unscaled = 0;
            for (float e : a) {
                if (e == 0.0f) continue;
                ++kept;
                if (e != doctest::Approx(1.0 / 0.9).epsilon(1e-6)) ++kept_unscaled;
            }
            CHECK(kept_unscaled == 0);
            // Binomial standard deviation sqrt(p (1 - p) / n) ~ 0.001; five of them.
            CHECK(std::abs(static_cast<double>(kept) / static_cast<double>(n) - 0.9) < 0.005);
            DropoutKey other = key;
            other.stream = 6;
            dropout_forward(b.data(), inp.data(), n, other);
            CHECK(a != b);
        }
        SUBCASE("index0 places a slice in the global stream") {
            const std::size_t n = 1000;
            const std::vector<float> inp(n, 2.0f);
            std::vector<float> whole(n), tail(n / 2);
            dropout_forward(whole.data(), inp.data(), n, DropoutKey{0.5f, 9, 9, 0});
            dropout_forward(tail.data(), inp.data(), n / 2, DropoutKey{0.5f, 9, 9, n / 2});
            CHECK(std::equal(tail.begin(), tail.end(), whole.begin() + n / 2));
        }
        SUBCASE("p = 0 copies") {
            const Vec inp = {1, -2, 3};
            Vec out(3);
            dropout_forward(out.data(), inp.data(), 3, DropoutKey{});
            CHECK(out == inp);
        }
        SUBCASE("backward matches finite differences") {
            for (float p : {0.3f, 0.0f}) {  // p = 0 takes the identity's own path
                CAPTURE(p);
                std::mt19937_64 rng(1);
                const std::size_t n = 40;
                Vec x = random_vec(rng, n);
                const Vec w = random_vec(rng, n);
                const DropoutKey key{p, 3, 4, 100};
                const Vec dinp0 = random_vec(rng, n);
                Vec dinp = dinp0, out(n);
                dropout_backward(dinp.data(), w.data(), n, key);
                check_gradient("dinp", x, minus(dinp, dinp0), [&] {
                    dropout_forward(out.data(), x.data(), n, key);
                    return weighted_sum(out, w);
                });
            }
        }
    }

    TEST_CASE("kernels::gelu") {
        SUBCASE("forward is GPT-2's tanh approximation") {
            const Vec x = {1.0, -1.0, 3.0};
            Vec out(3);
            gelu_forward(out.data(), x.data(), 3);
            CHECK(out[0] == doctest::Approx(0.8411919906082768).epsilon(1e-14));
            CHECK(out[1] == doctest::Approx(-0.15880800939172324).epsilon(1e-14));
            CHECK(out[2] == doctest::Approx(2.996362607918227).epsilon(1e-14));
        }
        SUBCASE("backward matches finite differences") {
            std::mt19937_64 rng(2);
            const std::size_t n = 30;
            Vec x = random_vec(rng, n, -4, 4);
            const Vec w = random_vec(rng, n);
            const Vec dinp0 = random_vec(rng, n);
            Vec dinp = dinp0, out(n);
            gelu_backward(dinp.data(), w.data(), x.data(), n);
            check_gradient("dinp", x, minus(dinp, dinp0), [&] {
                gelu_forward(out.data(), x.data(), n);
                return weighted_sum(out, w);
            });
        }
    }

    TEST_CASE("kernels::swiglu") {
        SUBCASE("forward is silu(gate) * up") {
            const Vec gate = {1.0, -2.0}, up = {2.0, 0.5};
            Vec out(2);
            swiglu_forward(out.data(), gate.data(), up.data(), 2);
            CHECK(out[0] == doctest::Approx(1.4621171572600098).epsilon(1e-14));
            CHECK(out[1] == doctest::Approx(-0.11920292202211755).epsilon(1e-14));
        }
        SUBCASE("backward matches finite differences") {
            std::mt19937_64 rng(3);
            const std::size_t n = 30;
            Vec gate = random_vec(rng, n, -4, 4), up = random_vec(rng, n, -2, 2);
            const Vec w = random_vec(rng, n);
            const Vec dgate0 = random_vec(rng, n), dup0 = random_vec(rng, n);
            Vec dgate = dgate0, dup = dup0, out(n);
            swiglu_backward(dgate.data(), dup.data(), w.data(), gate.data(), up.data(), n);
            auto objective = [&] {
                swiglu_forward(out.data(), gate.data(), up.data(), n);
                return weighted_sum(out, w);
            };
            check_gradient("dgate", gate, minus(dgate, dgate0), objective);
            check_gradient("dup", up, minus(dup, dup0), objective);
        }
    }

    TEST_CASE("kernels::layernorm") {
        const std::size_t N = 6, H = 8;
        std::mt19937_64 rng(4);
        Vec inp = random_vec(rng, N * H, -2, 3), weight = random_vec(rng, H, 0.5, 1.5),
            bias = random_vec(rng, H);
        Vec out(N * H), mean(N), rstd(N);
        SUBCASE("forward normalizes each row with the biased variance") {
            const Vec ones(H, 1.0), zeros(H, 0.0);
            layernorm_forward(out.data(), mean.data(), rstd.data(), inp.data(), ones.data(),
                              zeros.data(), N, H);
            for (std::size_t n = 0; n < N; ++n) {
                double m = 0, sq = 0, ref_mean = 0, ref_var = 0;
                for (std::size_t i = 0; i < H; ++i) ref_mean += inp[n * H + i] / H;
                for (std::size_t i = 0; i < H; ++i)
                    ref_var += (inp[n * H + i] - ref_mean) * (inp[n * H + i] - ref_mean) / H;
                for (std::size_t i = 0; i < H; ++i) {
                    m += out[n * H + i] / H;
                    sq += out[n * H + i] * out[n * H + i] / H;
                }
                CHECK(std::abs(m) < 1e-14);
                CHECK(sq == doctest::Approx(ref_var / (ref_var + 1e-5)).epsilon(1e-12));
                CHECK(mean[n] == doctest::Approx(ref_mean).epsilon(1e-14));
                CHECK(rstd[n] == doctest::Approx(1 / std::sqrt(ref_var + 1e-5)).epsilon(1e-14));
            }
        }
        SUBCASE("backward matches finite differences; all gradients accumulate") {
            const Vec w = random_vec(rng, N * H);
            const Vec dinp0 = random_vec(rng, N * H);
            const Vec dweight0 = random_vec(rng, H), dbias0 = random_vec(rng, H);
            layernorm_forward(out.data(), mean.data(), rstd.data(), inp.data(), weight.data(),
                              bias.data(), N, H);
            Vec dinp = dinp0, dweight = dweight0, dbias = dbias0;
            layernorm_backward(dinp.data(), dweight.data(), dbias.data(), w.data(), inp.data(),
                               weight.data(), mean.data(), rstd.data(), N, H);
            auto objective = [&] {
                layernorm_forward(out.data(), mean.data(), rstd.data(), inp.data(), weight.data(),
                                  bias.data(), N, H);
                return weighted_sum(out, w);
            };
            check_gradient("dinp", inp, minus(dinp, dinp0), objective);
            check_gradient("dweight", weight, minus(dweight, dweight0), objective);
            check_gradient("dbias", bias, minus(dbias, dbias0), objective);
        }
    }

    TEST_CASE("kernels::rmsnorm") {
        const std::size_t N = 6, H = 8;
        std::mt19937_64 rng(5);
        Vec inp = random_vec(rng, N * H, -2, 3), weight = random_vec(rng, H, 0.5, 1.5);
        Vec out(N * H), rstd(N);
        SUBCASE("forward is weight * x / sqrt(mean(x^2) + 1e-6)") {
            rmsnorm_forward(out.data(), rstd.data(), inp.data(), weight.data(), N, H);
            for (std::size_t n = 0; n < N; ++n) {
                double ms = 0;
                for (std::size_t i = 0; i < H; ++i) ms += inp[n * H + i] * inp[n * H + i] / H;
                CHECK(rstd[n] == doctest::Approx(1 / std::sqrt(ms + 1e-6)).epsilon(1e-14));
                for (std::size_t i = 0; i < H; ++i)
                    CHECK(out[n * H + i] ==
                          doctest::Approx(weight[i] * inp[n * H + i] / std::sqrt(ms + 1e-6))
                              .epsilon(1e-14));
            }
        }
        SUBCASE("backward matches finite differences; dinp and dweight accumulate") {
            const Vec w = random_vec(rng, N * H);
            const Vec dinp0 = random_vec(rng, N * H);
            const Vec dweight0 = random_vec(rng, H);
            rmsnorm_forward(out.data(), rstd.data(), inp.data(), weight.data(), N, H);
            Vec dinp = dinp0, dweight = dweight0;
            rmsnorm_backward(dinp.data(), dweight.data(), w.data(), inp.data(), weight.data(),
                             rstd.data(), N, H);
            auto objective = [&] {
                rmsnorm_forward(out.data(), rstd.data(), inp.data(), weight.data(), N, H);
                return weighted_sum(out, w);
            };
            check_gradient("dinp", inp, minus(dinp, dinp0), objective);
            check_gradient("dweight", weight, minus(dweight, dweight0), objective);
        }
    }

    TEST_CASE("kernels::linear") {
        const std::size_t N = 6, I = 8, O = 5;
        std::mt19937_64 rng(6);
        Vec inp = random_vec(rng, N * I), w = random_vec(rng, O * I), bias = random_vec(rng, O);
        const Vec weights = random_vec(rng, N * O);
        SUBCASE("staging sizes") {
            CHECK(linear_forward_staging<float>(N, I, O) == 0);
            CHECK(linear_backward_staging<double>(N, I, O) == 0);
            CHECK(linear_forward_staging<bf16>(N, I, O) == N * I + O * I + N * O);
            CHECK(linear_backward_staging<bf16>(N, I, O) == N * O + O * I + 2 * N * I + O * I);
        }
        SUBCASE("forward is inp * w^T + bias") {
            Vec out(N * O);
            linear_forward<double>(out.data(), inp.data(), w.data(), bias.data(), N, I, O, nullptr);
            for (std::size_t n = 0; n < N; ++n)
                for (std::size_t o = 0; o < O; ++o) {
                    double ref = bias[o];
                    for (std::size_t i = 0; i < I; ++i) ref += inp[n * I + i] * w[o * I + i];
                    CHECK(out[n * O + o] == doctest::Approx(ref).epsilon(1e-14));
                }
        }
        SUBCASE("backward matches finite differences; dinp, dw and dbias accumulate") {
            const Vec dinp0 = random_vec(rng, N * I);
            const Vec dw0 = random_vec(rng, O * I), dbias0 = random_vec(rng, O);
            Vec dinp = dinp0, dw = dw0, dbias = dbias0, out(N * O);
            linear_backward<double>(dinp.data(), dw.data(), dbias.data(), weights.data(),
                                    inp.data(), w.data(), N, I, O, nullptr);
            auto objective = [&] {
                linear_forward<double>(out.data(), inp.data(), w.data(), bias.data(), N, I, O,
                                       nullptr);
                return weighted_sum(out, weights);
            };
            check_gradient("dinp", inp, minus(dinp, dinp0), objective);
            check_gradient("dw", w, minus(dw, dw0), objective);
            check_gradient("dbias", bias, minus(dbias, dbias0), objective);
        }
        SUBCASE("no bias") {
            const Vec dinp0 = random_vec(rng, N * I), dw0 = random_vec(rng, O * I);
            Vec out(N * O), dinp = dinp0, dw = dw0;
            linear_forward<double>(out.data(), inp.data(), w.data(), nullptr, N, I, O, nullptr);
            linear_backward<double>(dinp.data(), dw.data(), nullptr, weights.data(), inp.data(),
                                    w.data(), N, I, O, nullptr);
            auto objective = [&] {
                linear_forward<double>(out.data(), inp.data(), w.data(), nullptr, N, I, O, nullptr);
                return weighted_sum(out, weights);
            };
            check_gradient("dinp", inp, minus(dinp, dinp0), objective);
            check_gradient("dw", w, minus(dw, dw0), objective);
        }
        SUBCASE("float agrees with double") {
            const Vec dinp0 = random_vec(rng, N * I);
            const Vec dw0 = random_vec(rng, O * I), dbias0 = random_vec(rng, O);
            const LinearRun d =
                run_linear<double>(inp, w, bias, weights, dinp0, dw0, dbias0, N, I, O);
            const LinearRun f =
                run_linear<float>(inp, w, bias, weights, dinp0, dw0, dbias0, N, I, O);
            // fp32 sums of 8 terms of order 1: a few ulps, far inside 1e-5 relative (1e-6 absolute
            // for results that cancel towards zero).
            check_close("out", d.out, f.out, 1e-6, 1e-5);
            check_close("dinp", d.dinp, f.dinp, 1e-6, 1e-5);
            check_close("dw", d.dw, f.dw, 1e-6, 1e-5);
            check_close("dbias", d.dbias, f.dbias, 1e-6, 1e-5);
        }
        SUBCASE("bf16 agrees with float") {
            const Vec inp_b = round_to_bf16(inp), w_b = round_to_bf16(w),
                      bias_b = round_to_bf16(bias);
            const Vec dout_b = round_to_bf16(weights);
            const Vec dinp0 = round_to_bf16(random_vec(rng, N * I)),
                      dw0 = round_to_bf16(random_vec(rng, O * I)),
                      dbias0 = round_to_bf16(random_vec(rng, O));
            const LinearRun f =
                run_linear<float>(inp_b, w_b, bias_b, dout_b, dinp0, dw0, dbias0, N, I, O);
            const LinearRun b =
                run_linear<bf16>(inp_b, w_b, bias_b, dout_b, dinp0, dw0, dbias0, N, I, O);
            // bf16 keeps 8 significant bits: each output is the fp32 result rounded once, 2^-9
            // relative; atol covers outputs that cancel towards zero.
            check_close("out", f.out, b.out, 1e-3, 1e-2);
            check_close("dinp", f.dinp, b.dinp, 1e-3, 1e-2);
            check_close("dw", f.dw, b.dw, 1e-3, 1e-2);
            check_close("dbias", f.dbias, b.dbias, 1e-3, 1e-2);
        }
    }

    TEST_CASE("kernels::rotary") {
        const std::size_t B = 2, S = 5, heads = 3, D = 8, n = B * S * heads * D;
        std::mt19937_64 rng(7);
        Vec x = random_vec(rng, n);
        Vec out(n);
        SUBCASE("forward is HF's x * cos + rotate_half(x) * sin") {
            rotary_forward(out.data(), x.data(), B, S, heads, D);
            for (std::size_t b = 0; b < B; ++b)
                for (std::size_t s = 0; s < S; ++s)
                    for (std::size_t h = 0; h < heads; ++h) {
                        const double* row = x.data() + ((b * S + s) * heads + h) * D;
                        for (std::size_t d = 0; d < D; ++d) {
                            const std::size_t j = d % (D / 2);
                            const double angle = static_cast<double>(s) /
                                                 std::pow(10000.0, 2.0 * static_cast<double>(j) /
                                                                       static_cast<double>(D));
                            const double rotated = d < D / 2 ? -row[d + D / 2] : row[d - D / 2];
                            const double ref = row[d] * std::cos(angle) + rotated * std::sin(angle);
                            CHECK(out[((b * S + s) * heads + h) * D + d] ==
                                  doctest::Approx(ref).epsilon(1e-14));
                        }
                    }
        }
        SUBCASE("backward matches finite differences") {
            const Vec w = random_vec(rng, n);
            const Vec dinp0 = random_vec(rng, n);
            Vec dinp = dinp0;
            rotary_backward(dinp.data(), w.data(), B, S, heads, D);
            check_gradient("dinp", x, minus(dinp, dinp0), [&] {
                rotary_forward(out.data(), x.data(), B, S, heads, D);
                return weighted_sum(out, w);
            });
        }
    }

    TEST_CASE("kernels::attention") {
        const std::size_t B = 2, S = 5, A = 4, KV = 2, D = 4;
        SUBCASE("scratch sizes") {
            const AttentionShape s{B, S, A, KV, D, A * D, KV * D, KV * D};
            CHECK(attention_forward_scratch<float>(s) == S * S + 4 * S * D);
            CHECK(attention_backward_scratch<bf16>(s) == 2 * S * S + 7 * S * D);
        }
        SUBCASE("forward equals a naive reference that materializes softmax") {
            for (bool fused : {false, true})
                for (float p : {0.0f, 0.3f}) {
                    CAPTURE(fused);
                    CAPTURE(p);
                    const AttentionLayout L(B, S, A, KV, D, fused);
                    std::mt19937_64 rng(8);
                    const Vec x = random_vec(rng, L.size, -2, 2);
                    const DropoutKey key{p, 11, 12, 3};
                    Vec lse;
                    const Vec ref = naive_attention(L, x, key, lse);
                    const AttentionRun run = run_attention<double>(L, x, {}, key);
                    check_close("out", ref, run.out, 1e-13, 1e-12);
                    check_close("lse", lse, run.lse, 1e-13, 1e-12);
                }
        }
        SUBCASE("backward matches finite differences: separate tensors, GQA") {
            check_attention_gradients(AttentionLayout(B, S, A, KV, D, false), 0.0f, 9);
        }
        SUBCASE("backward matches finite differences: multi-head, KV = A") {
            check_attention_gradients(AttentionLayout(B, S, A, A, D, false), 0.0f, 10);
        }
        SUBCASE("backward matches finite differences: dropout") {
            check_attention_gradients(AttentionLayout(B, S, A, KV, D, false), 0.3f, 11);
        }
        SUBCASE("backward matches finite differences: fused qkv, dropout") {
            check_attention_gradients(AttentionLayout(B, S, A, KV, D, true), 0.3f, 12);
        }
        SUBCASE("index0 places a batch slice in the global dropout stream") {
            const AttentionLayout whole(B, S, A, KV, D, true), second(1, S, A, KV, D, true);
            std::mt19937_64 rng(13);
            const Vec x = random_vec(rng, whole.size);
            const Vec x_second(x.begin() + static_cast<std::ptrdiff_t>(second.size), x.end());
            const AttentionRun w = run_attention<double>(whole, x, {}, DropoutKey{0.5f, 1, 2, 0});
            const AttentionRun s =
                run_attention<double>(second, x_second, {}, DropoutKey{0.5f, 1, 2, 1});
            CHECK(std::equal(s.out.begin(), s.out.end(),
                             w.out.begin() + static_cast<std::ptrdiff_t>(second.out_size())));
        }
        SUBCASE("float agrees with double") {
            const AttentionLayout L(B, S, A, KV, D, true);
            std::mt19937_64 rng(14);
            const Vec x = random_vec(rng, L.size, -2, 2), dout = random_vec(rng, L.out_size());
            const Vec dx0 = random_vec(rng, L.size);
            const DropoutKey key{0.2f, 5, 6, 0};
            const AttentionRun d = run_attention<double>(L, x, dout, key, dx0);
            const AttentionRun f = run_attention<float>(L, x, dout, key, dx0);
            // Softmax and sums over S = 5 terms of order 1 in fp32: errors of a few 1e-7.
            check_close("out", d.out, f.out, 1e-6, 1e-5);
            check_close("lse", d.lse, f.lse, 1e-6, 1e-5);
            check_close("dqkv", d.dx, f.dx, 1e-6, 1e-5);
        }
        SUBCASE("bf16 agrees with float") {
            const AttentionLayout L(B, S, A, KV, D, false);
            const Bf16Inputs in(L, 15);
            const DropoutKey key{0.2f, 5, 6, 0};
            const AttentionRun f = run_attention<float>(L, in.x, in.dout, key, in.dx0);
            const AttentionRun b = run_attention<bf16>(L, in.x, in.dout, key, in.dx0);
            // The forward differs by one bf16 rounding of out (2^-9 relative). The backward also
            // reads that rounded out for rowsum(dO * O), as FlashAttention does, so its error is an
            // absolute one, up to D |dO| |O| 2^-9 ~ 1.6e-2 at these magnitudes (|O| <= 2); it shows
            // even where the exact gradient is 0, e.g. dq of position 0.
            check_close("out", f.out, b.out, 1e-3, 1e-2);
            check_close("lse", f.lse, b.lse, 1e-6, 1e-5);
            check_close("dqkv", f.dx, b.dx, 2e-2, 1e-2);
        }
    }

    TEST_CASE("kernels::eager attention") {
        const std::size_t B = 2, S = 5, A = 4, KV = 2, D = 4;
        SUBCASE(
            "forward equals the naive reference; probs are the causal softmax, before dropout") {
            for (bool fused : {false, true})
                for (float p : {0.0f, 0.3f}) {
                    CAPTURE(fused);
                    CAPTURE(p);
                    const AttentionLayout L(B, S, A, KV, D, fused);
                    std::mt19937_64 rng(18);
                    const Vec x = random_vec(rng, L.size, -2, 2);
                    const DropoutKey key{p, 11, 12, 3};
                    Vec lse;
                    const Vec ref = naive_attention(L, x, key, lse);
                    const EagerRun run = run_eager_attention<double>(L, x, {}, key);
                    check_close("out", ref, run.out, 1e-13, 1e-12);
                    // Each row sums to 1 over j <= i and is 0 above the diagonal, and out equals
                    // the flash core's.
                    const AttentionRun flash = run_attention<double>(L, x, {}, key);
                    for (std::size_t row = 0; row < B * A * S; ++row) {
                        const std::size_t i = row % S;
                        double sum = 0;
                        for (std::size_t j = 0; j < S; ++j) {
                            const double pij = run.probs[row * S + j];
                            if (j > i) CHECK(pij == 0.0);
                            sum += pij;
                        }
                        CHECK(sum == doctest::Approx(1.0).epsilon(1e-12));
                    }
                    check_close("out vs flash", flash.out, run.out, 1e-13, 1e-12);
                }
        }
        SUBCASE("backward matches finite differences: GQA, dropout, separate and fused qkv") {
            for (bool fused : {false, true}) {
                CAPTURE(fused);
                const AttentionLayout L(B, S, A, KV, D, fused);
                std::mt19937_64 rng(19);
                Vec x = random_vec(rng, L.size);
                const Vec weights = random_vec(rng, L.out_size());
                const DropoutKey key{0.3f, 42, 7, 1};
                const Vec dx0 = random_vec(rng, L.size);
                const EagerRun run = run_eager_attention<double>(L, x, weights, key, dx0);
                check_gradient("dqkv", x, minus(run.dx, dx0), [&] {
                    return weighted_sum(run_eager_attention<double>(L, x, {}, key).out, weights);
                });
            }
        }
        SUBCASE("bf16 agrees with float") {
            const AttentionLayout L(B, S, A, KV, D, true);
            const Bf16Inputs in(L, 20);
            const DropoutKey key{0.2f, 5, 6, 0};
            const EagerRun f = run_eager_attention<float>(L, in.x, in.dout, key, in.dx0);
            const EagerRun b = run_eager_attention<bf16>(L, in.x, in.dout, key, in.dx0);
            // P is rounded to bf16 once (2^-9 relative), which moves out = P V by up to
            // 2^-9 max|V| = 3.9e-3 absolute (|V| <= 2), before out's own rounding (2^-9
            // relative). The backward reads that P, so its errors are of the same order, absolute
            // near 0.
            check_close("probs", f.probs, b.probs, 1e-3, 1e-2);
            check_close("out", f.out, b.out, 5e-3, 1e-2);
            check_close("dqkv", f.dx, b.dx, 2e-2, 1e-2);
        }
    }

    TEST_CASE("kernels::embedding") {
        const std::size_t N = 6, S = 3, H = 4, V = 11;
        const std::vector<std::int32_t> ids = {
            3, 7, 3, 3, 10, 0};  // 3 repeats, in and across rows of a position
        std::mt19937_64 rng(16);
        Vec wte = random_vec(rng, V * H), wpe = random_vec(rng, S * H);
        Vec out(N * H);
        SUBCASE("forward adds the token and position rows") {
            embedding_forward(out.data(), ids.data(), wte.data(), wpe.data(), N, S, H);
            for (std::size_t n = 0; n < N; ++n)
                for (std::size_t i = 0; i < H; ++i)
                    CHECK(out[n * H + i] ==
                          wte[static_cast<std::size_t>(ids[n]) * H + i] + wpe[(n % S) * H + i]);
            embedding_forward(out.data(), ids.data(), wte.data(),
                              static_cast<const double*>(nullptr), N, S, H);
            CHECK(out[5 * H] == wte[0]);
        }
        SUBCASE("backward matches finite differences; gradients accumulate") {
            const Vec w = random_vec(rng, N * H);
            const Vec dwte0 = random_vec(rng, V * H), dwpe0 = random_vec(rng, S * H);
            Vec dwte = dwte0, dwpe = dwpe0;
            embedding_backward(dwte.data(), dwpe.data(), w.data(), ids.data(), N, S, H);
            auto objective = [&] {
                embedding_forward(out.data(), ids.data(), wte.data(), wpe.data(), N, S, H);
                return weighted_sum(out, w);
            };
            check_gradient("dwte", wte, minus(dwte, dwte0), objective);
            check_gradient("dwpe", wpe, minus(dwpe, dwpe0), objective);
        }
    }

    TEST_CASE("kernels::cross_entropy") {
        const std::size_t N = 6, V = 11;
        const std::vector<std::int32_t> targets = {0, 10, 4, 4, 7, 2};
        std::mt19937_64 rng(17);
        Vec logits = random_vec(rng, N * V, -3, 3);
        Vec lse(N);
        SUBCASE("forward is the summed negative log-likelihood") {
            const double loss =
                cross_entropy_forward(lse.data(), logits.data(), targets.data(), N, V);
            double ref = 0;
            for (std::size_t n = 0; n < N; ++n) {
                double sum = 0;
                for (std::size_t j = 0; j < V; ++j) sum += std::exp(logits[n * V + j]);
                ref -=
                    std::log(std::exp(logits[n * V + static_cast<std::size_t>(targets[n])]) / sum);
                CHECK(lse[n] == doctest::Approx(std::log(sum)).epsilon(1e-14));
            }
            CHECK(loss == doctest::Approx(ref).epsilon(1e-14));
        }
        SUBCASE("large logits do not overflow") {
            std::vector<float> shifted(N * V);
            for (std::size_t i = 0; i < N * V; ++i)
                shifted[i] = static_cast<float>(logits[i] + 1000.0);
            std::vector<float> lse_f(N);
            const double base =
                cross_entropy_forward(lse.data(), logits.data(), targets.data(), N, V);
            const double loss =
                cross_entropy_forward(lse_f.data(), shifted.data(), targets.data(), N, V);
            CHECK(std::isfinite(loss));
            CHECK(loss == doctest::Approx(base).epsilon(1e-3));
        }
        SUBCASE("backward matches finite differences") {
            const double scale = 1.0 / 7;
            cross_entropy_forward(lse.data(), logits.data(), targets.data(), N, V);
            const Vec dlogits0 = random_vec(rng, N * V);
            Vec dlogits = dlogits0;
            cross_entropy_backward(dlogits.data(), logits.data(), lse.data(), targets.data(), N, V,
                                   scale);
            check_gradient("dlogits", logits, minus(dlogits, dlogits0), [&] {
                return scale *
                       cross_entropy_forward(lse.data(), logits.data(), targets.data(), N, V);
            });
        }
    }

    TEST_CASE("kernels::adamw_step") {
        AdamW opt;
        opt.lr = 1e-2;
        opt.weight_decay = 0.1;
        const Vec param0 = {0.5, -1.0, 2.0, 0.0}, grad = {0.1, -0.2, 3.0, 1e-3};
        Vec param = param0, m(4, 0.0), v(4, 0.0), denom(4);
        SUBCASE("step 1: bias correction makes the update lr * g / (|g| + eps)") {
            adamw_step(param.data(), grad.data(), m.data(), v.data(), denom.data(), 4, opt, 1);
            for (std::size_t i = 0; i < 4; ++i) {
                const double ref = param0[i] * (1 - opt.lr * opt.weight_decay) -
                                   opt.lr * grad[i] / (std::abs(grad[i]) + opt.eps);
                CHECK(param[i] == doctest::Approx(ref).epsilon(1e-12));
                CHECK(m[i] == doctest::Approx(0.1 * grad[i]).epsilon(1e-12));
                CHECK(v[i] == doctest::Approx(0.05 * grad[i] * grad[i]).epsilon(1e-12));
                CHECK(denom[i] == doctest::Approx(std::abs(grad[i]) + opt.eps).epsilon(1e-12));
            }
        }
        SUBCASE("step 3 from given moments, by hand") {
            m = {0.01, -0.02, 0.3, 0.0};
            v = {1e-4, 4e-4, 0.9, 1e-6};
            const Vec m0 = m, v0 = v;
            adamw_step(param.data(), grad.data(), m.data(), v.data(), denom.data(), 4, opt, 3);
            for (std::size_t i = 0; i < 4; ++i) {
                const double mi = 0.9 * m0[i] + 0.1 * grad[i];
                const double vi = 0.95 * v0[i] + 0.05 * grad[i] * grad[i];
                const double m_hat = mi / (1 - 0.9 * 0.9 * 0.9);
                const double v_hat = vi / (1 - 0.95 * 0.95 * 0.95);
                const double ref = param0[i] * (1 - opt.lr * opt.weight_decay) -
                                   opt.lr * m_hat / (std::sqrt(v_hat) + opt.eps);
                CHECK(param[i] == doctest::Approx(ref).epsilon(1e-12));
            }
        }
    }
}
