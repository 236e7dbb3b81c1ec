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

Activation parse_activation(const std::string& s, const std::string& origin) {
    if (s == "gelu_new") return Activation::gelu_new;
    if (s == "gelu") return Activation::gelu;
    if (s == "gelu_pytorch_tanh" || s == "gelu_tanh") return Activation::gelu_tanh;
    if (s == "silu" || s == "swish") return Activation::silu;
    throw InputError(fmt::format(
        "{}: activation {} is not supported; use gelu_new, gelu, gelu_pytorch_tanh or silu", origin,
        quote(s)));
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

// Hugging Face config.json, with the defaults transformers' config classes use for keys that
// the file leaves out (GPT2Config, LlamaConfig, MistralConfig, GPTNeoXConfig).
ModelConfig from_hf_config(const json& j, const std::string& origin) {
    ModelConfig m;
    const auto type = string_field(j, "model_type", origin);
    m.name = string_or(j, "_name_or_path", std::filesystem::path(origin).stem().string(), origin);
    m.source = origin;
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
        m.attn_bias = m.mlp_bias = true;
    } else if (type == "llama" || type == "mistral") {
        const bool mistral = type == "mistral";
        m.arch = Arch::llama;
        m.norm = NormKind::rmsnorm;
        m.vocab = size_or(j, "vocab_size", 32000, origin);
        m.hidden = size_or(j, "hidden_size", 4096, origin);
        m.ffn = size_or(j, "intermediate_size", mistral ? 14336 : 11008, origin);
        m.n_layers = size_or(j, "num_hidden_layers", 32, origin);
        m.n_heads = size_or(j, "num_attention_heads", 32, origin);
        m.n_kv_heads = size_or(j, "num_key_value_heads", mistral ? 8 : m.n_heads, origin);
        m.context = size_or(j, "max_position_embeddings", mistral ? 4096 * 32 : 2048, origin);
        m.activation = parse_activation(string_or(j, "hidden_act", "silu", origin), origin);
        m.attn_dropout = rate_or(j, "attention_dropout", 0.0, origin);
        m.tied_embeddings = bool_or(j, "tie_word_embeddings", false, origin);
        m.attn_bias = bool_or(j, "attention_bias", false, origin);
        m.mlp_bias = bool_or(j, "mlp_bias", false, origin);
        m.rotary_pct = 1.0;
        if (!absent(j, "head_dim")) m.head_dim = size_field(j, "head_dim", origin);
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
        m.attn_bias = bool_or(j, "attention_bias", true, origin);
        m.mlp_bias = true;
    } else {
        throw InputError(
            fmt::format("{}: model_type {} is not supported; use gpt2, llama, mistral or gpt_neox",
                        origin, quote(type)));
    }
    return m;
}

Arch parse_arch(const std::string& s, const std::string& origin) {
    if (s == "gpt2") return Arch::gpt2;
    if (s == "llama") return Arch::llama;
    if (s == "gpt_neox") return Arch::gpt_neox;
    throw InputError(
        fmt::format("{}: arch {} is not one of gpt2, llama, gpt_neox", origin, quote(s)));
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
    m.tied_embeddings = bool_field(j, "tied_embeddings", origin);
    m.learned_positions = bool_field(j, "learned_positions", origin);
    m.rotary_pct = fraction_field(j, "rotary_pct", true, origin);
    m.parallel_residual = bool_field(j, "parallel_residual", origin);
    m.attn_bias = bool_field(j, "attn_bias", origin);
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
    // GPT-2 and GPT-NeoX split one fused q/k/v projection of width 3 * hidden into heads
    // (transformers' GPT2Attention and GPTNeoXAttention: head_dim = hidden / heads, no key for it).
    if (m.arch != Arch::llama && m.head_dim * m.n_heads != m.hidden)
        throw InputError(fmt::format(
            "model {}: {} heads of head_dim {} must make hidden size {} ({} splits its fused "
            "q/k/v projection); drop head_dim or make it {}",
            n, m.n_heads, m.head_dim, m.hidden, arch_name(m.arch), m.hidden / m.n_heads));
    if (m.n_heads % m.n_kv_heads != 0)
        throw InputError(
            fmt::format("model {}: {} attention heads are not a multiple of {} key/value heads", n,
                        m.n_heads, m.n_kv_heads));
    if (!(m.rotary_pct >= 0.0 && m.rotary_pct <= 1.0))
        throw InputError(fmt::format("model {}: rotary_pct {} must be in [0, 1]", n, m.rotary_pct));
    // transformers' Llama and Mistral rotate whole heads; only GPT-NeoX has a partial rotary.
    if (m.arch == Arch::llama && m.rotary_pct != 1.0)
        throw InputError(
            fmt::format("model {}: llama rotates whole heads; rotary_pct must be 1.0, not {}", n,
                        m.rotary_pct));
    if (m.arch == Arch::gpt2 && m.rotary_pct != 0.0)
        throw InputError(fmt::format(
            "model {}: gpt2 has learned positions, no rotary; rotary_pct must be 0, not {}", n,
            m.rotary_pct));
}

