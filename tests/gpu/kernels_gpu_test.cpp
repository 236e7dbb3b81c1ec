// The CUDA kernels of kernels_elementwise.cu, kernels_norm.cu and kernels_model.cu against the CPU
// kernels (remat::cpu), which the CPU tests check against finite differences: the same small
// random inputs through both, forward and backward, float and bf16. Every gradient starts from
// random non-zero values in both backends, so a kernel that writes (=) instead of accumulating
// (+=) fails. Dropout's kept/dropped pattern must match the CPU's exactly.
// Not here: linear and attention (their own tests), speed, and large shapes; every shape is tiny
// but chosen so rows and columns are not multiples of the block sizes.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "runtime/cpu/kernels.hpp"
#include "runtime/cuda/cuda_check.hpp"
#include "runtime/cuda/kernels.cuh"

namespace {

namespace cpu = remat::cpu;
namespace gpu = remat::rt::cuda;
using remat::rt::AdamW;
using remat::rt::bf16;
using remat::rt::DropoutKey;

// Tolerances, |got - ref| <= atol + rtol * |ref|:
// float: the GPU sums in another order (warp and block trees against the CPU's left-to-right
// loops), contracts a * b + c into FMAs, and its expf / tanhf / sinf / cosf may differ from
// glibc's by an ulp or two, so results sit a few fp32 ulps apart: far inside rtol 1e-5, with
// atol 1e-6 for results that cancel to near zero.
// bf16: each stored value is rounded to an 8-bit significand, so an fp32 difference of one ulp
// can flip a rounding: one bf16 ulp is at most 2^-7 (0.8%) relative, inside rtol 1e-2; atol 1e-2
// covers values near zero and dwte's atomics, whose order of roundings is not the CPU's.
// float results of a sum over a row or a column (norm outputs, statistics and gradients, lse):
// an fp32 sum's rounding error grows with its terms and partial sums, not with its result, so a
// sum that cancels to near zero is off by about sqrt(K) * 2^-24 * |terms| in absolute terms, and
// two summation orders differ by that much. Emulating the CPU's order and the kernels' (strided
// per-thread sums, warp and block trees) on the host for these shapes (K up to 777, terms of
// order 1) put them up to 1.2e-6 apart, over atol 1e-6; atol 1e-5 leaves a margin of 8x, while a
// real bug (a missed term, a wrong sign or index) is off by 1e-3 or more.
// fp32 outputs computed from bf16 inputs (statistics, lse) get the float tolerances: bf16 inputs
// are exact in fp32, so only the order of the sums differs.
struct Tolerance {
    double atol, rtol;
};
constexpr Tolerance fp32_tolerance{1e-6, 1e-5};
constexpr Tolerance fp32_sum_tolerance{1e-5, 1e-5};
constexpr Tolerance bf16_tolerance{1e-2, 1e-2};
template <class T>
constexpr Tolerance tolerance = std::is_same_v<T, bf16> ? bf16_tolerance : fp32_tolerance;
template <class T>
constexpr Tolerance sum_tolerance = std::is_same_v<T, bf16> ? bf16_tolerance : fp32_sum_tolerance;

template <class T>
double to_double(T x) {
    return static_cast<double>(remat::rt::load(x));
}

template <class T>
std::vector<T> random_vector(std::mt19937_64& rng, std::size_t n, float lo = -1.0f,
                             float hi = 1.0f) {
    std::uniform_real_distribution<float> dist(lo, hi);
    std::vector<T> v(n);
    for (T& e : v) e = remat::rt::store<T>(dist(rng));
    return v;
}

// Magnitudes in [0.25, 1], either sign: a dropped element (0) is never confused with a kept one.
template <class T>
std::vector<T> random_nonzero_vector(std::mt19937_64& rng, std::size_t n) {
    std::uniform_real_distribution<float> magnitude(0.25f, 1.0f);
    std::bernoulli_distribution negative(0.5);
    std::vector<T> v(n);
    for (T& e : v) e = remat::rt::store<T>(negative(rng) ? -magnitude(rng) : magnitude(rng));
    return v;
}

std::vector<std::int32_t> random_ids(std::mt19937_64& rng, std::size_t n, std::int32_t n_ids) {
    std::uniform_int_distribution<std::int32_t> dist(0, n_ids - 1);
    std::vector<std::int32_t> ids(n);
    for (std::int32_t& id : ids) id = dist(rng);
    return ids;
}

template <class T>
bool same_bits(T a, T b) {
    return std::memcmp(&a, &b, sizeof(T)) == 0;
}

// A CUDA stream for one test; destroyed without throwing.
class Stream {
  public:
    Stream() { CUDA_CHECK(cudaStreamCreate(&stream_)); }
    ~Stream() { cudaStreamDestroy(stream_); }
    Stream(const Stream&) = delete;
    Stream& operator=(const Stream&) = delete;
    operator cudaStream_t() const { return stream_; }

