#include "runtime/cuda/cuda_backend.hpp"

#include <fmt/format.h>

#include "planner/config/error.hpp"
#include "runtime/collectives.hpp"
#include "runtime/cuda/cuda_check.hpp"
#include "runtime/cuda/kernels.cuh"
#include "runtime/devices.hpp"

namespace remat::rt {
namespace {

template <class T>
class CudaBackend final : public CudaBackendBase<T> {
  public:
    using A = acc_t<T>;
    explicit CudaBackend(int device) : device_(device) {
        CUDA_CHECK(cudaSetDevice(device));
        CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
        CUBLAS_CHECK(cublasCreate(&handle_));
        CUBLAS_CHECK(cublasSetStream(handle_, stream_));
        CUDA_CHECK(cudaMalloc(&loss_sum_, sizeof(double)));
        pool_ = std::make_unique<CudaPool>(device, stream_);
    }
    ~CudaBackend() override {
        cudaStreamSynchronize(stream_);
        pool_.reset();
        cudaFree(loss_sum_);
        cublasDestroy(handle_);
        cudaStreamDestroy(stream_);
    }

    std::string_view name() const override { return "cuda"; }
    MemorySource& memory() const override { return *pool_; }
    cudaStream_t stream() const override { return stream_; }
    CudaPool& pool() const override { return *pool_; }
    void synchronize() const override { CUDA_CHECK(cudaStreamSynchronize(stream_)); }
    void bind_thread() const override { CUDA_CHECK(cudaSetDevice(device_)); }

    void upload(void* dst, const void* host, std::uint64_t bytes) const override {
        CUDA_CHECK(cudaMemcpyAsync(dst, host, bytes, cudaMemcpyHostToDevice, stream_));
        synchronize();  // the host buffer may go away when this returns
    }
    void download(void* host, const void* src, std::uint64_t bytes) const override {
        CUDA_CHECK(cudaMemcpyAsync(host, src, bytes, cudaMemcpyDeviceToHost, stream_));
        synchronize();
    }
    void add_to_fp32(float* dst, const T* src, std::size_t n) const override {
        cuda::add_to_fp32<T>(dst, src, n, stream_);
    }
    void adamw_step(float* param, const float* grad, float* m, float* v, float* denom,
                    std::size_t n, const AdamW& opt, std::uint64_t step) const override {
        cuda::adamw_step(param, grad, m, v, denom, n, opt, step, stream_);
    }

    std::uint64_t linear_forward_workspace(std::size_t N, std::size_t I,
                                           std::size_t O) const override {
        return cuda::linear_forward_workspace<T>(N, I, O);
    }
    std::uint64_t linear_backward_workspace(std::size_t N, std::size_t I,
                                            std::size_t O) const override {
        return cuda::linear_backward_workspace<T>(N, I, O);
    }
    std::uint64_t attention_forward_workspace(const AttentionShape& s) const override {
        return cuda::attention_forward_workspace<T>(s);
    }
    std::uint64_t attention_backward_workspace(const AttentionShape& s) const override {
        return cuda::attention_backward_workspace<T>(s);
    }
    std::uint64_t eager_attention_forward_workspace(const AttentionShape& s) const override {
        return cuda::eager_attention_forward_workspace<T>(s);
    }
    std::uint64_t eager_attention_backward_workspace(const AttentionShape& s) const override {
        return cuda::eager_attention_backward_workspace<T>(s);
    }