std::uint64_t block_parameter_count(const ModelConfig& m) {
    const std::uint64_t H = m.hidden, F = m.ffn, D = m.head_dim;
    const std::uint64_t q = checked_mul(m.n_heads, D), kv = checked_mul(m.n_kv_heads, D);
    const std::uint64_t qkv = checked_add(q, checked_mul(2, kv));
    const std::uint64_t norm = m.norm == NormKind::layernorm ? checked_mul(2, H) : H;
    std::uint64_t attn = checked_add(checked_mul(H, qkv), checked_mul(q, H));
    if (m.attn_bias) attn = checked_add(attn, qkv, H);
    const bool gated = m.activation == Activation::silu;
    std::uint64_t mlp = checked_mul(gated ? 3 : 2, H, F);
    if (m.mlp_bias) mlp = checked_add(mlp, gated ? checked_mul(2, F) : F, H);
    return checked_add(checked_mul(2, norm), attn, mlp);
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

std::uint64_t largest_parameter_tensor(const ModelConfig& m) {
    const std::uint64_t H = m.hidden, F = m.ffn, D = m.head_dim;
    const std::uint64_t q = checked_mul(m.n_heads, D), kv = checked_mul(m.n_kv_heads, D);
    // GPT-2 and NeoX fuse q, k and v into one weight; Llama keeps them apart.
    const std::uint64_t attn =
        m.arch == Arch::llama ? checked_mul(H, std::max(q, kv)) : checked_mul(H, q + 2 * kv);
    std::uint64_t largest = std::max({checked_mul(m.vocab, H), checked_mul(H, F), attn});
    if (m.learned_positions) largest = std::max(largest, checked_mul(m.context, H));
    return largest;
}

std::uint64_t hf_buffer_bytes(const ModelConfig& m) {
    if (m.arch != Arch::gpt2) return 0;
    return checked_mul(m.n_layers, checked_mul(m.context, m.context));
}

std::uint64_t parameter_count(const ModelConfig& m) {
    return checked_add(embedding_parameter_count(m),
                       checked_mul(m.n_layers, block_parameter_count(m)),
                       final_norm_parameter_count(m), head_parameter_count(m));
}

std::uint64_t rotary_dims(const ModelConfig& m) {
    return static_cast<std::uint64_t>(static_cast<double>(m.head_dim) * m.rotary_pct);
}

std::vector<std::string> model_preset_names() {
    std::vector<std::string> names;
    for (const auto& p : embedded_presets())
        if (p.kind == "models") names.emplace_back(p.name);
    return names;
}

ModelConfig load_model(const std::string& name_or_path) {
    for (const auto& p : embedded_presets())
        if (p.kind == "models" && p.name == name_or_path)
            return model_from_json(parse_json_text(p.json, "models/" + name_or_path + ".json"),
                                   name_or_path);
    std::error_code ec;
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
