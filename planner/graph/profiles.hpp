// Implementation profiles: how a named implementation decomposes each stage into ops, and so
// which tensors it saves for backward, in which dtypes.
//
//   hf-eager  Hugging Face eager modules (materialized attention scores, HF's GELU variant,
//             dropout as configured, logits upcast to fp32 before the loss), dtypes as PyTorch
//             autocast assigns them: hf_gpt2.cpp, hf_decoder.cpp (llama, mistral, qwen2,
//             gemma, gemma2, phi3, mixtral with hf_moe.cpp), hf_falcon.cpp, hf_neox.cpp, with
//             the attention core and rotary embedding they share in hf_attention.cpp.
//   sdpa      the same modules with attention through PyTorch's fused flash kernel, which
//             saves q, k, v, the output, the log-sum-exp and the RNG state (derivatives.yaml,
//             _scaled_dot_product_flash_attention); no S x S tensor.
//   megatron  Korthikanti et al. 2022 accounting: 2-byte activations, 1-byte dropout masks,
//             norm statistics ignored, fp32 logits (megatron.cpp).
//   remat     remat's own runtime (profile_remat.cpp), which `remat run` measures.
//
// outer_stages.cpp builds the embedding, final norm and head for every profile but remat.
#pragma once
#include "planner/graph/graph.hpp"
#include "planner/graph/stage_request.hpp"

namespace remat {

// Builds stage `request.kind` of the model as the request's profile decomposes it (finished).
StageGraph build_stage_graph(const StageRequest& request);

}  // namespace remat
