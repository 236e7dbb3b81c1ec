// The CPU backend: Backend<T> over the reference kernels and host memory. Pure forwarding; the
// math is in kernels_*.cpp.
#include <cstring>

#include "runtime/allocator.hpp"
#include "runtime/backend.hpp"
#include "runtime/cpu/kernels.hpp"

namespace remat::rt {
namespace {

template <class T>
class CpuBackend final : public Backend<T> {
  public:
    using A = acc_t<T>;
    std::string_view name() const override { return "cpu"; }
    MemorySource& memory() const override { return host_memory(); }

    void synchronize() const override {}
    void upload(void* dst, const void* host, std::uint64_t bytes) const override {
        std::memcpy(dst, host, bytes);
    }
    void download(void* host, const void* src, std::uint64_t bytes) const override {
        std::memcpy(host, src, bytes);
    }
    void add_to_fp32(float* dst, const T* src, std::size_t n) const override {
        for (std::size_t j = 0; j < n; ++j) dst[j] += static_cast<float>(load(src[j]));
    }
    void adamw_step(float* param, const float* grad, float* m, float* v, float* denom,
                    std::size_t n, const AdamW& opt, std::uint64_t step) const override {
        cpu::adamw_step<float>(param, grad, m, v, denom, n, opt, step);
    }

    std::uint64_t linear_forward_workspace(std::size_t N, std::size_t I,
                                           std::size_t O) const override {
        return sizeof(float) * cpu::linear_forward_staging<T>(N, I, O);
    }
    std::uint64_t linear_backward_workspace(std::size_t N, std::size_t I,
                                            std::size_t O) const override {
        return sizeof(float) * cpu::linear_backward_staging<T>(N, I, O);
    }
    std::uint64_t attention_forward_workspace(const AttentionShape& s) const override {
        return sizeof(A) * cpu::attention_forward_scratch<T>(s);
    }
    std::uint64_t attention_backward_workspace(const AttentionShape& s) const override {
        return sizeof(A) * cpu::attention_backward_scratch<T>(s);
    }
    // The eager core walks the same per-(batch, head) scratch.
    std::uint64_t eager_attention_forward_workspace(const AttentionShape& s) const override {
        return attention_forward_workspace(s);
    }
    std::uint64_t eager_attention_backward_workspace(const AttentionShape& s) const override {
        return attention_backward_workspace(s);
    }

