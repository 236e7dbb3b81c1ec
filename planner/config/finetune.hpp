// Fine-tuning's parameters as PEFT and bitsandbytes lay them out: the linears a block has (by the
// module names PEFT matches), LoRA's adapters on them, PEFT's default targets per model type, the
// trainable / all counts PEFT's print_trainable_parameters() reports, and the bytes of a frozen
// base stored by bitsandbytes (docs/finetune.md cites each source).
//
//   LoraOptions l = resolve_lora(model, options.lora);    // PEFT's defaults, all-linear expanded
//   ParameterCounts n = peft_parameter_counts(model, o);  // Llama-2-7B, r 8, q,v: 4,194,304
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "planner/config/dtype.hpp"
#include "planner/config/model.hpp"
#include "planner/config/options.hpp"

namespace remat {

// One kind of linear in a block: its module name (the last component of its path, what PEFT's
// target_modules matches), in and out features, and how many a block has (experts: one each).
struct BlockLinear {
    std::string name;
    std::uint64_t in = 0, out = 0;
    std::uint64_t count = 1;
};
// Every linear of a block of m, as the graphs build them (planner/graph/hf_*.cpp).
std::vector<BlockLinear> block_linears(const ModelConfig& m);

// PEFT's TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING for m's model type; empty where
// PEFT has none (phi3, qwen2_moe: PEFT asks for target_modules).
std::vector<std::string> peft_default_targets(const ModelConfig& m);

// `lora` with its targets resolved for m: none given: PEFT's default; "all-linear": every block
// linear (PEFT's INCLUDE_LINEAR_LAYERS_SHORTHAND, which leaves out the output layer); otherwise
// each name checked against m's modules. Throws InputError naming the fix.
LoraOptions resolve_lora(const ModelConfig& m, LoraOptions lora);
// Whether a linear named by its path ("mlp.experts.3.w1") is one of the resolved targets.
bool lora_targets(const LoraOptions& lora, std::string_view linear_path);
// The last component of a module path: "self_attn.q_proj" -> "q_proj".
std::string_view module_name(std::string_view path);

// LoRA's adapter parameters in one block: r * (in + out) per targeted linear.
std::uint64_t lora_block_params(const ModelConfig& m, const LoraOptions& lora);
// The largest adapter matrix (lora_A r x in or lora_B out x r): torch.optim's for-loop step
// allocates temporaries of its size.
std::uint64_t largest_lora_tensor(const ModelConfig& m, const LoraOptions& lora);

// What PEFT's print_trainable_parameters() prints ("trainable params: 4,194,304 || all params:
// 6,742,609,920"): all counts a 4-bit weight as its unpacked size.
struct ParameterCounts {
    std::uint64_t trainable = 0;
    std::uint64_t all = 0;
};
ParameterCounts peft_parameter_counts(const ModelConfig& m, const RunOptions& o);

// The float dtype of the base's unquantized weights: base_dtype when it is a float; under int8
// and nf4 (and full training) the precision's parameter dtype: fp32 under fp32 and mixed
// precision (PEFT's prepare_model_for_kbit_training casts them up), bf16 under bf16.
DType base_float_dtype(const RunOptions& o);
// DPO's separate reference model's weights' dtype: --ref-dtype, else the policy's parameters'.
DType reference_dtype(const RunOptions& o);
// Bytes of one frozen out x in weight stored as `base`: a float, or bitsandbytes' layouts
// (Int8Params: int8 data and an fp32 scale per row; Params4bit: two values a byte, an absmax
// per 64-value block, which double quantization stores as uint8 with an fp32 absmax per 256 of
// them, plus each QuantState's code tables).
std::uint64_t stored_weight_bytes(std::uint64_t in, std::uint64_t out, BaseDType base,
                                  bool double_quant);
// Bytes of a block's frozen parameters: its linears' weights as stored, biases and norms in
// the base's float dtype.
std::uint64_t frozen_block_bytes(const ModelConfig& m, const RunOptions& o);

// A trained parameter tensor as its optimizer sees it, `count` alike: a matrix (rows x cols),
// the norms' and biases' vectors of a stage together (each taken as under bitsandbytes'
// 4096-element minimum for 8-bit states), or one flat 1D tensor (an FSDP shard).
struct ParamTensor {
    enum class Kind { matrix, vectors, flat };
    Kind kind = Kind::matrix;
    std::uint64_t rows = 0, cols = 1;  // vectors and flat: rows elements
    std::uint64_t count = 1;
    std::uint64_t numel() const;  // of one
};
// The tensors that train, whole: every weight of the model, or LoRA's lora_A (r x in) and
// lora_B (out x r) on each targeted linear.
std::vector<ParamTensor> trainable_tensors(const ModelConfig& m, const RunOptions& o);

}  // namespace remat
