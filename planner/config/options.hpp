// Run options shared by every subcommand: the parts of a training configuration that are not
// the model or the GPU. Each enum has one parser that names the valid values on error.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace remat {

struct ModelConfig;

enum class Precision { fp32, bf16_mixed, fp16_mixed, bf16 };
// Which implementation's op decomposition decides what is saved for backward.
// remat: remat's own runtime on its CPU backend; remat-cuda: on its CUDA backend (the same ops,
// the backend's own GEMM and attention workspaces). `remat run` executes and measures them.
enum class Profile { hf_eager, sdpa, megatron, remat, remat_cuda };
enum class Sharding { none, fsdp, fsdp_grad_op, zero1, zero2, zero3, megatron, megatron_distopt };
// torch.optim.AdamW; SGD with momentum; bitsandbytes' AdamW8bit (blockwise 8-bit moments);
// transformers' Adafactor (factored second moment, no first moment: its defaults).
enum class Optimizer { adamw, sgd, adamw_8bit, adafactor };
// The attention core of remat's own runtime (the remat and remat-cuda profiles; the others fix
// their own). flash saves q, k, v, out and the row log-sum-exp and recomputes the probabilities
// in backward; eager materializes the scores with a causal softmax and saves the probabilities
// (B, A, S, S), as eager PyTorch code does.
enum class Attention { flash, eager };
// How torch.optim runs the step (torch/optim/adamw.py, sgd.py): foreach (_multi_tensor_*, one
// kernel per op over all parameters; current PyTorch's default on CUDA), for-loop
// (_single_tensor_*, parameter by parameter; torch 1.13's default), fused (one kernel, CUDA).
// They differ in the temporaries the step allocates (docs/torch.md).
enum class OptimizerImpl { foreach, for_loop, fused };
// Which PyTorch the hf-eager and sdpa profiles follow where their behaviours differ
// (docs/torch.md lists each difference and its source): current PyTorch on CUDA, or Debian's
// torch 1.13 on CPU, which the tests measure.
enum class TorchFlavor { cuda, cpu_1_13 };
// What the step trains. full: every weight. lora: PEFT's LoRA adapters (fp32, with gradients and
// optimizer state) on a frozen base that has neither (docs/finetune.md). frozen: nothing: a
// forward under torch.no_grad() (evaluation, or precomputing DPO's reference log-probabilities).
enum class Training { full, lora, frozen };
// How the frozen base is stored under --train lora: a float dtype for every base weight, or
// bitsandbytes' LLM.int8 (Linear8bitLt) / 4-bit NormalFloat (Linear4bit, QLoRA) for the blocks'
// linears, the rest staying in the precision's parameter dtype.
enum class BaseDType { fp32, bf16, fp16, int8, nf4 };

// The training recipe. sft: one model, the causal-LM loss over B sequences. dpo: Rafailov et
// al.'s DPO as the seed's trainer runs it: B pairs, chosen and rejected concatenated into 2B
// sequences, the policy's log-probabilities gathered over the vocabulary, and a frozen
// reference model's, under no_grad, after the policy's forward (docs/finetune.md).
enum class Recipe { sft, dpo };
// Where DPO's reference log-probabilities come from: a reference model in memory (under LoRA,
// the policy with its adapters disabled), or precomputed in the data (no model).
enum class RefLogprobs { model, precomputed };

// PEFT's LoraConfig, as far as memory goes.
struct LoraOptions {
    std::uint64_t rank = 8;  // r
    double alpha = 16;       // lora_alpha: scaling = alpha / r (no memory of its own)
    double dropout = 0;      // lora_dropout: 0 is nn.Identity (no mask saved)
    // Module names PEFT matches (the last component of a module's path: q_proj matches every
    // block's self_attn.q_proj), every block linear's name once "all-linear" is resolved.
    // Empty until resolved: then PEFT's default for the model type.
    std::vector<std::string> targets;
    bool double_quant = true;  // nf4: bnb_4bit_use_double_quant (QLoRA's recipe)
};