    void add_forward(T* out, const T* a, const T* b, std::size_t n) const override {
        cpu::add_forward<T>(out, a, b, n);
    }
    void accumulate(T* dst, const T* src, std::size_t n) const override {
        cpu::accumulate<T>(dst, src, n);
    }
    void dropout_forward(T* out, const T* inp, std::size_t n,
                         const DropoutKey& key) const override {
        cpu::dropout_forward<T>(out, inp, n, key);
    }
    void dropout_backward(T* dinp, const T* dout, std::size_t n,
                          const DropoutKey& key) const override {
        cpu::dropout_backward<T>(dinp, dout, n, key);
    }
    void gelu_forward(T* out, const T* inp, std::size_t n) const override {
        cpu::gelu_forward<T>(out, inp, n);
    }
    void gelu_backward(T* dinp, const T* dout, const T* inp, std::size_t n) const override {
        cpu::gelu_backward<T>(dinp, dout, inp, n);
    }
    void swiglu_forward(T* out, const T* gate, const T* up, std::size_t n) const override {
        cpu::swiglu_forward<T>(out, gate, up, n);
    }
    void swiglu_backward(T* dgate, T* dup, const T* dout, const T* gate, const T* up,
                         std::size_t n) const override {
        cpu::swiglu_backward<T>(dgate, dup, dout, gate, up, n);
    }
    void layernorm_forward(T* out, A* mean, A* rstd, const T* inp, const T* weight, const T* bias,
                           std::size_t N, std::size_t H) const override {
        cpu::layernorm_forward<T>(out, mean, rstd, inp, weight, bias, N, H);
    }
    void layernorm_backward(T* dinp, T* dweight, T* dbias, const T* dout, const T* inp,
                            const T* weight, const A* mean, const A* rstd, std::size_t N,
                            std::size_t H) const override {
        cpu::layernorm_backward<T>(dinp, dweight, dbias, dout, inp, weight, mean, rstd, N, H);
    }
    void rmsnorm_forward(T* out, A* rstd, const T* inp, const T* weight, std::size_t N,
                         std::size_t H) const override {
        cpu::rmsnorm_forward<T>(out, rstd, inp, weight, N, H);
    }
    void rmsnorm_backward(T* dinp, T* dweight, const T* dout, const T* inp, const T* weight,
                          const A* rstd, std::size_t N, std::size_t H) const override {
        cpu::rmsnorm_backward<T>(dinp, dweight, dout, inp, weight, rstd, N, H);
    }
    void linear_forward(T* out, const T* inp, const T* w, const T* bias, std::size_t N,
                        std::size_t I, std::size_t O, void* workspace) const override {
        cpu::linear_forward<T>(out, inp, w, bias, N, I, O, static_cast<float*>(workspace));
    }
    void linear_backward(T* dinp, T* dw, T* dbias, const T* dout, const T* inp, const T* w,
                         std::size_t N, std::size_t I, std::size_t O,
                         void* workspace) const override {
        cpu::linear_backward<T>(dinp, dw, dbias, dout, inp, w, N, I, O,
                                static_cast<float*>(workspace));
    }
    void rotary_forward(T* out, const T* inp, std::size_t B, std::size_t S, std::size_t heads,
                        std::size_t D) const override {
        cpu::rotary_forward<T>(out, inp, B, S, heads, D);
    }
    void rotary_backward(T* dinp, const T* dout, std::size_t B, std::size_t S, std::size_t heads,
                         std::size_t D) const override {
        cpu::rotary_backward<T>(dinp, dout, B, S, heads, D);
    }
    void attention_forward(T* out, A* lse, const T* q, const T* k, const T* v,
                           const AttentionShape& s, const DropoutKey& dropout,
                           void* workspace) const override {
        cpu::attention_forward<T>(out, lse, q, k, v, s, dropout, static_cast<A*>(workspace));
    }
    void attention_backward(T* dq, T* dk, T* dv, const T* dout, const T* q, const T* k, const T* v,
                            const T* out, const A* lse, const AttentionShape& s,
                            const DropoutKey& dropout, void* workspace) const override {
        cpu::attention_backward<T>(dq, dk, dv, dout, q, k, v, out, lse, s, dropout,
                                   static_cast<A*>(workspace));
    }
    void eager_attention_forward(T* out, T* probs, const T* q, const T* k, const T* v,
                                 const AttentionShape& s, const DropoutKey& dropout,
                                 void* workspace) const override {
        cpu::eager_attention_forward<T>(out, probs, q, k, v, s, dropout,
                                        static_cast<A*>(workspace));
    }
    void eager_attention_backward(T* dq, T* dk, T* dv, const T* dout, const T* q, const T* k,
                                  const T* v, const T* probs, const AttentionShape& s,
                                  const DropoutKey& dropout, void* workspace) const override {
        cpu::eager_attention_backward<T>(dq, dk, dv, dout, q, k, v, probs, s, dropout,
                                         static_cast<A*>(workspace));
    }
    void embedding_forward(T* out, const std::int32_t* ids, const T* wte, const T* wpe,
                           std::size_t N, std::size_t S, std::size_t H) const override {
        cpu::embedding_forward<T>(out, ids, wte, wpe, N, S, H);
    }
    std::uint64_t embedding_backward_workspace(std::size_t) const override { return 0; }
    void embedding_backward(T* dwte, T* dwpe, const T* dout, const std::int32_t* ids, std::size_t N,
                            std::size_t S, std::size_t H, void*) const override {
        cpu::embedding_backward<T>(dwte, dwpe, dout, ids, N, S, H);
    }
    double cross_entropy_forward(A* lse, const T* logits, const std::int32_t* targets,
                                 std::size_t N, std::size_t V) const override {
        return cpu::cross_entropy_forward<T>(lse, logits, targets, N, V);
    }
    void cross_entropy_backward(T* dlogits, const T* logits, const A* lse,
                                const std::int32_t* targets, std::size_t N, std::size_t V,
                                A scale) const override {
        cpu::cross_entropy_backward<T>(dlogits, logits, lse, targets, N, V, scale);
    }
};

}  // namespace

template <class T>
std::shared_ptr<const Backend<T>> make_cpu_backend() {
    return std::make_shared<CpuBackend<T>>();
}

template std::shared_ptr<const Backend<float>> make_cpu_backend<float>();
template std::shared_ptr<const Backend<bf16>> make_cpu_backend<bf16>();

}  // namespace remat::rt