    void add_forward(T* out, const T* a, const T* b, std::size_t n) const override {
        cuda::add_forward<T>(out, a, b, n, stream_);
    }
    void accumulate(T* dst, const T* src, std::size_t n) const override {
        cuda::accumulate<T>(dst, src, n, stream_);
    }
    void dropout_forward(T* out, const T* inp, std::size_t n,
                         const DropoutKey& key) const override {
        cuda::dropout_forward<T>(out, inp, n, key, stream_);
    }
    void dropout_backward(T* dinp, const T* dout, std::size_t n,
                          const DropoutKey& key) const override {
        cuda::dropout_backward<T>(dinp, dout, n, key, stream_);
    }
    void gelu_forward(T* out, const T* inp, std::size_t n) const override {
        cuda::gelu_forward<T>(out, inp, n, stream_);
    }
    void gelu_backward(T* dinp, const T* dout, const T* inp, std::size_t n) const override {
        cuda::gelu_backward<T>(dinp, dout, inp, n, stream_);
    }
    void swiglu_forward(T* out, const T* gate, const T* up, std::size_t n) const override {
        cuda::swiglu_forward<T>(out, gate, up, n, stream_);
    }
    void swiglu_backward(T* dgate, T* dup, const T* dout, const T* gate, const T* up,
                         std::size_t n) const override {
        cuda::swiglu_backward<T>(dgate, dup, dout, gate, up, n, stream_);
    }
    void layernorm_forward(T* out, A* mean, A* rstd, const T* inp, const T* weight, const T* bias,
                           std::size_t N, std::size_t H) const override {
        cuda::layernorm_forward<T>(out, mean, rstd, inp, weight, bias, N, H, stream_);
    }
    void layernorm_backward(T* dinp, T* dweight, T* dbias, const T* dout, const T* inp,
                            const T* weight, const A* mean, const A* rstd, std::size_t N,
                            std::size_t H) const override {
        cuda::layernorm_backward<T>(dinp, dweight, dbias, dout, inp, weight, mean, rstd, N, H,
                                    stream_);
    }
    void rmsnorm_forward(T* out, A* rstd, const T* inp, const T* weight, std::size_t N,
                         std::size_t H) const override {
        cuda::rmsnorm_forward<T>(out, rstd, inp, weight, N, H, stream_);
    }
    void rmsnorm_backward(T* dinp, T* dweight, const T* dout, const T* inp, const T* weight,
                          const A* rstd, std::size_t N, std::size_t H) const override {
        cuda::rmsnorm_backward<T>(dinp, dweight, dout, inp, weight, rstd, N, H, stream_);
    }
    void linear_forward(T* out, const T* inp, const T* w, const T* bias, std::size_t N,
                        std::size_t I, std::size_t O, void* workspace) const override {
        cuda::linear_forward<T>(out, inp, w, bias, N, I, O, workspace, handle_, stream_);
    }
    void linear_backward(T* dinp, T* dw, T* dbias, const T* dout, const T* inp, const T* w,
                         std::size_t N, std::size_t I, std::size_t O,
                         void* workspace) const override {
        cuda::linear_backward<T>(dinp, dw, dbias, dout, inp, w, N, I, O, workspace, handle_,
                                 stream_);
    }
    void rotary_forward(T* out, const T* inp, std::size_t B, std::size_t S, std::size_t heads,
                        std::size_t D) const override {
        cuda::rotary_forward<T>(out, inp, B, S, heads, D, stream_);
    }
    void rotary_backward(T* dinp, const T* dout, std::size_t B, std::size_t S, std::size_t heads,
                         std::size_t D) const override {
        cuda::rotary_backward<T>(dinp, dout, B, S, heads, D, stream_);
    }
    void attention_forward(T* out, A* lse, const T* q, const T* k, const T* v,
                           const AttentionShape& s, const DropoutKey& dropout,
                           void* workspace) const override {
        cuda::attention_forward<T>(out, lse, q, k, v, s, dropout, workspace, stream_);
    }
    void attention_backward(T* dq, T* dk, T* dv, const T* dout, const T* q, const T* k, const T* v,
                            const T* out, const A* lse, const AttentionShape& s,
                            const DropoutKey& dropout, void* workspace) const override {
        cuda::attention_backward<T>(dq, dk, dv, dout, q, k, v, out, lse, s, dropout, workspace,
                                    stream_);
    }
    void eager_attention_forward(T* out, T* probs, const T* q, const T* k, const T* v,
                                 const AttentionShape& s, const DropoutKey& dropout,
                                 void* workspace) const override {
        cuda::eager_attention_forward<T>(out, probs, q, k, v, s, dropout, workspace, handle_,
                                         stream_);
    }
    void eager_attention_backward(T* dq, T* dk, T* dv, const T* dout, const T* q, const T* k,
                                  const T* v, const T* probs, const AttentionShape& s,
                                  const DropoutKey& dropout, void* workspace) const override {
        cuda::eager_attention_backward<T>(dq, dk, dv, dout, q, k, v, probs, s, dropout, workspace,
                                          handle_, stream_);
    }
    void embedding_forward(T* out, const std::int32_t* ids, const T* wte, const T* wpe,
                           std::size_t N, std::size_t S, std::size_t H) const override {
        cuda::embedding_forward<T>(out, ids, wte, wpe, N, S, H, stream_);
    }
    std::uint64_t embedding_backward_workspace(std::size_t N) const override {
        return cuda::embedding_backward_workspace(N);
    }
    void embedding_backward(T* dwte, T* dwpe, const T* dout, const std::int32_t* ids, std::size_t N,
                            std::size_t S, std::size_t H, void* workspace) const override {
        cuda::embedding_backward<T>(dwte, dwpe, dout, ids, N, S, H, workspace, stream_);
    }
    double cross_entropy_forward(A* lse, const T* logits, const std::int32_t* targets,
                                 std::size_t N, std::size_t V) const override {
        cuda::cross_entropy_forward<T>(loss_sum_, lse, logits, targets, N, V, stream_);
        double sum = 0;
        download(&sum, loss_sum_, sizeof sum);
        return sum;
    }
    void cross_entropy_backward(T* dlogits, const T* logits, const A* lse,
                                const std::int32_t* targets, std::size_t N, std::size_t V,
                                A scale) const override {
        cuda::cross_entropy_backward<T>(dlogits, logits, lse, targets, N, V, scale, stream_);
    }

