// The CUDA linear (cuBLAS) and causal attention launchers against the CPU kernels
// (runtime/cpu/kernels.hpp) on small random shapes: forward and backward, fp32 and bf16, GQA,
// GPT-2's fused strided qkv and attention dropout. Every gradient starts from random non-zero
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
#include <random>
#include <type_traits>
#include <utility>
#include <vector>

#include "runtime/cpu/kernels.hpp"
#include "runtime/cuda/cuda_check.hpp"
#include "runtime/cuda/kernels.cuh"

namespace {

namespace cpu = remat::cpu;
namespace gpu = remat::rt::cuda;
using remat::rt::AttentionShape;
using remat::rt::bf16;
using remat::rt::DropoutKey;

// Comparisons pass when |got - ref| <= atol + rtol * |ref|.
struct Tolerance {
    double atol, rtol;
};

// fp32: both sides accumulate in fp32 (cuBLAS with TF32 off) from identical inputs and differ only
// in summation order, a few ulps of sums of order 1-10 here: ~1e-6, well inside 1e-5.
// bf16: both sides read the same bf16 inputs, accumulate in fp32 and round each stored result to
// bf16 once; the fp32 values differ by summation order (~1e-6 relative), which can flip that one
// rounding by one bf16 ulp: up to 2^-7 ~ 7.8e-3 relative just above a power of two. 2e-2 leaves a
// margin of more than two ulps, and atol 2e-2 covers results near 0 whose ulp is set by the
// larger terms that cancelled into them.
template <class T>
constexpr Tolerance tolerance() {
    if constexpr (std::is_same_v<T, bf16>)
        return {2e-2, 2e-2};
    else
        return {1e-5, 1e-5};
}

template <class T>
std::vector<T> random_values(std::mt19937_64& rng, std::size_t n) {
    std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
    std::vector<T> x(n);
    for (T& e : x) e = remat::rt::store<T>(dist(rng));
    return x;
}

template <class T>
void check_close(const char* what, const std::vector<T>& ref, const std::vector<T>& got,
                 Tolerance tol) {
    REQUIRE(ref.size() == got.size());
    std::size_t failures = 0;
    for (std::size_t k = 0; k < ref.size(); ++k) {
        const double r = static_cast<double>(remat::rt::load(ref[k]));
        const double g = static_cast<double>(remat::rt::load(got[k]));
        if (!(std::abs(g - r) <= tol.atol + tol.rtol * std::abs(r)) && ++failures <= 5)
            FAIL_CHECK(what << "[" << k << "]: CPU " << r << ", GPU " << g);
    }
    CHECK_MESSAGE(failures == 0,
                  what << ": " << failures << " of " << ref.size() << " elements off");
}

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

template <class T>
void check_attention(const AttentionLayout& L, const DropoutKey& key, std::uint64_t seed) {
    const AttentionShape& s = L.shape;
    CAPTURE(s.B);
    CAPTURE(s.S);
    CAPTURE(s.A);
    CAPTURE(s.KV);
    CAPTURE(s.D);
    CAPTURE(s.q_stride);
    CAPTURE(key.p);
    std::mt19937_64 rng(seed);
    const auto x = random_values<T>(rng, L.size);  // q, k and v in L's layout
    const auto dout = random_values<T>(rng, L.out_size());
    const auto dx0 = random_values<T>(rng, L.size);

    std::vector<float> scratch(
        std::max(cpu::attention_forward_scratch<T>(s), cpu::attention_backward_scratch<T>(s)));
    std::vector<T> out(L.out_size());
    std::vector<float> lse(L.lse_size());
    cpu::attention_forward<T>(out.data(), lse.data(), x.data() + L.q_offset, x.data() + L.k_offset,
                              x.data() + L.v_offset, s, key, scratch.data());
    auto dx = dx0;
    cpu::attention_backward<T>(dx.data() + L.q_offset, dx.data() + L.k_offset,
                               dx.data() + L.v_offset, dout.data(), x.data() + L.q_offset,
                               x.data() + L.k_offset, x.data() + L.v_offset, out.data(), lse.data(),
                               s, key, scratch.data());

    CHECK(gpu::attention_forward_workspace<T>(s) == sizeof(float) * (s.S * s.S + 4 * s.S * s.D));
    CHECK(gpu::attention_backward_workspace<T>(s) ==
          sizeof(float) * (2 * s.S * s.S + 7 * s.S * s.D));
    const Stream stream;
    const Blas blas;
    const DeviceArray<T> d_x(x);
    const DeviceArray<T> d_out(L.out_size());
    const DeviceArray<float> d_lse(L.lse_size());
    const Workspace fws(gpu::attention_forward_workspace<T>(s));
    gpu::attention_forward<T>(d_out.get(), d_lse.get(), d_x.get() + L.q_offset,
                              d_x.get() + L.k_offset, d_x.get() + L.v_offset, s, key, fws.get(),
                              blas.get(), stream.get());
    stream.sync();
    check_close("out", out, d_out.download(), tolerance<T>());
    // lse is fp32 on both sides, from the same (bf16-exact) inputs: the fp32 tolerance holds for
    // bf16 storage too.
    check_close("lse", lse, d_lse.download(), tolerance<float>());
    fws.check_guard();

    // The backward reads the CPU's out and lse, so that it is judged on its own.
    const DeviceArray<T> d_dx(dx0), d_dout(dout), d_out_ref(out);
    const DeviceArray<float> d_lse_ref(lse);
    const Workspace bws(gpu::attention_backward_workspace<T>(s));
    gpu::attention_backward<T>(d_dx.get() + L.q_offset, d_dx.get() + L.k_offset,
                               d_dx.get() + L.v_offset, d_dout.get(), d_x.get() + L.q_offset,
                               d_x.get() + L.k_offset, d_x.get() + L.v_offset, d_out_ref.get(),
                               d_lse_ref.get(), s, key, bws.get(), blas.get(), stream.get());
    stream.sync();
    check_close("dqkv", dx, d_dx.download(), tolerance<T>());
    bws.check_guard();
}

template <class T>
void check_attention_shapes() {
    // Multi-head, separate tensors, no dropout.
    check_attention<T>(AttentionLayout(2, 13, 2, 2, 8, false), DropoutKey{}, 11);
    // GQA (A = 4, KV = 2), separate tensors, dropout.
    check_attention<T>(AttentionLayout(2, 17, 4, 2, 16, false), DropoutKey{0.1f, 7, 8, 0}, 12);
    // GQA in GPT-2's fused strided qkv, dropout, a batch slice placed by index0.
    check_attention<T>(AttentionLayout(2, 33, 4, 2, 8, true), DropoutKey{0.1f, 7, 9, 5}, 13);
    // Rows longer than a block (256 threads), fused, KV = 1.
    check_attention<T>(AttentionLayout(1, 300, 2, 1, 16, true), DropoutKey{0.1f, 3, 4, 2}, 14);
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
}