  private:
    cudaStream_t stream_ = nullptr;
};

// A device copy of a host vector (tests may allocate; the launchers never do).
template <class T>
class DeviceBuffer {
  public:
    explicit DeviceBuffer(std::size_t n) : n_(n) { CUDA_CHECK(cudaMalloc(&ptr_, bytes())); }
    explicit DeviceBuffer(const std::vector<T>& host) : DeviceBuffer(host.size()) {
        CUDA_CHECK(cudaMemcpy(ptr_, host.data(), n_ * sizeof(T), cudaMemcpyHostToDevice));
    }
    ~DeviceBuffer() { cudaFree(ptr_); }
    DeviceBuffer(const DeviceBuffer&) = delete;
    DeviceBuffer& operator=(const DeviceBuffer&) = delete;

    T* get() const { return ptr_; }
    // Waits for the stream's work, then copies the buffer back.
    std::vector<T> download(cudaStream_t s) const {
        CUDA_CHECK(cudaStreamSynchronize(s));
        std::vector<T> host(n_);
        CUDA_CHECK(cudaMemcpy(host.data(), ptr_, n_ * sizeof(T), cudaMemcpyDeviceToHost));
        return host;
    }

  private:
    std::size_t bytes() const { return std::max<std::size_t>(n_, 1) * sizeof(T); }
    std::size_t n_ = 0;
    T* ptr_ = nullptr;
};

template <class T>
void check_close(const std::string& what, const std::vector<T>& ref, const std::vector<T>& got,
                 Tolerance tol) {
    REQUIRE(ref.size() == got.size());
    std::size_t failures = 0;
    for (std::size_t k = 0; k < ref.size(); ++k) {
        const double r = to_double(ref[k]);
        const double g = to_double(got[k]);
        if (!(std::abs(g - r) <= tol.atol + tol.rtol * std::abs(r)) && ++failures <= 5)
            FAIL_CHECK(what << "[" << k << "]: cpu " << r << ", gpu " << g);
    }
    CHECK_MESSAGE(failures == 0,
                  what << ": " << failures << " of " << ref.size() << " elements off");
}

// ---- elementwise ----

template <class T>
void check_add_forward() {
    std::mt19937_64 rng(1);
    const std::size_t n = 1031;
    const auto a = random_vector<T>(rng, n), b = random_vector<T>(rng, n);
    std::vector<T> ref(n);
    cpu::add_forward(ref.data(), a.data(), b.data(), n);
    Stream s;
    DeviceBuffer<T> d_a(a), d_b(b), d_out(n);
    gpu::add_forward(d_out.get(), d_a.get(), d_b.get(), n, s);
    check_close("out", ref, d_out.download(s), tolerance<T>);
}

template <class T>
void check_accumulate() {
    std::mt19937_64 rng(2);
    const std::size_t n = 1031;
    const auto dst = random_vector<T>(rng, n), src = random_vector<T>(rng, n);
    auto ref = dst;
    cpu::accumulate(ref.data(), src.data(), n);
    Stream s;
    DeviceBuffer<T> d_dst(dst), d_src(src);
    gpu::accumulate(d_dst.get(), d_src.get(), n, s);
    check_close("dst", ref, d_dst.download(s), tolerance<T>);
}

template <class T>
void check_dropout(float p) {
    std::mt19937_64 rng(3);
    const std::size_t n = 5000 + 7;
    const DropoutKey key{p, 42, 7, 12345};
    const auto inp = random_nonzero_vector<T>(rng, n);
    const auto dout = random_nonzero_vector<T>(rng, n);
    const auto dinp0 = random_vector<T>(rng, n);
    std::vector<T> out_ref(n);
    cpu::dropout_forward(out_ref.data(), inp.data(), n, key);
    auto dinp_ref = dinp0;
    cpu::dropout_backward(dinp_ref.data(), dout.data(), n, key);

    Stream s;
    DeviceBuffer<T> d_inp(inp), d_out(n), d_dout(dout), d_dinp(dinp0);
    gpu::dropout_forward(d_out.get(), d_inp.get(), n, key, s);
    gpu::dropout_backward(d_dinp.get(), d_dout.get(), n, key, s);
    const auto out = d_out.download(s);
    const auto dinp = d_dinp.download(s);

    // The pattern, exactly: a dropped element is 0 in out and leaves dinp's bits untouched.
    std::size_t pattern_mismatches = 0;
    std::size_t n_dropped = 0;
    for (std::size_t i = 0; i < n; ++i) {
        const bool keep =
            p == 0.0f || cpu::dropout_keep(key.seed, key.stream, key.index0 + i, key.p);
        n_dropped += keep ? 0 : 1;
        const bool gpu_kept_forward = to_double(out[i]) != 0.0;
        const bool gpu_kept_backward = !same_bits(dinp[i], dinp0[i]);
        if ((gpu_kept_forward != keep || gpu_kept_backward != keep) && ++pattern_mismatches <= 5)
            FAIL_CHECK("element " << i << ": cpu keeps " << keep << ", gpu forward "
                                  << gpu_kept_forward << ", gpu backward " << gpu_kept_backward);
    }
    CHECK_MESSAGE(pattern_mismatches == 0,
                  pattern_mismatches << " of " << n << " elements dropped differently");
    if (p > 0.0f) CHECK(n_dropped > 0);
    if (p == 0.0f) CHECK(n_dropped == 0);
    check_close("out", out_ref, out, tolerance<T>);
    check_close("dinp", dinp_ref, dinp, tolerance<T>);
}

template <class T>
void check_gelu() {
    std::mt19937_64 rng(4);
    const std::size_t n = 1031;
    const auto inp = random_vector<T>(rng, n, -3.0f, 3.0f);
    const auto dout = random_vector<T>(rng, n);
    const auto dinp0 = random_vector<T>(rng, n);
    std::vector<T> out_ref(n);
    cpu::gelu_forward(out_ref.data(), inp.data(), n);
    auto dinp_ref = dinp0;
    cpu::gelu_backward(dinp_ref.data(), dout.data(), inp.data(), n);

    Stream s;
    DeviceBuffer<T> d_inp(inp), d_out(n), d_dout(dout), d_dinp(dinp0);
    gpu::gelu_forward(d_out.get(), d_inp.get(), n, s);
    gpu::gelu_backward(d_dinp.get(), d_dout.get(), d_inp.get(), n, s);
    check_close("out", out_ref, d_out.download(s), tolerance<T>);
    check_close("dinp", dinp_ref, d_dinp.download(s), tolerance<T>);
}

template <class T>
void check_swiglu() {
    std::mt19937_64 rng(5);
    const std::size_t n = 1031;
    const auto gate = random_vector<T>(rng, n, -3.0f, 3.0f);
    const auto up = random_vector<T>(rng, n);
    const auto dout = random_vector<T>(rng, n);
    const auto dgate0 = random_vector<T>(rng, n), dup0 = random_vector<T>(rng, n);
    std::vector<T> out_ref(n);
    cpu::swiglu_forward(out_ref.data(), gate.data(), up.data(), n);
    auto dgate_ref = dgate0, dup_ref = dup0;
    cpu::swiglu_backward(dgate_ref.data(), dup_ref.data(), dout.data(), gate.data(), up.data(), n);

    Stream s;
    DeviceBuffer<T> d_gate(gate), d_up(up), d_out(n), d_dout(dout), d_dgate(dgate0), d_dup(dup0);
    gpu::swiglu_forward(d_out.get(), d_gate.get(), d_up.get(), n, s);
    gpu::swiglu_backward(d_dgate.get(), d_dup.get(), d_dout.get(), d_gate.get(), d_up.get(), n, s);
    check_close("out", out_ref, d_out.download(s), tolerance<T>);
    check_close("dgate", dgate_ref, d_dgate.download(s), tolerance<T>);
    check_close("dup", dup_ref, d_dup.download(s), tolerance<T>);
}

template <class T>
void check_add_to_fp32() {
    std::mt19937_64 rng(6);
    const std::size_t n = 1031;
    const auto dst = random_vector<float>(rng, n);
    const auto src = random_vector<T>(rng, n);
    auto ref = dst;
    for (std::size_t i = 0; i < n; ++i) ref[i] += remat::rt::load(src[i]);
    Stream s;
    DeviceBuffer<float> d_dst(dst);
    DeviceBuffer<T> d_src(src);
    gpu::add_to_fp32(d_dst.get(), d_src.get(), n, s);
    check_close("dst", ref, d_dst.download(s), fp32_tolerance);
}

template <class T>
void check_convert_from_fp32() {
    std::mt19937_64 rng(7);
    const std::size_t n = 1031;
    const auto src = random_vector<float>(rng, n, -100.0f, 100.0f);
    std::vector<T> ref(n);
    cpu::convert_back(ref.data(), src.data(), n);
    Stream s;
    DeviceBuffer<float> d_src(src);
    DeviceBuffer<T> d_dst(n);
    gpu::convert_from_fp32(d_dst.get(), d_src.get(), n, s);
    check_close("dst", ref, d_dst.download(s), tolerance<T>);
}

// ---- norms ----

struct RowsShape {
    std::size_t N, H;
};
// H 40: one partial block of threads; H 777: several elements per thread and a partial column
// tile; N 7 and 33: fewer and more rows than the parameter kernels' 16 row lanes.
constexpr RowsShape norm_shapes[] = {{7, 40}, {33, 777}};

template <class T>
void check_layernorm(RowsShape shape) {
    const auto [N, H] = shape;
    std::mt19937_64 rng(8);
    const auto inp = random_vector<T>(rng, N * H, -0.5f, 1.5f);  // a non-zero mean
    const auto weight = random_vector<T>(rng, H), bias = random_vector<T>(rng, H);
    const auto dout = random_vector<T>(rng, N * H);
    const auto dinp0 = random_vector<T>(rng, N * H);
    const auto dweight0 = random_vector<T>(rng, H), dbias0 = random_vector<T>(rng, H);

    std::vector<T> out_ref(N * H);
    std::vector<float> mean_ref(N), rstd_ref(N);
    cpu::layernorm_forward(out_ref.data(), mean_ref.data(), rstd_ref.data(), inp.data(),
                           weight.data(), bias.data(), N, H);
    auto dinp_ref = dinp0, dweight_ref = dweight0, dbias_ref = dbias0;
    cpu::layernorm_backward(dinp_ref.data(), dweight_ref.data(), dbias_ref.data(), dout.data(),
                            inp.data(), weight.data(), mean_ref.data(), rstd_ref.data(), N, H);

    Stream s;
    DeviceBuffer<T> d_inp(inp), d_weight(weight), d_bias(bias), d_out(N * H);
    DeviceBuffer<float> d_mean(N), d_rstd(N);
    gpu::layernorm_forward(d_out.get(), d_mean.get(), d_rstd.get(), d_inp.get(), d_weight.get(),
                           d_bias.get(), N, H, s);
    check_close("out", out_ref, d_out.download(s), sum_tolerance<T>);
    check_close("mean", mean_ref, d_mean.download(s), fp32_sum_tolerance);
    check_close("rstd", rstd_ref, d_rstd.download(s), fp32_sum_tolerance);

    // The backward reads the CPU's statistics, so it is checked apart from the forward's.
    DeviceBuffer<T> d_dout(dout), d_dinp(dinp0), d_dweight(dweight0), d_dbias(dbias0);
    DeviceBuffer<float> d_mean_ref(mean_ref), d_rstd_ref(rstd_ref);
    gpu::layernorm_backward(d_dinp.get(), d_dweight.get(), d_dbias.get(), d_dout.get(), d_inp.get(),
                            d_weight.get(), d_mean_ref.get(), d_rstd_ref.get(), N, H, s);
    check_close("dinp", dinp_ref, d_dinp.download(s), sum_tolerance<T>);
    check_close("dweight", dweight_ref, d_dweight.download(s), sum_tolerance<T>);
    check_close("dbias", dbias_ref, d_dbias.download(s), sum_tolerance<T>);
}

template <class T>
void check_rmsnorm(RowsShape shape) {
    const auto [N, H] = shape;
    std::mt19937_64 rng(9);
    const auto inp = random_vector<T>(rng, N * H);
    const auto weight = random_vector<T>(rng, H);
    const auto dout = random_vector<T>(rng, N * H);
    const auto dinp0 = random_vector<T>(rng, N * H);
    const auto dweight0 = random_vector<T>(rng, H);

    std::vector<T> out_ref(N * H);
    std::vector<float> rstd_ref(N);
    cpu::rmsnorm_forward(out_ref.data(), rstd_ref.data(), inp.data(), weight.data(), N, H);
    auto dinp_ref = dinp0, dweight_ref = dweight0;
    cpu::rmsnorm_backward(dinp_ref.data(), dweight_ref.data(), dout.data(), inp.data(),
                          weight.data(), rstd_ref.data(), N, H);

    Stream s;
    DeviceBuffer<T> d_inp(inp), d_weight(weight), d_out(N * H);
    DeviceBuffer<float> d_rstd(N);
    gpu::rmsnorm_forward(d_out.get(), d_rstd.get(), d_inp.get(), d_weight.get(), N, H, s);
    check_close("out", out_ref, d_out.download(s), sum_tolerance<T>);
    check_close("rstd", rstd_ref, d_rstd.download(s), fp32_sum_tolerance);

    DeviceBuffer<T> d_dout(dout), d_dinp(dinp0), d_dweight(dweight0);
    DeviceBuffer<float> d_rstd_ref(rstd_ref);
    gpu::rmsnorm_backward(d_dinp.get(), d_dweight.get(), d_dout.get(), d_inp.get(), d_weight.get(),
                          d_rstd_ref.get(), N, H, s);
    check_close("dinp", dinp_ref, d_dinp.download(s), sum_tolerance<T>);
    check_close("dweight", dweight_ref, d_dweight.download(s), sum_tolerance<T>);
}

// ---- embedding, rotary, cross-entropy ----

// N 24 rows of S 8 positions over a vocabulary of 16: ids and positions repeat, so dwte walks
// each id's rows (the workspace's links) and dwpe sums three rows per position.
template <class T>
void check_embedding(bool with_wpe) {
    constexpr std::size_t N = 24, S = 8, H = 300;
    constexpr std::int32_t vocab = 16;
    std::mt19937_64 rng(10);
    const auto ids = random_ids(rng, N, vocab);
    const auto wte = random_vector<T>(rng, vocab * H), wpe = random_vector<T>(rng, S * H);
    const auto dout = random_vector<T>(rng, N * H);
    const auto dwte0 = random_vector<T>(rng, vocab * H), dwpe0 = random_vector<T>(rng, S * H);

    std::vector<T> out_ref(N * H);
    cpu::embedding_forward(out_ref.data(), ids.data(), wte.data(), with_wpe ? wpe.data() : nullptr,
                           N, S, H);
    auto dwte_ref = dwte0, dwpe_ref = dwpe0;
    cpu::embedding_backward(dwte_ref.data(), with_wpe ? dwpe_ref.data() : nullptr, dout.data(),
                            ids.data(), N, S, H);

    Stream s;
    DeviceBuffer<std::int32_t> d_ids(ids);
    DeviceBuffer<T> d_wte(wte), d_wpe(wpe), d_out(N * H), d_dout(dout), d_dwte(dwte0),
        d_dwpe(dwpe0);
    gpu::embedding_forward(d_out.get(), d_ids.get(), d_wte.get(), with_wpe ? d_wpe.get() : nullptr,
                           N, S, H, s);
    CHECK(gpu::embedding_backward_workspace(N) == 8 * N);
    DeviceBuffer<std::int32_t> d_links(2 * N);
    gpu::embedding_backward(d_dwte.get(), with_wpe ? d_dwpe.get() : nullptr, d_dout.get(),
                            d_ids.get(), N, S, H, d_links.get(), s);
    check_close("out", out_ref, d_out.download(s), tolerance<T>);
    // Each id's rows are added in row order with one rounding each, as on the CPU: the same bits.
    check_close("dwte", dwte_ref, d_dwte.download(s), Tolerance{0, 0});
    check_close("dwpe", dwpe_ref, d_dwpe.download(s), tolerance<T>);  // untouched without wpe
}

// S 64 makes angles up to 63 radians, where an inv_freq an ulp off would show.
template <class T>
void check_rotary() {
    constexpr std::size_t B = 2, S = 64, heads = 3, D = 16;
    constexpr std::size_t n = B * S * heads * D;
    std::mt19937_64 rng(11);
    const auto inp = random_vector<T>(rng, n);
    const auto dout = random_vector<T>(rng, n);
    const auto dinp0 = random_vector<T>(rng, n);
    std::vector<T> out_ref(n);
    cpu::rotary_forward(out_ref.data(), inp.data(), B, S, heads, D);
    auto dinp_ref = dinp0;
    cpu::rotary_backward(dinp_ref.data(), dout.data(), B, S, heads, D);

    Stream s;
    DeviceBuffer<T> d_inp(inp), d_out(n), d_dout(dout), d_dinp(dinp0);
    gpu::rotary_forward(d_out.get(), d_inp.get(), B, S, heads, D, s);
    gpu::rotary_backward(d_dinp.get(), d_dout.get(), B, S, heads, D, s);
    check_close("out", out_ref, d_out.download(s), tolerance<T>);
    check_close("dinp", dinp_ref, d_dinp.download(s), tolerance<T>);
}

// V 50: fewer columns than threads; V 1000: several per thread.
template <class T>
void check_cross_entropy(std::size_t V) {
    constexpr std::size_t N = 9;
    std::mt19937_64 rng(12);
    const auto logits = random_vector<T>(rng, N * V, -4.0f, 4.0f);
    const auto targets = random_ids(rng, N, static_cast<std::int32_t>(V));
    const auto dlogits0 = random_vector<T>(rng, N * V);
    const float scale = 1.0f / static_cast<float>(N);

    std::vector<float> lse_ref(N);
    const double loss_ref =
        cpu::cross_entropy_forward(lse_ref.data(), logits.data(), targets.data(), N, V);
    auto dlogits_ref = dlogits0;
    cpu::cross_entropy_backward(dlogits_ref.data(), logits.data(), lse_ref.data(), targets.data(),
                                N, V, scale);

    Stream s;
    DeviceBuffer<T> d_logits(logits), d_dlogits(dlogits0);
    DeviceBuffer<std::int32_t> d_targets(targets);
    DeviceBuffer<float> d_lse(N);
    // Starts from garbage: the launcher must zero it.
    DeviceBuffer<double> d_loss(std::vector<double>{123.0});
    gpu::cross_entropy_forward(d_loss.get(), d_lse.get(), d_logits.get(), d_targets.get(), N, V, s);
    check_close("lse", lse_ref, d_lse.download(s), fp32_sum_tolerance);
    // Each row's loss is an fp32 difference a few ulps of lse (|lse| < 12) off the CPU's; N of
    // them.
    const double loss = d_loss.download(s)[0];
    CHECK(std::abs(loss - loss_ref) <= static_cast<double>(N) * 1e-5 + 1e-5 * std::abs(loss_ref));

    DeviceBuffer<float> d_lse_ref(lse_ref);
    gpu::cross_entropy_backward(d_dlogits.get(), d_logits.get(), d_lse_ref.get(), d_targets.get(),
                                N, V, scale, s);
    check_close("dlogits", dlogits_ref, d_dlogits.download(s), tolerance<T>);
}

// ---- the cases each type's SUBCASE walks ----
// SUBCASEs are not nested in loops (doctest tells subcases apart by name and line): each type's
// subcase loops over its own cases.

// p 0 is the identity, p 1 drops everything (scale 0).
template <class T>
void check_dropouts() {
    for (const float p : {0.0f, 0.3f, 1.0f}) {
        CAPTURE(p);
        check_dropout<T>(p);
    }
}

template <class T>
void check_layernorms() {
    for (const RowsShape shape : norm_shapes) {
        CAPTURE(shape.N);
        CAPTURE(shape.H);
        check_layernorm<T>(shape);
    }
}

template <class T>
void check_rmsnorms() {
    for (const RowsShape shape : norm_shapes) {
        CAPTURE(shape.N);
        CAPTURE(shape.H);
        check_rmsnorm<T>(shape);
    }
}

template <class T>
void check_embeddings() {
    for (const bool with_wpe : {true, false}) {
        CAPTURE(with_wpe);
        check_embedding<T>(with_wpe);
    }
}

template <class T>
void check_cross_entropies() {
    for (const std::size_t V : {std::size_t{50}, std::size_t{1000}}) {
        CAPTURE(V);
        check_cross_entropy<T>(V);
    }
}

}  // namespace