  private:
    int device_ = 0;
    cudaStream_t stream_{};
    cublasHandle_t handle_{};
    double* loss_sum_ = nullptr;
    std::unique_ptr<CudaPool> pool_;
};

template <class T>
class EmulatedCollectives final : public Collectives<T> {
  public:
    EmulatedCollectives(std::size_t world, cudaStream_t stream) : world_(world), stream_(stream) {}
    std::size_t world_size() const override { return world_; }
    void all_gather(std::size_t, T* dst, const float* shard, std::size_t shard_n,
                    std::size_t unit_n) override {
        for (std::size_t q = 0; q < world_; ++q) {
            const std::size_t begin = q * shard_n;
            if (begin >= unit_n) break;
            cuda::convert_from_fp32<T>(dst + begin, shard, std::min(shard_n, unit_n - begin),
                                       stream_);
        }
    }
    void reduce_scatter(std::size_t rank, T* dst, const T* src, std::size_t shard_n,
                        std::size_t unit_n) override {
        const std::size_t begin = rank * shard_n;
        const std::size_t n = begin < unit_n ? std::min(shard_n, unit_n - begin) : 0;
        if (n)
            CUDA_CHECK(cudaMemcpyAsync(dst, src + begin, n * sizeof(T), cudaMemcpyDeviceToDevice,
                                       stream_));
        if (n < shard_n)
            CUDA_CHECK(cudaMemsetAsync(dst + n, 0, (shard_n - n) * sizeof(T), stream_));
    }
    double all_reduce_sum(std::size_t, double x) override {
        return x * static_cast<double>(world_);
    }
    void abort() override {}

  private:
    std::size_t world_;
    cudaStream_t stream_;
};

}  // namespace

template <class T>
std::shared_ptr<const CudaBackendBase<T>> make_cuda_backend(int device) {
    if (visible_gpus().empty())
        throw InputError(fmt::format("{} cuda: {}; use {} cpu", named(Input::device),
                                     gpu_unavailable_reason(), named(Input::device)));
    return std::make_shared<CudaBackend<T>>(device);
}

template <class T>
std::unique_ptr<Collectives<T>> make_emulated_collectives(std::size_t world, cudaStream_t stream) {
    return std::make_unique<EmulatedCollectives<T>>(world, stream);
}

template std::shared_ptr<const CudaBackendBase<float>> make_cuda_backend<float>(int);
template std::shared_ptr<const CudaBackendBase<bf16>> make_cuda_backend<bf16>(int);
template std::unique_ptr<Collectives<float>> make_emulated_collectives<float>(std::size_t,
                                                                              cudaStream_t);
template std::unique_ptr<Collectives<bf16>> make_emulated_collectives<bf16>(std::size_t,
                                                                            cudaStream_t);

}  // namespace remat::rt
