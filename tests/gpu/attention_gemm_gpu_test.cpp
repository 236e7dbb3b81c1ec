// The CUDA linear (cuBLAS) and causal attention launchers (the fused flash kernels and the eager
// core) against the CPU kernels (runtime/cpu/kernels.hpp) on small random shapes
// (tests/attention_cases.hpp): forward and backward, fp32 and bf16, GQA, GPT-2's fused strided
// qkv and attention dropout. Every gradient starts from random non-zero
// values, so a backward that overwrites instead of accumulating fails; every workspace gets a
// guard tail and starts as NaN bytes, so a launcher that writes past its workspace size or reads
// it before writing fails.
// Not here: finite differences (kernels_test checks the CPU kernels that way, and these match
// them), performance, and the other launchers.
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <type_traits>
#include <utility>
#include <vector>

#include "runtime/cpu/kernels.hpp"
#include "runtime/cuda/cuda_check.hpp"
#include "runtime/cuda/kernels.cuh"
#include "tests/attention_cases.hpp"

namespace {

namespace cpu = remat::cpu;
namespace gpu = remat::rt::cuda;
using namespace remat::test;

// ---- device resources (move-only RAII; destructors do not throw) ----

template <class T>
class DeviceArray {
  public:
    explicit DeviceArray(std::size_t n) : n_(n) {
        CUDA_CHECK(cudaMalloc(&ptr_, std::max<std::size_t>(n, 1) * sizeof(T)));
        fill_bytes(0xff);  // NaN for float and bf16: reading before writing shows
    }
    explicit DeviceArray(const std::vector<T>& host) : DeviceArray(host.size()) {
        CUDA_CHECK(cudaMemcpy(ptr_, host.data(), n_ * sizeof(T), cudaMemcpyHostToDevice));
    }
    DeviceArray(DeviceArray&& o) noexcept : ptr_(std::exchange(o.ptr_, nullptr)), n_(o.n_) {}
    DeviceArray(const DeviceArray&) = delete;
    DeviceArray& operator=(const DeviceArray&) = delete;
    DeviceArray& operator=(DeviceArray&&) = delete;
    ~DeviceArray() {
        if (ptr_) cudaFree(ptr_);
    }

    T* get() const { return ptr_; }
    void fill_bytes(unsigned char byte) { CUDA_CHECK(cudaMemset(ptr_, byte, n_ * sizeof(T))); }
    std::vector<T> download() const {
        std::vector<T> host(n_);
        CUDA_CHECK(cudaMemcpy(host.data(), ptr_, n_ * sizeof(T), cudaMemcpyDeviceToHost));
        return host;
    }

  private:
    T* ptr_ = nullptr;
    std::size_t n_;
};

// A launcher's workspace of the size it asked for, plus a guard tail that must stay untouched.
class Workspace {
  public:
    explicit Workspace(std::uint64_t n_bytes) : n_bytes_(n_bytes), bytes_(n_bytes + guard_bytes) {}
    void* get() const { return bytes_.get(); }
    void check_guard() const {
        const std::vector<unsigned char> host = bytes_.download();
        const bool intact = std::all_of(host.begin() + static_cast<std::ptrdiff_t>(n_bytes_),
                                        host.end(), [](unsigned char b) { return b == 0xff; });
        CHECK_MESSAGE(intact, "launcher wrote past its workspace of " << n_bytes_ << " bytes");
    }

  private:
    static constexpr std::size_t guard_bytes = 256;
    std::uint64_t n_bytes_;
    DeviceArray<unsigned char> bytes_;
};

class Stream {
  public:
    Stream() { CUDA_CHECK(cudaStreamCreate(&s_)); }
    Stream(const Stream&) = delete;
    Stream& operator=(const Stream&) = delete;
    ~Stream() { cudaStreamDestroy(s_); }
    cudaStream_t get() const { return s_; }
    void sync() const { CUDA_CHECK(cudaStreamSynchronize(s_)); }

  private:
    cudaStream_t s_ = nullptr;
};

// The handle allows TF32 on purpose: the launchers must keep fp32 GEMMs exact whatever the
// handle's math mode, and TF32 (10-bit mantissa) would miss the fp32 tolerance by 100x.
class Blas {
  public:
    Blas() {
        CUBLAS_CHECK(cublasCreate(&h_));
        CUBLAS_CHECK(cublasSetMathMode(h_, CUBLAS_TF32_TENSOR_OP_MATH));
    }
    Blas(const Blas&) = delete;
    Blas& operator=(const Blas&) = delete;
    ~Blas() { cublasDestroy(h_); }
    cublasHandle_t get() const { return h_; }

