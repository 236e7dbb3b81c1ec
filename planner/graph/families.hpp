// The stage builders of each implementation family but remat's own (profile_remat.hpp), for
// the dispatcher (profiles.cpp), and the pieces the Hugging Face families share. Internal to
// planner/graph: one .cpp per family, each following its implementation's code op by op.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "planner/config/model.hpp"
#include "planner/config/options.hpp"
#include "planner/graph/graph.hpp"
#include "planner/graph/op_builder.hpp"
#include "planner/graph/stage_request.hpp"

namespace remat::family {

struct Dims {
    std::uint64_t B, S, H, A, KV, D, F, V;
};
Dims dims_of(const StageRequest& r);

// ---- Hugging Face modules (hf-eager, sdpa) ----

// q, k, v in (B, heads, S, D) layout. `*_contiguous` says whether a (B*heads, S, D) reshape of
// the tensor is a view (true) or makes a copy (false), which decides what matmul saves.
struct Qkv {
    TensorId q, k, v;
    bool q_contiguous, k_contiguous, v_contiguous;
};

// How the eager code turns probabilities into the AV operand: GPT-2 casts to value's dtype
// (`.type(value.dtype)`), Llama and GPT-NeoX take softmax in fp32 and cast to query's dtype.
// Falcon's softmax(scores + mask, dtype=hidden_states.dtype) keeps the hidden dtype (f32 under
// autocast, where the f32 mask promotes the scores) and casts nothing after it.
enum class EagerSoftmax { gpt2, fp32_then_query_dtype, hidden_dtype };

// The attention core (Megatron's "core attention": QK^T, softmax, dropout, AV), flash or
// eager. Returns the input of the output projection, (B, S, A*D). (hf_attention.cpp)
// How k and v with fewer heads than q reach the matmuls: not at all (GPT-2, NeoX: equal heads),
// through repeat_kv's expand + reshape (the Llama family), or broadcast by the matmul itself,
// which casts them under autocast first (Falcon's multi-query).
enum class KvExpand { none, repeat_kv, matmul_broadcast };

// `softcap` > 0: gemma2's tanh soft-capping of the eager scores (the sdpa path ignores it, as
// transformers' sdpa_attention_forward does).
TensorId attention(OpBuilder& b, const std::string& name, Qkv in, const Dims& d, Profile profile,
                   double attn_dropout, KvExpand kv, EagerSoftmax softmax_kind,
                   double softcap = 0.0);

// Rotary embedding on (B, heads, S, D) with `pct` of each head rotated. (hf_attention.cpp)
// `always_cat`: Phi-3's apply_rotary_pos_emb concatenates (rotated, pass) even when nothing passes.
TensorId rotary(OpBuilder& b, const std::string& name, TensorId x, TensorId cos, TensorId sin,
                double pct, bool always_cat = false);

// The rotary cos and sin every block reads, shared inputs made once per step (none when the
// model rotates no dims).
struct SharedInputs {
    TensorId cos = no_tensor, sin = no_tensor;
};
SharedInputs add_rotary_inputs(StageGraph& g, const Dims& d, const ModelConfig& m, DType dt);

TensorId hf_gpt2_block(OpBuilder& b, const Dims& d, const ModelConfig& m, Profile profile);
// The gated MLP down(act(gate(x)) * up(x)) on x's last dim, ops in Python's order (gate, act, up,
// product, down), each linear named prefix.<its name>. (hf_decoder.cpp)
struct GatedNames {
    const char *gate, *up, *down;
};
inline constexpr GatedNames llama_mlp_names{"gate_proj", "up_proj", "down_proj"};
TensorId gated_mlp(OpBuilder& b, const std::string& prefix, TensorId x, std::uint64_t width,
                   std::uint64_t out, Activation act, GatedNames names = llama_mlp_names);

// Llama-style decoders (hf_decoder.cpp): llama, mistral, qwen2, gemma, gemma2, phi3, mixtral,
// qwen2_moe.
TensorId hf_decoder_block(OpBuilder& b, const Dims& d, const ModelConfig& m, Profile profile,
                          const std::vector<std::uint64_t>& expert_tokens);
// Mixtral's and Qwen2-MoE's sparse MoE blocks on (B, S, H); expert e gets expert_tokens[e]
// tokens. (hf_moe.cpp)
TensorId hf_moe(OpBuilder& b, const std::string& name, TensorId x, const Dims& d,
                const ModelConfig& m, const std::vector<std::uint64_t>& expert_tokens);
TensorId hf_falcon_block(OpBuilder& b, const Dims& d, const ModelConfig& m, Profile profile);
TensorId hf_neox_block(OpBuilder& b, const Dims& d, const ModelConfig& m, Profile profile);

// ---- Megatron-LM (megatron.cpp) ----
TensorId megatron_block(OpBuilder& b, const Dims& d, const ModelConfig& m);

// ---- Embedding, final norm, head + loss, for every profile but remat (outer_stages.cpp) ----
TensorId embedding_stage(OpBuilder& b, const Dims& d, const ModelConfig& m, Profile profile);
TensorId norm_stage(OpBuilder& b, const Dims& d, const ModelConfig& m, Profile profile);
// The head and its loss: Hugging Face's ForCausalLMLoss, or with `dpo` DPO's log-probabilities
// of the concatenated batch and its preference loss.
TensorId head_stage(OpBuilder& b, const Dims& d, const ModelConfig& m, Profile profile,
                    bool dpo = false);

}  // namespace remat::family