struct RunOptions {
    std::uint64_t micro_batch = 1;  // B
    std::uint64_t seq = 0;          // S; 0 until resolved to the model's context length
    std::uint64_t world_size = 1;   // W, data-parallel ranks
    // Micro-batches per optimizer step (gradient accumulation). The replayed micro-step is the
    // last: the gradients of the earlier ones are live from its start.
    std::uint64_t grad_accumulation = 1;
    Precision precision = Precision::bf16_mixed;
    Profile profile = Profile::sdpa;
    Sharding sharding = Sharding::none;
    Optimizer optimizer = Optimizer::adamw;
    Attention attention = Attention::flash;
    OptimizerImpl optimizer_impl = OptimizerImpl::foreach;
    TorchFlavor torch = TorchFlavor::cuda;
    // Mixture-of-experts routing: 1.0 spreads the tokens evenly over the experts; c > 1 gives
    // the busiest expert c times its even share (planner/graph/stage_request.hpp).
    double moe_capacity_factor = 1.0;
    Training train = Training::full;
    // The frozen base's storage (--train lora only): by default the precision's parameter
    // dtype, fp32 under fp32 and mixed precision, bf16 under bf16.
    BaseDType base_dtype = BaseDType::fp32;
    LoraOptions lora;
    Recipe recipe = Recipe::sft;
    RefLogprobs ref_logprobs = RefLogprobs::model;
    // DPO's separate reference model (--train full): its weights' dtype, fp32, bf16 or fp16 (the
    // seed's trainer loads it in fp16); unset: the policy's parameter dtype.
    std::optional<BaseDType> ref_dtype;
    // DPO's reference model of another architecture (--ref-model), with the policy's vocabulary;
    // null: a copy of the policy's.
    std::shared_ptr<const ModelConfig> ref_model;
    // Model states in host memory (docs/finetune.md, "Offload"): DeepSpeed's offload_optimizer
    // (ZeRO-1/2/3: fp32 master weights, moments and an fp32 gradient partition on the host, the
    // step on the CPU), and FSDP's CPUOffload(offload_params=True) or ZeRO-3's offload_param
    // (the sharded parameters; under FSDP their gradients and the optimizer too).
    bool offload_optimizer = false;
    bool offload_params = false;
    // Sequences per micro-batch: micro_batch, or 2 x micro_batch pairs under DPO.
    std::uint64_t sequences() const {
        return recipe == Recipe::dpo ? 2 * micro_batch : micro_batch;
    }
};

// Whether bitsandbytes stores the blocks' linears (int8, nf4).
bool quantized(BaseDType b);

// DDP or FSDP (none, fsdp, fsdp-grad-op): PyTorch's own data parallelism, where PEFT's, DPO's
// reference and the optimizers of torch.optim, bitsandbytes and transformers run as modelled.
bool torch_data_parallel(Sharding s);
// Profiles that describe remat's own runtime (remat run executes them).
bool runtime_profile(Profile p);
// Profiles that describe Hugging Face transformers' code run by PyTorch (its autograd engine,
// torch.optim, the modules' buffers).
bool hf_profile(Profile p);

std::string_view precision_name(Precision p);
std::string_view profile_name(Profile p);
std::string_view sharding_name(Sharding s);
std::string_view optimizer_name(Optimizer o);
std::string_view attention_name(Attention a);
std::string_view optimizer_impl_name(OptimizerImpl i);
std::string_view torch_name(TorchFlavor t);
std::string_view training_name(Training t);
std::string_view base_dtype_name(BaseDType b);
std::string_view recipe_name(Recipe r);
std::string_view ref_logprobs_name(RefLogprobs r);
Precision parse_precision(const std::string& s);
Profile parse_profile(const std::string& s);
Sharding parse_sharding(const std::string& s);
Optimizer parse_optimizer(const std::string& s);
Attention parse_attention(const std::string& s);
OptimizerImpl parse_optimizer_impl(const std::string& s);
TorchFlavor parse_torch(const std::string& s);
Training parse_training(const std::string& s);
BaseDType parse_base_dtype(const std::string& s);
Recipe parse_recipe(const std::string& s);
RefLogprobs parse_ref_logprobs(const std::string& s);
std::vector<std::string> precision_names();
std::vector<std::string> profile_names();
std::vector<std::string> sharding_names();
std::vector<std::string> optimizer_names();
std::vector<std::string> attention_names();

}  // namespace remat