  private:
    cublasHandle_t h_ = nullptr;
};

// ---- linear ----

template <class T>
void check_linear(std::size_t N, std::size_t I, std::size_t O, bool with_bias, std::uint64_t seed) {
    CAPTURE(N);
    CAPTURE(I);
    CAPTURE(O);
    CAPTURE(with_bias);
    std::mt19937_64 rng(seed);
    const auto inp = random_values<T>(rng, N * I), w = random_values<T>(rng, O * I);
    const auto bias = random_values<T>(rng, O), dout = random_values<T>(rng, N * O);
    const auto dinp0 = random_values<T>(rng, N * I), dw0 = random_values<T>(rng, O * I);
    const auto dbias0 = random_values<T>(rng, O);

    std::vector<float> staging(std::max(cpu::linear_forward_staging<T>(N, I, O),
                                        cpu::linear_backward_staging<T>(N, I, O)));
    std::vector<T> out(N * O);
    cpu::linear_forward<T>(out.data(), inp.data(), w.data(), with_bias ? bias.data() : nullptr, N,
                           I, O, staging.data());
    auto dinp = dinp0, dw = dw0, dbias = dbias0;
    cpu::linear_backward<T>(dinp.data(), dw.data(), with_bias ? dbias.data() : nullptr, dout.data(),
                            inp.data(), w.data(), N, I, O, staging.data());

    CHECK(gpu::linear_forward_workspace<T>(N, I, O) == 0);
    CHECK(gpu::linear_backward_workspace<T>(N, I, O) == 0);
    const Stream stream;
    const Blas blas;
    const DeviceArray<T> d_inp(inp), d_w(w), d_bias(bias), d_dout(dout);
    const DeviceArray<T> d_out(N * O);
    const DeviceArray<T> d_dinp(dinp0), d_dw(dw0), d_dbias(dbias0);
    const Workspace fws(gpu::linear_forward_workspace<T>(N, I, O));
    gpu::linear_forward<T>(d_out.get(), d_inp.get(), d_w.get(), with_bias ? d_bias.get() : nullptr,
                           N, I, O, fws.get(), blas.get(), stream.get());
    const Workspace bws(gpu::linear_backward_workspace<T>(N, I, O));
    gpu::linear_backward<T>(d_dinp.get(), d_dw.get(), with_bias ? d_dbias.get() : nullptr,
                            d_dout.get(), d_inp.get(), d_w.get(), N, I, O, bws.get(), blas.get(),
                            stream.get());
    stream.sync();

    check_close("out", out, d_out.download(), tolerance<T>());
    check_close("dinp", dinp, d_dinp.download(), tolerance<T>());
    check_close("dw", dw, d_dw.download(), tolerance<T>());
    check_close("dbias", dbias, d_dbias.download(), tolerance<T>());  // unchanged without a bias
    fws.check_guard();
    bws.check_guard();
}

template <class T>
void check_linear_shapes() {
    // Odd sizes (no dimension a multiple of 8: cuBLAS's unaligned paths), then one where the
    // column sums of dbias stride over many rows.
    check_linear<T>(37, 19, 23, true, 1);
    check_linear<T>(37, 19, 23, false, 2);
    check_linear<T>(300, 64, 96, true, 3);
}

// ---- attention ----

// One of attention_cases() through the fused kernels, against the CPU backend's results.
template <class T>
void check_attention(const AttentionCase& c) {
    const AttentionLayout& L = c.layout;
    const AttentionShape& s = L.shape;
    INFO(describe(c));
    const AttentionReference<T> ref(c);

    CHECK(gpu::attention_forward_workspace<T>(s) == 0);
    CHECK(gpu::attention_backward_workspace<T>(s) == sizeof(float) * s.B * s.A * s.S);
    const Stream stream;
    const DeviceArray<T> d_x(ref.x);
    const DeviceArray<T> d_out(L.out_size());
    const DeviceArray<float> d_lse(L.lse_size());
    const Workspace fws(gpu::attention_forward_workspace<T>(s));
    gpu::attention_forward<T>(d_out.get(), d_lse.get(), d_x.get() + L.q_offset,
                              d_x.get() + L.k_offset, d_x.get() + L.v_offset, s, c.dropout,
                              fws.get(), stream.get());
    stream.sync();
    check_close("out", ref.out, d_out.download(), tolerance<T>());
    // lse is fp32 on both sides, from the same (bf16-exact) inputs: the fp32 tolerance holds for
    // bf16 storage too.
    check_close("lse", ref.lse, d_lse.download(), tolerance<float>());
    fws.check_guard();

    // The backward reads the CPU's out and lse, so that it is judged on its own.
    const DeviceArray<T> d_dx(ref.dx0), d_dout(ref.dout), d_out_ref(ref.out);
    const DeviceArray<float> d_lse_ref(ref.lse);
    const Workspace bws(gpu::attention_backward_workspace<T>(s));
    gpu::attention_backward<T>(d_dx.get() + L.q_offset, d_dx.get() + L.k_offset,
                               d_dx.get() + L.v_offset, d_dout.get(), d_x.get() + L.q_offset,
                               d_x.get() + L.k_offset, d_x.get() + L.v_offset, d_out_ref.get(),
                               d_lse_ref.get(), s, c.dropout, bws.get(), stream.get());
    stream.sync();
    const std::vector<T> dx = d_dx.download();
    check_close("dqkv", ref.dx, dx, tolerance<T>());
    bws.check_guard();

    // Deterministic: no atomics, so a second backward from the same start gives the same bits.
    const DeviceArray<T> d_dx2(ref.dx0);
    gpu::attention_backward<T>(d_dx2.get() + L.q_offset, d_dx2.get() + L.k_offset,
                               d_dx2.get() + L.v_offset, d_dout.get(), d_x.get() + L.q_offset,
                               d_x.get() + L.k_offset, d_x.get() + L.v_offset, d_out_ref.get(),
                               d_lse_ref.get(), s, c.dropout, bws.get(), stream.get());
    stream.sync();
    const std::vector<T> dx2 = d_dx2.download();
    CHECK(std::memcmp(dx.data(), dx2.data(), dx.size() * sizeof(T)) == 0);
}

// The eager core (cuBLAS scores, the causal softmax kernel, saved probabilities) against the
// CPU's eager core on the same case.
template <class T>
void check_eager_attention(const AttentionCase& c) {
    const AttentionLayout& L = c.layout;
    const AttentionShape& s = L.shape;
    INFO(describe(c));
    const EagerAttentionReference<T> ref(c);
    const std::size_t SS = s.S * s.S;
    CHECK(gpu::eager_attention_forward_workspace<T>(s) == (sizeof(float) + sizeof(T)) * s.A * SS);
    CHECK(gpu::eager_attention_backward_workspace<T>(s) ==
          (sizeof(float) + 2 * sizeof(T)) * s.A * SS + 2 * sizeof(float) * s.S * s.KV * s.D);
    const Stream stream;
    const Blas blas;
    const DeviceArray<T> d_x(ref.x);
    const DeviceArray<T> d_out(L.out_size()), d_probs(ref.probs.size());
    const Workspace fws(gpu::eager_attention_forward_workspace<T>(s));
    gpu::eager_attention_forward<T>(d_out.get(), d_probs.get(), d_x.get() + L.q_offset,
                                    d_x.get() + L.k_offset, d_x.get() + L.v_offset, s, c.dropout,
                                    fws.get(), blas.get(), stream.get());
    stream.sync();
    check_close("out", ref.out, d_out.download(), tolerance<T>());
    check_close("probs", ref.probs, d_probs.download(), tolerance<T>());
    fws.check_guard();

    // The backward reads the CPU's probabilities, so that it is judged on its own.
    const DeviceArray<T> d_dx(ref.dx0), d_dout(ref.dout), d_probs_ref(ref.probs);
    const Workspace bws(gpu::eager_attention_backward_workspace<T>(s));
    gpu::eager_attention_backward<T>(
        d_dx.get() + L.q_offset, d_dx.get() + L.k_offset, d_dx.get() + L.v_offset, d_dout.get(),
        d_x.get() + L.q_offset, d_x.get() + L.k_offset, d_x.get() + L.v_offset, d_probs_ref.get(),
        s, c.dropout, bws.get(), blas.get(), stream.get());
    stream.sync();
    check_close("dqkv", ref.dx, d_dx.download(), tolerance<T>());
    bws.check_guard();
}

template <class T>
void check_attention_shapes() {
    for (const AttentionCase& c : attention_cases()) check_attention<T>(c);
}

template <class T>
void check_eager_attention_shapes() {
    for (const AttentionCase& c : attention_cases()) check_eager_attention<T>(c);
}

}  // namespace

TEST_SUITE("gpu") {
    TEST_CASE("gpu::linear") {
        SUBCASE("float") { check_linear_shapes<float>(); }
        SUBCASE("bf16") { check_linear_shapes<bf16>(); }
    }

    TEST_CASE("gpu::attention") {
        SUBCASE("float") { check_attention_shapes<float>(); }
        SUBCASE("bf16") { check_attention_shapes<bf16>(); }
    }
    TEST_CASE("gpu::eager attention") {
        SUBCASE("float") { check_eager_attention_shapes<float>(); }
        SUBCASE("bf16") { check_eager_attention_shapes<bf16>(); }
    }
}
