// Building blocks for the profiles: one function per PyTorch op or module, recording what the
// op saves for backward (per PyTorch's derivatives.yaml), its FLOPs and bytes, and the dtype
// its output gets under the precision mode (autocast's lists decide under mixed precision).
// Internal to planner/; profiles.cpp composes these into stages.
#pragma once
#include <string>
#include <vector>

#include "planner/config/model.hpp"
#include "planner/config/options.hpp"
#include "planner/graph/graph.hpp"
#include "planner/graph/stage_request.hpp"

namespace remat {

struct DTypePolicy {
    bool autocast = false;     // fp32 weights, per-op casts (bf16-mixed, fp16-mixed)
    DType low = DType::f32;    // dtype GEMMs compute in
    DType param = DType::f32;  // weights' dtype (and thus embedding outputs')
    AutocastDevice device = AutocastDevice::cuda;
};
DTypePolicy dtype_policy(Precision p, AutocastDevice device);
// The dtypes of a request: its precision's, with the weights in the base's float dtype under
// --train lora (a bf16 base under bf16-mixed makes bf16 activations; without autocast the GEMMs
// compute in the weights' dtype).
DTypePolicy dtype_policy(const StageRequest& r);

// Which weights train. Under --train lora the base's are frozen: autograd saves an operand of a
// product only for the other operand's gradient, so a frozen linear keeps no input (but its
// weight, for the input's gradient) and a frozen norm weight's product keeps nothing.
struct WeightPolicy {
    bool frozen = false;
    // The dtype the math reads a frozen weight in: the base's, or the gathered one under FSDP's
    // mixed precision. Autocast caches only casts of leaves that require grad
    // (aten/src/ATen/autocast_mode.cpp, cached_cast), so each linear reading a frozen fp32
    // weight makes its own low-precision copy, which the matmul saves.
    DType read = DType::f32;
    const LoraOptions* lora = nullptr;  // adapters on the linears it targets (null: none)
    // int8 / nf4: the linears run through bitsandbytes (Linear8bitLt, Linear4bit).
    BaseDType storage = BaseDType::fp32;
    bool quantized_linears() const { return quantized(storage); }
    // --train frozen: a forward under no_grad, where nothing needs the embedding's output to
    // require grad.
    bool forward_only = false;
};
// Whether a linear's caller made its weight's low-precision copy (FalconLinear's weight.T).
enum class WeightCast { by_linear, by_caller };

using Shape = std::vector<std::uint64_t>;

class OpBuilder {
  public:
    OpBuilder(StageGraph& g, DTypePolicy policy, WeightPolicy weights = {})
        : g_(g), p_(policy), w_(weights) {}
    StageGraph& graph() { return g_; }
    const DTypePolicy& policy() const { return p_; }
    const WeightPolicy& weights() const { return w_; }
    DType dtype(TensorId t) const { return g_.tensor(t).dtype; }
    const Shape& shape(TensorId t) const { return g_.tensor(t).shape; }

    // An op with no math of its own that allocates a new tensor (copy, cast, contiguous).
    TensorId copy(const std::string& name, TensorId x, DType to, Shape shape = {});
    TensorId cast(const std::string& name, TensorId x, DType to);  // x itself when dtypes match
    TensorId view(const std::string& name, TensorId x, Shape shape);

    // y = x W (+ b) over the last dim; saves its (autocast-cast) input for the weight's
    // gradient. A frozen weight saves no input; under autocast its copy, unless the caller made
    // it; a targeted linear gets PEFT's LoRA branch; a quantized one runs bitsandbytes' matmul.
    TensorId linear(const std::string& name, TensorId x, std::uint64_t n_out,
                    WeightCast cast = WeightCast::by_linear);
    // Whether a frozen weight read in this policy needs autocast's (uncached) copy.
    bool frozen_weight_copied() const {
        return w_.frozen && p_.autocast && w_.read != p_.low && !w_.quantized_linears();
    }
    // Saves x and per-row mean and rstd (fp32 on CUDA; x's dtype on CPU).
    TensorId layernorm(const std::string& name, TensorId x, bool save_stats = true);
    TensorId rmsnorm_hf(const std::string& name, TensorId x);  // HF LlamaRMSNorm, op by op
    // HF GemmaRMSNorm: (normalized * (1 + weight)) in fp32, then cast to x's dtype.
    TensorId rmsnorm_offset(const std::string& name, TensorId x);
    // The model's norm kind: layernorm, rmsnorm_hf or rmsnorm_offset.
    TensorId norm(const std::string& name, TensorId x, NormKind kind);
    TensorId gelu_new(const std::string& name, TensorId x);   // HF NewGELUActivation
    TensorId gelu_fast(const std::string& name, TensorId x);  // HF FastGELUActivation
    // The MLP's activation: the python-op GELUs above, or one op saving its input (F.gelu,
    // F.gelu(approximate="tanh"), F.silu).
    TensorId activation(const std::string& name, TensorId x, Activation a);
    TensorId unary_saving_input(const std::string& name, TensorId x, double flops_per_elem);
    // Saves its mask: bool on CUDA; on CPU (torch 1.13) the scaled noise in x's dtype.
    TensorId dropout(const std::string& name, TensorId x, double p);
    TensorId add(const std::string& name, TensorId a, TensorId b);
    TensorId mul(const std::string& name, TensorId a, TensorId b);  // both need grad

    // Output dtype of an op on autocast's fp32 list (CUDA: layer_norm, softmax, log_softmax,
    // pow, rsqrt; on CPU in torch 1.13 none of these): f32 under autocast, else the input's.
    DType autocast_fp32_op(DType in) const {
        return p_.autocast && p_.device == AutocastDevice::cuda ? DType::f32 : in;
    }
    // The tensor a GEMM multiplies: autocast casts it to the low dtype (a fresh copy).
    TensorId gemm_operand(const std::string& name, TensorId x);
    static DType promote(DType a, DType b);

    Op make(const std::string& name, OpClass c, std::vector<TensorId> in, std::vector<TensorId> out,
            std::vector<TensorId> saved);
    std::uint64_t rows(TensorId t) const;  // product of all dims but the last
    std::uint64_t bytes(TensorId t) const { return g_.tensor(t).bytes(); }

  private:
    // The GEMM of a linear whose weight trains or not (it saves its input only if it does).
    TensorId gemm(const std::string& name, TensorId x, std::uint64_t n_out, bool trainable);
    TensorId frozen_linear(const std::string& name, TensorId x, std::uint64_t n_out,
                           WeightCast cast);
    TensorId quantized_linear(const std::string& name, TensorId x, std::uint64_t n_out);
    // PEFT's lora.Linear.forward (or its bitsandbytes variant) after the base layer's output.
    TensorId lora_branch(const std::string& name, TensorId x, TensorId base, std::uint64_t n_out);
    TensorId lora_product(const std::string& name, TensorId x, std::uint64_t n_out);
    // The fp32 x * rsqrt(mean(x^2) + eps) both RMSNorms compute, its product named `normalized`.
    TensorId rms_normalized(const std::string& name, TensorId x, const std::string& normalized);
    StageGraph& g_;
    DTypePolicy p_;
    WeightPolicy w_;
};

}  // namespace remat
