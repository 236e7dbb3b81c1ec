// A backend: the math and the memory movement the executor needs, for one storage type T
// (float, or bf16 under bf16-mixed). The CPU backend (runtime/cpu) forwards to its kernels; a
// CUDA backend implements the same calls with device kernels on a stream. Memory comes from an
// allocator over the backend's MemorySource (runtime/allocator.hpp); collectives are separate
// (runtime/collectives.hpp).
//
//   std::shared_ptr<const Backend<float>> b = make_cpu_backend<float>();
//   Model<float> m = build_model<float>(config, shape, b);   // ops call b->layernorm_forward(...)
//
// Pointers are backend memory except where a parameter says host. Signatures and semantics
// are those of runtime/cpu/kernels.hpp: outputs first; every backward accumulates (+=) into
// its gradients; workspaces are bytes the caller allocates for the call.
#pragma once
#include <cstdint>
#include <memory>
#include <string_view>

#include "runtime/numeric.hpp"

namespace remat::rt {

class MemorySource;

template <class T>
class Backend {
  public:
    using A = acc_t<T>;
    virtual ~Backend() = default;
    virtual std::string_view name() const = 0;  // "cpu"
    virtual MemorySource& memory() const = 0;

    // Wait for everything issued so far (a step's end, before its time is read).
    virtual void synchronize() const = 0;
    // Make the calling thread use this backend's device (a rank's thread, before its first call).
    virtual void bind_thread() const {}

    // ---- movement ----
    virtual void upload(void* dst, const void* host, std::uint64_t bytes) const = 0;
    virtual void download(void* host, const void* src, std::uint64_t bytes) const = 0;
    // dst(n, fp32) += src(n, T): a reduce-scattered gradient into the rank's fp32 shard.
    virtual void add_to_fp32(float* dst, const T* src, std::size_t n) const = 0;
    virtual void adamw_step(float* param, const float* grad, float* m, float* v, float* denom,
                            std::size_t n, const AdamW& opt, std::uint64_t step) const = 0;

    // ---- workspace sizes, bytes ----
    virtual std::uint64_t linear_forward_workspace(std::size_t N, std::size_t I,
                                                   std::size_t O) const = 0;
    virtual std::uint64_t linear_backward_workspace(std::size_t N, std::size_t I,
                                                    std::size_t O) const = 0;
    virtual std::uint64_t attention_forward_workspace(const AttentionShape& s) const = 0;
    virtual std::uint64_t attention_backward_workspace(const AttentionShape& s) const = 0;
    virtual std::uint64_t eager_attention_forward_workspace(const AttentionShape& s) const = 0;
    virtual std::uint64_t eager_attention_backward_workspace(const AttentionShape& s) const = 0;

    // ---- ops ----
    virtual void add_forward(T* out, const T* a, const T* b, std::size_t n) const = 0;
    virtual void accumulate(T* dst, const T* src, std::size_t n) const = 0;
    virtual void dropout_forward(T* out, const T* inp, std::size_t n,
                                 const DropoutKey& key) const = 0;
    virtual void dropout_backward(T* dinp, const T* dout, std::size_t n,
                                  const DropoutKey& key) const = 0;
    virtual void gelu_forward(T* out, const T* inp, std::size_t n) const = 0;
    virtual void gelu_backward(T* dinp, const T* dout, const T* inp, std::size_t n) const = 0;
    virtual void swiglu_forward(T* out, const T* gate, const T* up, std::size_t n) const = 0;
    virtual void swiglu_backward(T* dgate, T* dup, const T* dout, const T* gate, const T* up,
                                 std::size_t n) const = 0;
    virtual void layernorm_forward(T* out, A* mean, A* rstd, const T* inp, const T* weight,
                                   const T* bias, std::size_t N, std::size_t H) const = 0;
    virtual void layernorm_backward(T* dinp, T* dweight, T* dbias, const T* dout, const T* inp,
                                    const T* weight, const A* mean, const A* rstd, std::size_t N,
                                    std::size_t H) const = 0;
    virtual void rmsnorm_forward(T* out, A* rstd, const T* inp, const T* weight, std::size_t N,
                                 std::size_t H) const = 0;
    virtual void rmsnorm_backward(T* dinp, T* dweight, const T* dout, const T* inp, const T* weight,
                                  const A* rstd, std::size_t N, std::size_t H) const = 0;
    virtual void linear_forward(T* out, const T* inp, const T* w, const T* bias, std::size_t N,
                                std::size_t I, std::size_t O, void* workspace) const = 0;
    virtual void linear_backward(T* dinp, T* dw, T* dbias, const T* dout, const T* inp, const T* w,
                                 std::size_t N, std::size_t I, std::size_t O,
                                 void* workspace) const = 0;
    virtual void rotary_forward(T* out, const T* inp, std::size_t B, std::size_t S,
                                std::size_t heads, std::size_t D) const = 0;
    virtual void rotary_backward(T* dinp, const T* dout, std::size_t B, std::size_t S,
                                 std::size_t heads, std::size_t D) const = 0;
    virtual void attention_forward(T* out, A* lse, const T* q, const T* k, const T* v,
                                   const AttentionShape& s, const DropoutKey& dropout,
                                   void* workspace) const = 0;
    virtual void attention_backward(T* dq, T* dk, T* dv, const T* dout, const T* q, const T* k,
                                    const T* v, const T* out, const A* lse, const AttentionShape& s,
                                    const DropoutKey& dropout, void* workspace) const = 0;
    // The eager core: probs (B, A, S, S) saved instead of out and lse
    // (cpu::eager_attention_forward).
    virtual void eager_attention_forward(T* out, T* probs, const T* q, const T* k, const T* v,
                                         const AttentionShape& s, const DropoutKey& dropout,
                                         void* workspace) const = 0;
    virtual void eager_attention_backward(T* dq, T* dk, T* dv, const T* dout, const T* q,
                                          const T* k, const T* v, const T* probs,
                                          const AttentionShape& s, const DropoutKey& dropout,
                                          void* workspace) const = 0;
    virtual void embedding_forward(T* out, const std::int32_t* ids, const T* wte, const T* wpe,
                                   std::size_t N, std::size_t S, std::size_t H) const = 0;
    virtual std::uint64_t embedding_backward_workspace(std::size_t N) const = 0;
    virtual void embedding_backward(T* dwte, T* dwpe, const T* dout, const std::int32_t* ids,
                                    std::size_t N, std::size_t S, std::size_t H,
                                    void* workspace) const = 0;
    // Returns the sum over rows of the loss (to the host).
    virtual double cross_entropy_forward(A* lse, const T* logits, const std::int32_t* targets,
                                         std::size_t N, std::size_t V) const = 0;
    virtual void cross_entropy_backward(T* dlogits, const T* logits, const A* lse,
                                        const std::int32_t* targets, std::size_t N, std::size_t V,
                                        A scale) const = 0;
};

template <class T>
std::shared_ptr<const Backend<T>> make_cpu_backend();

}  // namespace remat::rt