TEST_CASE("gpu::add_forward") {
    SUBCASE("float") { check_add_forward<float>(); }
    SUBCASE("bf16") { check_add_forward<bf16>(); }
}

TEST_CASE("gpu::accumulate") {
    SUBCASE("float") { check_accumulate<float>(); }
    SUBCASE("bf16") { check_accumulate<bf16>(); }
}

TEST_CASE("gpu::dropout") {
    SUBCASE("float") { check_dropouts<float>(); }
    SUBCASE("bf16") { check_dropouts<bf16>(); }
}

TEST_CASE("gpu::gelu") {
    SUBCASE("float") { check_gelu<float>(); }
    SUBCASE("bf16") { check_gelu<bf16>(); }
}

TEST_CASE("gpu::swiglu") {
    SUBCASE("float") { check_swiglu<float>(); }
    SUBCASE("bf16") { check_swiglu<bf16>(); }
}

TEST_CASE("gpu::add_to_fp32") {
    SUBCASE("float") { check_add_to_fp32<float>(); }
    SUBCASE("bf16") { check_add_to_fp32<bf16>(); }
}

TEST_CASE("gpu::convert_from_fp32") {
    SUBCASE("float") { check_convert_from_fp32<float>(); }
    SUBCASE("bf16") { check_convert_from_fp32<bf16>(); }
}

