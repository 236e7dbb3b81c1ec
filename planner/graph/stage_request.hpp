// What one stage's op graph is built for: which stage, of which model, at which B and S, under
// which precision mode and implementation profile. The builders (planner/graph/families.hpp,
// profile_remat.hpp) and op_builder.hpp include this, not the dispatcher (profiles.hpp).
#pragma once
#include <cstdint>
#include <string_view>
#include <vector>

#include "planner/config/dtype.hpp"
#include "planner/config/model.hpp"
#include "planner/config/options.hpp"

namespace remat {

enum class StageKind { embedding, block, norm, head };
std::string_view stage_kind_name(StageKind k);

// Which PyTorch the hf-eager and sdpa profiles describe. `cuda` (the default) is current PyTorch
// on a GPU, what users train on. `cpu` is Debian's torch 1.13 on CPU, where the hf-eager
// measurements were taken (tests/data/hf_eager_saved.json); it differs in autocast's op lists
// (softmax, layer_norm, pow stay in their input dtype), in kernel dtypes (layer-norm statistics
// in the input dtype, dropout masks as scaled noise in the input dtype instead of bool) and in
// `mean` saving its input.
enum class AutocastDevice { cuda, cpu };

struct StageRequest {
    StageKind kind = StageKind::block;
    const ModelConfig* model = nullptr;
    std::uint64_t batch = 1;  // B, sequences (2 x the pairs under DPO)
    std::uint64_t seq = 1;    // S
    Precision precision = Precision::bf16_mixed;
    Profile profile = Profile::sdpa;
    Attention attention = Attention::flash;  // remat and remat-cuda only
    AutocastDevice autocast_device = AutocastDevice::cuda;
    // Mixture of experts: how tokens are spread over the experts. Balanced (1.0) gives each
    // expert T * k / E of the T = B * S tokens; a factor c > 1 gives the busiest expert
    // c * T * k / E and spreads the rest evenly. `expert_counts`, when set, overrides both (a
    // measured routing).
    double moe_capacity_factor = 1.0;
    std::vector<std::uint64_t> expert_counts;
    // Fine-tuning (--train lora): the base's weights frozen, stored as `base_dtype` (int8 and
    // nf4 for the blocks' linears), their unquantized ones in `base_float`, read by the math in
    // `frozen_read` (FSDP's gathered dtype, or the stored one); adapters per `lora` (targets
    // resolved, planner/config/finetune.hpp).
    Training train = Training::full;
    BaseDType base_dtype = BaseDType::fp32;
    DType base_float = DType::f32;
    DType frozen_read = DType::f32;
    LoraOptions lora;
    bool dpo = false;  // the head computes DPO's log-probabilities and loss
};

// The tokens each expert receives under the request's routing (empty for a dense model).
// Throws InputError when the factor is below 1 or asks an expert to take a token twice.
std::vector<std::uint64_t> expert_tokens(const StageRequest& r);

}  // namespace remat
