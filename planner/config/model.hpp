// Model architecture as the planner sees it: sizes and the choices that change what is saved
// for backward (norm kind, activation, dropout, rotary, parallel residual, biases).
//
//   ModelConfig m = load_model("llama2-7b");          // a preset name, or
//   ModelConfig m = load_model("path/config.json");   // a preset-format or HF config.json
//   std::uint64_t n = parameter_count(m);             // exact, as HF counts it
//
// It does not know batch, sequence or precision: those are run options
// (planner/config/options.hpp).
#pragma once
#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

namespace remat {

// The Hugging Face model_type families remat reads (mistral reads as llama: same modules).
enum class Arch { gpt2, llama, gpt_neox, qwen2, gemma, gemma2, phi3, mixtral, qwen2_moe, falcon };
// rmsnorm: LlamaRMSNorm (weight * normalized.to(input dtype)); rmsnorm_offset: GemmaRMSNorm
// ((normalized * (1 + weight)) in fp32, then cast), same parameters, different saved tensors.
enum class NormKind { layernorm, rmsnorm, rmsnorm_offset };
// gelu_new: HF NewGELUActivation (tanh formula in python ops); gelu: exact erf GELU (one op);
// gelu_tanh: F.gelu(approximate="tanh") (one op); gelu_fast: HF FastGELUActivation (python
// ops); silu: F.silu (one op). Whether the MLP is gated is ModelConfig::gated_mlp.
enum class Activation { gelu_new, gelu, gelu_tanh, gelu_fast, silu };

struct ModelConfig {
    std::string name;
    Arch arch = Arch::gpt2;
    std::uint64_t n_layers = 0;    // L
    std::uint64_t hidden = 0;      // H
    std::uint64_t n_heads = 0;     // A
    std::uint64_t n_kv_heads = 0;  // KV (== A without grouped-query attention)
    std::uint64_t head_dim = 0;    // D, H / A unless a config says otherwise
    std::uint64_t ffn = 0;         // F
    std::uint64_t vocab = 0;       // V
    std::uint64_t context = 0;     // max positions; the default sequence length
    NormKind norm = NormKind::layernorm;
    Activation activation = Activation::gelu_new;
    bool tied_embeddings = false;
    bool learned_positions = false;  // gpt2's wpe table; others use rotary
    double rotary_pct = 0.0;         // fraction of head_dim rotated (gpt_neox: 0.25)
    bool parallel_residual = false;  // gpt_neox: attention and MLP read the same input
    bool attn_bias = false;          // biases on the q, k, v projections
    bool attn_out_bias = false;      // bias on the attention output projection
    bool mlp_bias = false;
    // act(gate(x)) * up(x) with three matrices (llama, gemma, phi3, mixtral's experts) instead
    // of act(fc(x)) with two; transformers' LlamaMLP is gated whatever hidden_act says.
    bool gated_mlp = false;
    bool fused_qkv = false;          // one q/k/v weight (gpt2, gpt_neox, phi3, falcon)
    bool fused_gate_up = false;      // one gate/up weight, chunked (phi3)
    bool scaled_embeddings = false;  // gemma: embeddings * sqrt(hidden), a 0-dim tensor
    bool sandwich_norms = false;     // gemma2: norms after attention and MLP too (4 per block)
    // falcon-7b: attention and MLP read one input_layernorm (parallel_residual, 1 norm/block).
    bool shared_block_norm = false;
    // falcon multi-query and new_decoder_architecture: k and v are picked out of the fused
    // projection by advanced indexing (qkv[..., [-2], :]), which saves two int64 index tensors.
    bool kv_by_index = false;
    // falcon new_decoder_architecture: _split_heads broadcasts k and v to every query head and
    // flatten materializes them, so attention sees A heads of k and v, not KV.
    bool kv_materialized = false;
    double attn_softcap = 0.0;   // gemma2: tanh soft-capping of attention scores (0: none)
    double final_softcap = 0.0;  // gemma2: tanh soft-capping of the logits (0: none)
    // Mixture of experts (mixtral, qwen2_moe): n_experts gated MLPs of width expert_ffn, each
    // token routed to experts_per_token of them by a linear router. 0 experts: a dense MLP.
    std::uint64_t n_experts = 0;
    std::uint64_t experts_per_token = 0;
    std::uint64_t expert_ffn = 0;  // mixtral: ffn; qwen2_moe: moe_intermediate_size
    bool renormalize_topk =
        false;  // routing weights divided by their sum (mixtral; qwen2_moe's norm_topk_prob)
    // qwen2_moe: one shared expert every token goes through, of this width, scaled by
    // sigmoid(shared_expert_gate(x)); 0: none.
    std::uint64_t shared_expert_ffn = 0;
    // Keys read and accepted that change no memory: the sliding window (a mask pattern; eager
    // attention still materializes S x S) and rope_scaling (the cos/sin values, not sizes).
    std::uint64_t sliding_window = 0;
    std::string rope_scaling;    // its "rope_type"/"type", or "" when absent
    double attn_dropout = 0.0;   // on attention probabilities
    double resid_dropout = 0.0;  // on attention and MLP outputs
    double embd_dropout = 0.0;   // on the embedding output
    std::string source;          // where the numbers come from
};

std::string_view arch_name(Arch a);
std::string_view activation_name(Activation a);

// Parameters of one transformer block, and of the whole model, counted as HF counts them
// (tied embeddings once).
std::uint64_t block_parameter_count(const ModelConfig& m);
// Elements per block in norms (LayerNorm weight and bias, RMSNorm weight).
std::uint64_t block_norm_count(const ModelConfig& m);
std::uint64_t embedding_parameter_count(const ModelConfig& m);
std::uint64_t final_norm_parameter_count(const ModelConfig& m);
std::uint64_t head_parameter_count(const ModelConfig& m);  // 0 when tied
// Embedding, final norm and head: what is not in a block (FSDP's root unit).
std::uint64_t outer_parameter_count(const ModelConfig& m);
std::uint64_t parameter_count(const ModelConfig& m);
// The elements of the model's largest parameter tensor (the embedding or head V x H, GPT-2's
// positions, a block's widest weight): what torch.optim's for-loop step sizes its temporaries by.
std::uint64_t largest_parameter_tensor(const ModelConfig& m);
// Bytes of module buffers the Hugging Face model holds for the whole run: GPT-2's causal-mask
// buffer `attn.bias`, bool [1, 1, P, P] per block (transformers' GPT2Attention.__init__,
// register_buffer("bias", torch.tril(...))). Rotary inv_freq buffers (head_dim / 2 floats) are
// left out: tens of bytes.
std::uint64_t hf_buffer_bytes(const ModelConfig& m);
// Head dims that rotary embeddings rotate: int(head_dim * rotary_pct), as transformers'
// GPTNeoXAttention computes rotary_ndims (truncated); 0 means no rotary inputs at all.
std::uint64_t rotary_dims(const ModelConfig& m);

// A preset name, a path to a JSON file, or a folder holding config.json (the model is then named
// after the folder, as it is for any file named config.json); throws InputError naming the
// problem.
ModelConfig load_model(const std::string& name_or_path);
// Parse JSON text that is either remat's preset format ("format": "remat-model") or a Hugging
// Face config.json (recognized by "model_type"); `origin` names it in error messages.
ModelConfig model_from_json(const nlohmann::json& j, const std::string& origin);
std::vector<std::string> model_preset_names();

// The deepest model remat plans: deeper configs are refused (the chain has a stage per layer).
inline constexpr std::uint64_t max_layers = 100'000;

// The most experts a mixture of experts may have: each is its own ops in the block's graph
// (transformers loops over them), and published MoEs have at most a few hundred.
inline constexpr std::uint64_t max_experts = 1024;

// Throws InputError if sizes are zero or inconsistent (hidden not divisible by heads, ...), or
// past max_layers, or if the parameter count exceeds 2^63 - 1.
void validate_model(const ModelConfig& m);

}  // namespace remat