// fp32 master parameters only; three steps so the bias corrections and the moments' history count.
TEST_CASE("gpu::adamw_step") {
    constexpr std::size_t n = 1031;
    std::mt19937_64 rng(13);
    const AdamW opt{1e-2, 0.9, 0.95, 1e-8, 0.1};
    auto param_ref = random_vector<float>(rng, n);
    std::vector<float> m_ref(n, 0.0f), v_ref(n, 0.0f), denom_ref(n, 0.0f);
    Stream s;
    DeviceBuffer<float> d_param(param_ref), d_m(m_ref), d_v(v_ref), d_denom(n);
    for (std::uint64_t step = 1; step <= 3; ++step) {
        CAPTURE(step);
        const auto grad = random_vector<float>(rng, n);
        cpu::adamw_step(param_ref.data(), grad.data(), m_ref.data(), v_ref.data(), denom_ref.data(),
                        n, opt, step);
        DeviceBuffer<float> d_grad(grad);
        gpu::adamw_step(d_param.get(), d_grad.get(), d_m.get(), d_v.get(), d_denom.get(), n, opt,
                        step, s);
        check_close("param", param_ref, d_param.download(s), fp32_tolerance);
        check_close("m", m_ref, d_m.download(s), fp32_tolerance);
        check_close("v", v_ref, d_v.download(s), fp32_tolerance);
        check_close("denom", denom_ref, d_denom.download(s), fp32_tolerance);
    }
}

TEST_CASE("gpu::layernorm") {
    SUBCASE("float") { check_layernorms<float>(); }
    SUBCASE("bf16") { check_layernorms<bf16>(); }
}

TEST_CASE("gpu::rmsnorm") {
    SUBCASE("float") { check_rmsnorms<float>(); }
    SUBCASE("bf16") { check_rmsnorms<bf16>(); }
}

TEST_CASE("gpu::embedding") {
    SUBCASE("float") { check_embeddings<float>(); }
    SUBCASE("bf16") { check_embeddings<bf16>(); }
}

TEST_CASE("gpu::rotary") {
    SUBCASE("float") { check_rotary<float>(); }
    SUBCASE("bf16") { check_rotary<bf16>(); }
}

TEST_CASE("gpu::cross_entropy") {
    SUBCASE("float") { check_cross_entropies<float>(); }
    SUBCASE("bf16") { check_cross_entropies<bf16>(); }
}
