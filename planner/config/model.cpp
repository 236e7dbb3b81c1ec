#include "planner/config/model.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "planner/config/checked.hpp"
#include "planner/config/error.hpp"
#include "planner/config/json_io.hpp"
#include "planner/config/presets.hpp"

namespace remat {
namespace {

using nlohmann::json;

constexpr const char* supported_model_types =
    "gpt2, llama, mistral, qwen2, gemma, gemma2, phi3, mixtral, qwen2_moe, falcon or gpt_neox";

Activation parse_activation(const std::string& s, const std::string& origin) {
    if (s == "gelu_new") return Activation::gelu_new;
    if (s == "gelu") return Activation::gelu;
    if (s == "gelu_pytorch_tanh" || s == "gelu_tanh") return Activation::gelu_tanh;
    if (s == "gelu_fast") return Activation::gelu_fast;
    if (s == "silu" || s == "swish") return Activation::silu;
    throw InputError(fmt::format(
        "{}: activation {} is not supported; use gelu_new, gelu, gelu_pytorch_tanh, gelu_fast or "
        "silu",
        origin, quote(s)));
}

// What a bad value looked like, short enough for one line.
std::string shown(const json& v) {
    std::string d = v.dump();
    return d.size() > 40 ? d.substr(0, 37) + "..." : d;
}

[[noreturn]] void wrong_value(const std::string& origin, const char* key, const char* expected,
                              const json& v) {
    throw InputError(fmt::format("{}: \"{}\" must be {}, got {}", origin, key, expected, shown(v)));
}

const json& required(const json& j, const char* key, const std::string& origin) {
    if (!j.contains(key)) throw InputError(fmt::format("{}: missing \"{}\"", origin, key));
    return j.at(key);
}

// Absent or null: HF writes null for "derive it" (n_inner, num_key_value_heads).
bool absent(const json& j, const char* key) { return !j.contains(key) || j.at(key).is_null(); }

// A required unsigned size; zero, negative, fractional and non-numbers are refused.
std::uint64_t size_field(const json& j, const char* key, const std::string& origin) {
    const json& v = required(j, key, origin);
    if (v.is_number_unsigned() && v.get<std::uint64_t>() > 0 && v.get<std::uint64_t>() <= max_count)
        return v.get<std::uint64_t>();
    wrong_value(origin, key, "a positive integer", v);
}

std::uint64_t size_or(const json& j, const char* key, std::uint64_t fallback,
                      const std::string& origin) {
    return absent(j, key) ? fallback : size_field(j, key, origin);
}

std::string string_field(const json& j, const char* key, const std::string& origin) {
    const json& v = required(j, key, origin);
    if (!v.is_string()) wrong_value(origin, key, "a string", v);
    return v.get<std::string>();
}

std::string string_or(const json& j, const char* key, const std::string& fallback,
                      const std::string& origin) {
    return absent(j, key) ? fallback : string_field(j, key, origin);
}

bool bool_field(const json& j, const char* key, const std::string& origin) {
    const json& v = required(j, key, origin);
    if (!v.is_boolean()) wrong_value(origin, key, "true or false", v);
    return v.get<bool>();
}

bool bool_or(const json& j, const char* key, bool fallback, const std::string& origin) {
    return absent(j, key) ? fallback : bool_field(j, key, origin);
}

// A fraction in [0, 1] (rotary_pct) or, for dropout rates, [0, 1).
double fraction_field(const json& j, const char* key, bool one_allowed, const std::string& origin) {
    const json& v = required(j, key, origin);
    if (v.is_number()) {
        const double x = v.get<double>();
        if (x >= 0.0 && (one_allowed ? x <= 1.0 : x < 1.0)) return x;
    }
    wrong_value(origin, key, one_allowed ? "a number in [0, 1]" : "a number in [0, 1)", v);
}

double rate_or(const json& j, const char* key, double fallback, const std::string& origin) {
    return absent(j, key) ? fallback : fraction_field(j, key, false, origin);
}

// A soft-capping constant: absent takes the config class's default, null turns it off.
double softcap_or(const json& j, const char* key, double fallback, const std::string& origin) {
    if (!j.contains(key)) return fallback;
    const json& v = j.at(key);
    if (v.is_null()) return 0.0;
    if (v.is_number() && v.get<double>() > 0.0) return v.get<double>();
    wrong_value(origin, key, "a positive number or null", v);
}

// rope_scaling: null, or an object whose "rope_type" (or older "type") names the scheme. It
// changes the cos/sin values, not their sizes: accepted and recorded, no memory of its own.
std::string rope_scaling_of(const json& j, const std::string& origin) {
    if (absent(j, "rope_scaling")) return "";
    const json& v = j.at("rope_scaling");
    if (!v.is_object()) wrong_value(origin, "rope_scaling", "null or an object", v);
    for (const char* k : {"rope_type", "type"})
        if (v.contains(k) && v.at(k).is_string()) return v.at(k).get<std::string>();
    return "unnamed";
}

// Keys that would change what is computed in ways remat does not model: refused by name.
void refuse_true(const json& j, const char* key, const std::string& origin, const char* why) {
    if (bool_or(j, key, false, origin))
        throw InputError(fmt::format("{}: \"{}\": true is not modelled ({})", origin, key, why));
}

// Llama-style decoders (llama, mistral, qwen2, gemma, gemma2, phi3, mixtral): the keys their
// configuration classes share. `d` holds that class's defaults.
struct DecoderDefaults {
    std::uint64_t vocab, hidden, ffn, layers, heads, kv_heads, context;
    const char* act;
    bool tied;
};

void read_decoder(ModelConfig& m, const json& j, const DecoderDefaults& d, const char* act_key,
                  const std::string& origin) {
    m.norm = NormKind::rmsnorm;
    m.vocab = size_or(j, "vocab_size", d.vocab, origin);
    m.hidden = size_or(j, "hidden_size", d.hidden, origin);
    m.ffn = size_or(j, "intermediate_size", d.ffn, origin);
    m.n_layers = size_or(j, "num_hidden_layers", d.layers, origin);
    m.n_heads = size_or(j, "num_attention_heads", d.heads, origin);
    m.n_kv_heads = size_or(j, "num_key_value_heads", d.kv_heads ? d.kv_heads : m.n_heads, origin);
    m.context = size_or(j, "max_position_embeddings", d.context, origin);
    m.activation = parse_activation(string_or(j, act_key, d.act, origin), origin);
    m.gated_mlp = true;
    m.attn_dropout = rate_or(j, "attention_dropout", 0.0, origin);
    m.tied_embeddings = bool_or(j, "tie_word_embeddings", d.tied, origin);
    m.rotary_pct = 1.0;
    if (!absent(j, "head_dim")) m.head_dim = size_field(j, "head_dim", origin);
    m.rope_scaling = rope_scaling_of(j, origin);
    if (!absent(j, "sliding_window") && bool_or(j, "use_sliding_window", true, origin))
        m.sliding_window = size_field(j, "sliding_window", origin);
}

// Hugging Face config.json, with the defaults transformers' config classes use for keys that
// the file leaves out (GPT2Config, LlamaConfig, MistralConfig, GPTNeoXConfig, Qwen2Config,
// GemmaConfig, Gemma2Config, Phi3Config, MixtralConfig, FalconConfig).
ModelConfig from_hf_config(const json& j, const std::string& origin) {
    ModelConfig m;
    const auto type = string_field(j, "model_type", origin);
    // remat's presets in this format say where the file comes from; other files are their path.
    m.source = string_or(j, "remat_source", origin, origin);
    if (type == "gpt2") {
        m.arch = Arch::gpt2;
        m.norm = NormKind::layernorm;
        m.vocab = size_or(j, "vocab_size", 50257, origin);
        m.context = size_or(j, "n_positions", 1024, origin);
        m.hidden = size_or(j, "n_embd", 768, origin);
        m.n_layers = size_or(j, "n_layer", 12, origin);
        m.n_heads = size_or(j, "n_head", 12, origin);
        m.n_kv_heads = m.n_heads;
        m.ffn = size_or(j, "n_inner", 4 * m.hidden, origin);
        m.activation =
            parse_activation(string_or(j, "activation_function", "gelu_new", origin), origin);
        m.attn_dropout = rate_or(j, "attn_pdrop", 0.1, origin);
        m.resid_dropout = rate_or(j, "resid_pdrop", 0.1, origin);
        m.embd_dropout = rate_or(j, "embd_pdrop", 0.1, origin);
        m.tied_embeddings = bool_or(j, "tie_word_embeddings", true, origin);
        m.learned_positions = true;
        m.attn_bias = m.attn_out_bias = m.mlp_bias = true;
        m.fused_qkv = true;
    } else if (type == "llama" || type == "mistral") {
        const bool mistral = type == "mistral";
        m.arch = Arch::llama;
        read_decoder(m, j,
                     {32000, 4096, mistral ? 14336u : 11008u, 32, 32, mistral ? 8u : 0u,
                      mistral ? 4096u * 32 : 2048u, "silu", false},
                     "hidden_act", origin);
        m.attn_bias = m.attn_out_bias = bool_or(j, "attention_bias", false, origin);
        m.mlp_bias = bool_or(j, "mlp_bias", false, origin);
    } else if (type == "qwen2") {
        // Qwen2Attention: q/k/v_proj with bias, o_proj without.
        m.arch = Arch::qwen2;
        read_decoder(m, j, {151936, 4096, 22016, 32, 32, 32, 32768, "silu", false}, "hidden_act",
                     origin);
        m.attn_bias = true;
    } else if (type == "gemma" || type == "gemma2") {
        const bool g2 = type == "gemma2";
        m.arch = g2 ? Arch::gemma2 : Arch::gemma;
        // GemmaMLP's act_fn is ACT2FN[config.hidden_act] (transformers >= 4.48; 4.38-4.46 read
        // hidden_activation), Gemma2MLP's ACT2FN[config.hidden_activation]. Exact and tanh GELU
        // save the same tensor (their input), so the choice changes no memory.
        const char* key = g2 ? "hidden_activation" : "hidden_act";
        read_decoder(
            m, j,
            g2 ? DecoderDefaults{256000, 2304, 9216, 26, 8, 4, 8192, "gelu_pytorch_tanh", true}
               : DecoderDefaults{256000, 3072, 24576, 28, 16, 16, 8192, "gelu_pytorch_tanh", true},
            key, origin);
        if (absent(j, "head_dim")) m.head_dim = 256;
        m.norm = NormKind::rmsnorm_offset;
        m.scaled_embeddings = true;
        m.attn_bias = m.attn_out_bias = bool_or(j, "attention_bias", false, origin);
        if (g2) {
            m.sandwich_norms = true;
            m.attn_softcap = softcap_or(j, "attn_logit_softcapping", 50.0, origin);
            m.final_softcap = softcap_or(j, "final_logit_softcapping", 30.0, origin);
        }
    } else if (type == "phi3") {
        m.arch = Arch::phi3;
        read_decoder(m, j, {32064, 3072, 8192, 32, 32, 0, 4096, "silu", false}, "hidden_act",
                     origin);
        m.fused_qkv = m.fused_gate_up = true;
        m.resid_dropout = rate_or(j, "resid_pdrop", 0.0, origin);
        m.embd_dropout = rate_or(j, "embd_pdrop", 0.0, origin);
        if (!absent(j, "partial_rotary_factor") &&
            fraction_field(j, "partial_rotary_factor", true, origin) != 1.0)
            throw InputError(fmt::format(
                "{}: \"partial_rotary_factor\" below 1 is not modelled for phi3; remat rotates "
                "whole heads",
                origin));
    } else if (type == "mixtral") {
        m.arch = Arch::mixtral;
        read_decoder(m, j, {32000, 4096, 14336, 32, 32, 8, 4096 * 32, "silu", false}, "hidden_act",
                     origin);
        m.n_experts = size_or(j, "num_local_experts", 8, origin);
        m.experts_per_token = size_or(j, "num_experts_per_tok", 2, origin);
        m.expert_ffn = m.ffn;
        m.renormalize_topk = true;
        if (m.experts_per_token > m.n_experts)
            throw InputError(fmt::format(
                "{}: num_experts_per_tok {} is more than num_local_experts {}; lower it", origin,
                m.experts_per_token, m.n_experts));
    } else if (type == "qwen2_moe") {
        // Qwen2MoeConfig, Qwen2MoeSparseMoeBlock: routed experts of moe_intermediate_size, one
        // shared expert with a sigmoid gate, q/k/v biases as qwen2.
        m.arch = Arch::qwen2_moe;
        read_decoder(m, j, {151936, 2048, 5632, 24, 16, 16, 32768, "silu", false}, "hidden_act",
                     origin);
        m.attn_bias = bool_or(j, "qkv_bias", true, origin);
        m.n_experts = size_or(j, "num_experts", 60, origin);
        m.experts_per_token = size_or(j, "num_experts_per_tok", 4, origin);
        m.expert_ffn = size_or(j, "moe_intermediate_size", 1408, origin);
        m.shared_expert_ffn = size_or(j, "shared_expert_intermediate_size", 5632, origin);
        m.renormalize_topk = bool_or(j, "norm_topk_prob", false, origin);
        if (m.experts_per_token > m.n_experts)
            throw InputError(
                fmt::format("{}: num_experts_per_tok {} is more than num_experts {}; lower it",
                            origin, m.experts_per_token, m.n_experts));
        // Dense layers among the sparse ones would make blocks differ; remat's chain repeats one.
        const bool every_layer_sparse =
            size_or(j, "decoder_sparse_step", 1, origin) == 1 &&
            (absent(j, "mlp_only_layers") ||
             (j.at("mlp_only_layers").is_array() && j.at("mlp_only_layers").empty()));
        if (!every_layer_sparse)
            throw InputError(fmt::format(
                "{}: decoder_sparse_step above 1 or mlp_only_layers mixes dense and sparse layers, "
                "which remat does not model (its blocks are all alike); plan with every layer "
                "sparse",
                origin));
    } else if (type == "falcon" || type == "RefinedWeb" || type == "RefinedWebModel") {
        // FalconConfig, FalconAttention and FalconDecoderLayer (modeling_falcon.py).
        m.arch = Arch::falcon;
        m.norm = NormKind::layernorm;
        m.vocab = size_or(j, "vocab_size", 65024, origin);
        m.hidden = size_or(j, "hidden_size", 4544, origin);
        m.n_layers = size_or(j, "num_hidden_layers", 32, origin);
        m.n_heads = size_or(j, "num_attention_heads", 71, origin);
        m.context = size_or(j, "max_position_embeddings", 2048, origin);
        m.ffn = size_or(j, "ffn_hidden_size", 4 * m.hidden, origin);
        m.activation = parse_activation(string_or(j, "activation", "gelu", origin), origin);
        m.attn_dropout = rate_or(j, "attention_dropout", 0.0, origin);
        m.resid_dropout = rate_or(j, "hidden_dropout", 0.0, origin);
        m.tied_embeddings = bool_or(j, "tie_word_embeddings", true, origin);
        refuse_true(j, "alibi", origin, "falcon-rw's ALiBi attention; remat models rotary falcon");
        const bool new_arch = bool_or(j, "new_decoder_architecture", false, origin);
        const bool multi_query = bool_or(j, "multi_query", true, origin);
        const std::uint64_t kv = size_or(j, "num_kv_heads", m.n_heads, origin);
        m.n_kv_heads = new_arch || !multi_query ? kv : 1;
        m.parallel_residual = bool_or(j, "parallel_attn", true, origin);
        std::uint64_t n_ln = new_arch ? 2 : 1;
        if (!absent(j, "num_ln_in_parallel_attn"))
            n_ln = size_field(j, "num_ln_in_parallel_attn", origin);
        m.shared_block_norm = m.parallel_residual && n_ln != 2;
        m.kv_by_index = new_arch || multi_query;
        m.kv_materialized = new_arch;
        if (new_arch && !m.parallel_residual)
            throw InputError(fmt::format(
                "{}: new_decoder_architecture with parallel_attn false is not a layout "
                "transformers runs (FalconDecoderLayer builds input/post norms but calls ln_attn); "
                "set parallel_attn true",
                origin));
        m.attn_bias = m.attn_out_bias = m.mlp_bias = bool_or(j, "bias", false, origin);
        m.fused_qkv = true;
        m.rotary_pct = 1.0;
        m.rope_scaling = rope_scaling_of(j, origin);
    } else if (type == "gpt_neox") {
        m.arch = Arch::gpt_neox;
        m.norm = NormKind::layernorm;
        m.vocab = size_or(j, "vocab_size", 50432, origin);
        m.hidden = size_or(j, "hidden_size", 6144, origin);
        m.n_layers = size_or(j, "num_hidden_layers", 44, origin);
        m.n_heads = size_or(j, "num_attention_heads", 64, origin);
        m.n_kv_heads = m.n_heads;
        m.ffn = size_or(j, "intermediate_size", 24576, origin);
        m.context = size_or(j, "max_position_embeddings", 2048, origin);
        m.activation = parse_activation(string_or(j, "hidden_act", "gelu", origin), origin);
        m.rotary_pct =
            absent(j, "rotary_pct") ? 0.25 : fraction_field(j, "rotary_pct", true, origin);
        m.attn_dropout = rate_or(j, "attention_dropout", 0.0, origin);
        m.resid_dropout = rate_or(j, "hidden_dropout", 0.0, origin);
        m.embd_dropout = m.resid_dropout;  // GPTNeoXModel.emb_dropout uses hidden_dropout
        m.parallel_residual = bool_or(j, "use_parallel_residual", true, origin);
        m.tied_embeddings = bool_or(j, "tie_word_embeddings", false, origin);
        m.attn_bias = m.attn_out_bias = bool_or(j, "attention_bias", true, origin);
        m.mlp_bias = true;
        m.fused_qkv = true;
        m.rope_scaling = rope_scaling_of(j, origin);
    } else {
        throw InputError(fmt::format("{}: model_type {} is not supported; use one of {}", origin,
                                     quote(type), supported_model_types));
    }
    return m;
}

constexpr Arch all_archs[] = {Arch::gpt2,      Arch::llama,  Arch::gpt_neox, Arch::qwen2,
                              Arch::gemma,     Arch::gemma2, Arch::phi3,     Arch::mixtral,
                              Arch::qwen2_moe, Arch::falcon};

Arch parse_arch(const std::string& s, const std::string& origin) {
    for (Arch a : all_archs)
        if (arch_name(a) == s) return a;
    throw InputError(fmt::format(
        "{}: arch {} is not one of gpt2, llama, gpt_neox (the preset format's families; other "
        "families are read from their Hugging Face config.json)",
        origin, quote(s)));
}

// The model's name when a config.json does not say: a file named config.json is named after
// its folder (a checkpoint directory), any other file after its stem.
std::string name_from_path(const std::string& path) {
    namespace fs = std::filesystem;
    const fs::path p(path);
    if (p.filename() == "config.json") {
        std::error_code ec;
        const fs::path dir = fs::weakly_canonical(fs::absolute(p, ec), ec).parent_path();
        if (!dir.filename().empty()) return dir.filename().string();
    }
    std::string file = p.filename().string();
    if (file.ends_with(".json")) file.resize(file.size() - 5);
    return file;
}

// remat's own preset format: every field explicit, nothing defaulted.
ModelConfig from_preset(const json& j, const std::string& origin) {
    ModelConfig m;
    m.name = string_field(j, "name", origin);
    m.arch = parse_arch(string_field(j, "arch", origin), origin);
    m.n_layers = size_field(j, "n_layers", origin);
    m.hidden = size_field(j, "hidden", origin);
    m.n_heads = size_field(j, "n_heads", origin);
    m.n_kv_heads = size_field(j, "n_kv_heads", origin);
    m.ffn = size_field(j, "ffn", origin);
    m.vocab = size_field(j, "vocab", origin);
    m.context = size_field(j, "context", origin);
    const auto norm = string_field(j, "norm", origin);
    if (norm != "layernorm" && norm != "rmsnorm")
        throw InputError(
            fmt::format("{}: norm {} must be layernorm or rmsnorm", origin, quote(norm)));
    m.norm = norm == "rmsnorm" ? NormKind::rmsnorm : NormKind::layernorm;
    m.activation = parse_activation(string_field(j, "activation", origin), origin);
    if (m.arch != Arch::gpt2 && m.arch != Arch::llama && m.arch != Arch::gpt_neox)
        throw InputError(fmt::format(
            "{}: the preset format describes gpt2, llama and gpt_neox; write {} models as their "
            "Hugging Face config.json",
            origin, arch_name(m.arch)));
    // Llama's MLP is gated (LlamaMLP), GPT-2's and GPT-NeoX's are not.
    m.gated_mlp = m.arch == Arch::llama;
    m.fused_qkv = m.arch != Arch::llama;
    m.tied_embeddings = bool_field(j, "tied_embeddings", origin);
    m.learned_positions = bool_field(j, "learned_positions", origin);
    m.rotary_pct = fraction_field(j, "rotary_pct", true, origin);
    m.parallel_residual = bool_field(j, "parallel_residual", origin);
    m.attn_bias = m.attn_out_bias = bool_field(j, "attn_bias", origin);
    m.mlp_bias = bool_field(j, "mlp_bias", origin);
    m.attn_dropout = rate_or(j, "attn_dropout", 0.0, origin);
    m.resid_dropout = rate_or(j, "resid_dropout", 0.0, origin);
    m.embd_dropout = rate_or(j, "embd_dropout", 0.0, origin);
    if (!absent(j, "head_dim")) m.head_dim = size_field(j, "head_dim", origin);
    m.source = string_or(j, "source", origin, origin);
    return m;
}

}  // namespace

std::string_view arch_name(Arch a) {
    switch (a) {
        case Arch::gpt2:
            return "gpt2";
        case Arch::llama:
            return "llama";
        case Arch::gpt_neox:
            return "gpt_neox";
        case Arch::qwen2:
            return "qwen2";
        case Arch::gemma:
            return "gemma";
        case Arch::gemma2:
            return "gemma2";
        case Arch::phi3:
            return "phi3";
        case Arch::mixtral:
            return "mixtral";
        case Arch::qwen2_moe:
            return "qwen2_moe";
        case Arch::falcon:
            return "falcon";
    }
    return "?";
}

std::string_view activation_name(Activation a) {
    switch (a) {
        case Activation::gelu_new:
            return "gelu_new";
        case Activation::gelu:
            return "gelu";
        case Activation::gelu_tanh:
            return "gelu_pytorch_tanh";
        case Activation::gelu_fast:
            return "gelu_fast";
        case Activation::silu:
            return "silu";
    }
    return "?";
}

ModelConfig model_from_json(const json& j, const std::string& origin) {
    if (!j.is_object())
        throw InputError(fmt::format("{}: expected a JSON object with a model config", origin));
    ModelConfig m;
    if (j.contains("format") && j.at("format") == "remat-model") {
        m = from_preset(j, origin);
    } else if (j.contains("model_type")) {
        m = from_hf_config(j, origin);
        m.name = name_from_path(origin);
    } else {
        throw InputError(fmt::format(
            "{}: neither a remat preset (\"format\": \"remat-model\") nor a Hugging Face "
            "config.json (\"model_type\")",
            origin));
    }
    if (m.head_dim == 0 && m.n_heads > 0) m.head_dim = m.hidden / m.n_heads;
    validate_model(m);
    return m;
}

void validate_model(const ModelConfig& m) {
    const std::string n = quote(m.name);
    if (m.n_layers == 0 || m.hidden == 0 || m.n_heads == 0 || m.n_kv_heads == 0 || m.ffn == 0 ||
        m.vocab == 0 || m.context == 0)
        throw InputError(fmt::format("model {}: every size must be positive", n));
    if (m.n_layers > max_layers)
        throw InputError(fmt::format(
            "model {}: {} layers is more than remat plans (at most {}); check the config", n,
            m.n_layers, max_layers));
    try {
        (void)parameter_count(m);
    } catch (const SizeOverflow&) {
        throw InputError(
            fmt::format("model {}: its parameter count exceeds 2^63 - 1; check its sizes", n));
    }
    // (After the count: head_dim * n_heads is one of its checked products.)
    if (m.hidden % m.n_heads != 0 && m.head_dim * m.n_heads != m.hidden)
        throw InputError(fmt::format(
            "model {}: hidden size {} is not divisible by {} heads; pick a head count that "
            "divides it",
            n, m.hidden, m.n_heads));
    // GPT-2, GPT-NeoX, Phi-3 and Falcon take head_dim = hidden / heads (their attention
    // classes read no head_dim key), so a head_dim that does not make hidden is refused.
    const bool own_head_dim = m.arch == Arch::llama || m.arch == Arch::qwen2 ||
                              m.arch == Arch::gemma || m.arch == Arch::gemma2 ||
                              m.arch == Arch::mixtral || m.arch == Arch::qwen2_moe;
    if (!own_head_dim && m.head_dim * m.n_heads != m.hidden)
        throw InputError(fmt::format(
            "model {}: {} heads of head_dim {} must make hidden size {} ({} takes head_dim = "
            "hidden / heads); drop head_dim or make it {}",
            n, m.n_heads, m.head_dim, m.hidden, arch_name(m.arch), m.hidden / m.n_heads));
    if (m.n_heads % m.n_kv_heads != 0)
        throw InputError(
            fmt::format("model {}: {} attention heads are not a multiple of {} key/value heads", n,
                        m.n_heads, m.n_kv_heads));
    if (!(m.rotary_pct >= 0.0 && m.rotary_pct <= 1.0))
        throw InputError(fmt::format("model {}: rotary_pct {} must be in [0, 1]", n, m.rotary_pct));
    // Every family but GPT-2 (learned positions) and GPT-NeoX (partial rotary) rotates whole
    // heads in transformers.
    if (m.arch != Arch::gpt2 && m.arch != Arch::gpt_neox && m.rotary_pct != 1.0)
        throw InputError(
            fmt::format("model {}: {} rotates whole heads; rotary_pct must be 1.0, not {}", n,
                        arch_name(m.arch), m.rotary_pct));
    if ((m.n_experts == 0) != (m.experts_per_token == 0) || m.experts_per_token > m.n_experts)
        throw InputError(fmt::format(
            "model {}: {} experts with {} per token; a mixture of experts needs 1 <= experts per "
            "token <= experts",
            n, m.n_experts, m.experts_per_token));
    if (m.n_experts > 0 && m.expert_ffn == 0)
        throw InputError(fmt::format("model {}: its experts need a positive width", n));
    if (m.n_experts > max_experts)
        throw InputError(fmt::format(
            "model {}: {} experts is more than remat plans (at most {}); check the config", n,
            m.n_experts, max_experts));
    if (m.fused_gate_up && !m.gated_mlp)
        throw InputError(fmt::format("model {}: a fused gate/up projection needs a gated MLP", n));
    if (m.arch == Arch::gpt2 && m.rotary_pct != 0.0)
        throw InputError(fmt::format(
            "model {}: gpt2 has learned positions, no rotary; rotary_pct must be 0, not {}", n,
            m.rotary_pct));
}

std::uint64_t block_norm_count(const ModelConfig& m) {
    const std::uint64_t one = m.norm == NormKind::layernorm ? checked_mul(2, m.hidden) : m.hidden;
    const std::uint64_t norms = m.shared_block_norm ? 1 : m.sandwich_norms ? 4 : 2;
    return checked_mul(norms, one);
}

std::uint64_t block_parameter_count(const ModelConfig& m) {
    const std::uint64_t H = m.hidden, F = m.ffn, D = m.head_dim;
    const std::uint64_t q = checked_mul(m.n_heads, D), kv = checked_mul(m.n_kv_heads, D);
    const std::uint64_t qkv = checked_add(q, checked_mul(2, kv));
    std::uint64_t attn = checked_add(checked_mul(H, qkv), checked_mul(q, H));
    if (m.attn_bias) attn = checked_add(attn, qkv);
    if (m.attn_out_bias) attn = checked_add(attn, H);
    std::uint64_t mlp = checked_mul(m.gated_mlp ? 3 : 2, H, F);
    if (m.mlp_bias) mlp = checked_add(mlp, m.gated_mlp ? checked_mul(2, F) : F, H);
    if (m.n_experts > 0) {
        // The experts, the router (a bias-free H x E linear), and a shared expert with its
        // H x 1 gate (qwen2_moe).
        mlp = checked_add(checked_mul(m.n_experts, checked_mul(3, H, m.expert_ffn)),
                          checked_mul(H, m.n_experts));
        if (m.shared_expert_ffn > 0)
            mlp = checked_add(mlp, checked_mul(3, H, m.shared_expert_ffn), H);
    }
    return checked_add(block_norm_count(m), attn, mlp);
}

std::uint64_t embedding_parameter_count(const ModelConfig& m) {
    return checked_add(checked_mul(m.vocab, m.hidden),
                       m.learned_positions ? checked_mul(m.context, m.hidden) : 0);
}

std::uint64_t final_norm_parameter_count(const ModelConfig& m) {
    return m.norm == NormKind::layernorm ? checked_mul(2, m.hidden) : m.hidden;
}

std::uint64_t head_parameter_count(const ModelConfig& m) {
    return m.tied_embeddings ? 0 : checked_mul(m.vocab, m.hidden);
}

std::uint64_t outer_parameter_count(const ModelConfig& m) {
    return checked_add(embedding_parameter_count(m), final_norm_parameter_count(m),
                       head_parameter_count(m));
}

std::uint64_t largest_parameter_tensor(const ModelConfig& m) {
    const std::uint64_t H = m.hidden, F = m.ffn, D = m.head_dim;
    const std::uint64_t q = checked_mul(m.n_heads, D), kv = checked_mul(m.n_kv_heads, D);
    // GPT-2, NeoX, Phi-3 and Falcon fuse q, k and v into one weight; the others keep them apart.
    const std::uint64_t attn = m.fused_qkv ? checked_mul(H, checked_add(q, checked_mul(2, kv)))
                                           : checked_mul(H, std::max(q, kv));
    std::uint64_t mlp = checked_mul(m.fused_gate_up ? 2 : 1, H, F);
    if (m.n_experts > 0) mlp = checked_mul(H, std::max(m.expert_ffn, m.shared_expert_ffn));
    std::uint64_t largest = std::max({checked_mul(m.vocab, H), mlp, attn});
    if (m.learned_positions) largest = std::max(largest, checked_mul(m.context, H));
    return largest;
}

std::uint64_t hf_buffer_bytes(const ModelConfig& m) {
    if (m.arch != Arch::gpt2) return 0;
    return checked_mul(m.n_layers, checked_mul(m.context, m.context));
}

std::uint64_t parameter_count(const ModelConfig& m) {
    return checked_add(outer_parameter_count(m), checked_mul(m.n_layers, block_parameter_count(m)));
}

std::uint64_t rotary_dims(const ModelConfig& m) {
    return static_cast<std::uint64_t>(static_cast<double>(m.head_dim) * m.rotary_pct);
}

std::vector<std::string> model_preset_names() { return preset_names("models"); }

ModelConfig load_model(const std::string& name_or_path) {
    if (const EmbeddedPreset* p = find_preset("models", name_or_path)) {
        ModelConfig m = model_from_json(
            parse_json_text(p->json, "models/" + name_or_path + ".json"), name_or_path);
        m.name = name_or_path;
        return m;
    }
    std::error_code ec;
    if (std::filesystem::is_directory(name_or_path, ec)) {
        const std::string file = (std::filesystem::path(name_or_path) / "config.json").string();
        if (!std::filesystem::exists(file, ec))
            throw InputError(fmt::format(
                "cannot open {}: the folder {} has no config.json; pass the folder of a Hugging "
                "Face checkpoint, a config file, or a preset name (remat models)",
                quote(file), quote(name_or_path)));
        return model_from_json(read_json_file(file), file);
    }
    if (std::filesystem::exists(name_or_path, ec))
        return model_from_json(read_json_file(name_or_path), name_or_path);
    // Something that looks like a path is a file that is not there, not a misspelt preset.
    if (name_or_path.find('/') != std::string::npos || name_or_path.ends_with(".json"))
        throw InputError(
            fmt::format("cannot open model file {}: no such file; check the path, or pass a preset "
                        "name (remat models)",
                        quote(name_or_path)));
    throw_unknown("model", name_or_path, model_preset_names());
}

}  // namespace remat
