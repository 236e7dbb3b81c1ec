// Implementation profiles: how a named implementation decomposes each stage into ops, and so
// which tensors it saves for backward, in which dtypes.
//
//   hf-eager  Hugging Face eager modules (materialized attention scores, HF's GELU variant,
//             dropout as configured, logits upcast to fp32 before the loss), dtypes as PyTorch
//             autocast assigns them.
//   sdpa      the same modules with attention through PyTorch's fused flash kernel, which
//             saves q, k, v, the output, the log-sum-exp and the RNG state (derivatives.yaml,
//             _scaled_dot_product_flash_attention); no S x S tensor.
//   megatron  Korthikanti et al. 2022 accounting: 2-byte activations, 1-byte dropout masks,
//             norm statistics ignored, fp32 logits.
//   remat     remat's own runtime (planner/graph/profile_remat.cpp), which `remat run` measures.
#pragma once
#include <cstdint>

#include "planner/graph/graph.hpp"
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
    std::uint64_t batch = 1;  // B
    std::uint64_t seq = 1;    // S
    Precision precision = Precision::bf16_mixed;
    Profile profile = Profile::sdpa;
    Attention attention = Attention::flash;  // remat and remat-cuda only
    AutocastDevice autocast_device = AutocastDevice::cuda;
};

StageGraph build_stage_graph(const StageRequest& request);

}  // namespace remat
