#include "planner/model.hpp"

#include <fmt/format.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "planner/error.hpp"
#include "planner/json_io.hpp"
#include "planner/presets.hpp"

namespace remat {
namespace {

using nlohmann::json;

Activation parse_activation(const std::string& s, const std::string& origin) {
    if (s == "gelu_new") return Activation::gelu_new;
    if (s == "gelu") return Activation::gelu;
    if (s == "gelu_pytorch_tanh" || s == "gelu_tanh") return Activation::gelu_tanh;
    if (s == "silu" || s == "swish") return Activation::silu;
    throw InputError(fmt::format(
        "{}: activation '{}' is not supported; use gelu_new, gelu, gelu_pytorch_tanh or silu",
        origin, s));
}

// Reads a required unsigned size and rejects zero, negative and non-integer values.
std::uint64_t size_field(const json& j, const char* key, const std::string& origin) {
    if (!j.contains(key)) throw InputError(fmt::format("{}: missing \"{}\"", origin, key));
    const json& v = j.at(key);
    if (v.is_number_unsigned() && v.get<std::uint64_t>() > 0) return v.get<std::uint64_t>();
    throw InputError(fmt::format("{}: \"{}\" must be a positive integer, got {}", origin, key,
                                 v.dump()));
}

// An optional size that falls back to `fallback` when absent or null (HF writes null for
// "derive it", e.g. n_inner and num_key_value_heads).
std::uint64_t size_or(const json& j, const char* key, std::uint64_t fallback,
                      const std::string& origin) {
    if (!j.contains(key) || j.at(key).is_null()) return fallback;
    return size_field(j, key, origin);
}

double rate_or(const json& j, const char* key, double fallback, const std::string& origin) {
    if (!j.contains(key) || j.at(key).is_null()) return fallback;
    const json& v = j.at(key);
    if (!v.is_number() || v.get<double>() < 0.0 || v.get<double>() >= 1.0)
        throw InputError(fmt::format("{}: \"{}\" must be a number in [0, 1), got {}", origin,
                                     key, v.dump()));
    return v.get<double>();
}

template <typename T>
T value_or(const json& j, const char* key, T fallback) {
    if (!j.contains(key) || j.at(key).is_null()) return fallback;
    return j.at(key).get<T>();
}

// Hugging Face config.json, with the defaults transformers' config classes use for keys that
// the file leaves out (GPT2Config, LlamaConfig, MistralConfig, GPTNeoXConfig).
ModelConfig from_hf_config(const json& j, const std::string& origin) {
    ModelConfig m;
    const auto type = j.at("model_type").get<std::string>();
    m.name = value_or<std::string>(j, "_name_or_path", std::filesystem::path(origin).stem().string());
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
        m.activation = parse_activation(value_or<std::string>(j, "activation_function", "gelu_new"), origin);
        m.attn_dropout = rate_or(j, "attn_pdrop", 0.1, origin);
        m.resid_dropout = rate_or(j, "resid_pdrop", 0.1, origin);
        m.embd_dropout = rate_or(j, "embd_pdrop", 0.1, origin);
        m.tied_embeddings = value_or<bool>(j, "tie_word_embeddings", true);
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
        m.activation = parse_activation(value_or<std::string>(j, "hidden_act", "silu"), origin);
        m.attn_dropout = rate_or(j, "attention_dropout", 0.0, origin);
        m.tied_embeddings = value_or<bool>(j, "tie_word_embeddings", false);
        m.attn_bias = value_or<bool>(j, "attention_bias", false);
        m.mlp_bias = value_or<bool>(j, "mlp_bias", false);
        m.rotary_pct = 1.0;
        if (j.contains("head_dim") && !j.at("head_dim").is_null())
            m.head_dim = size_field(j, "head_dim", origin);
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
        m.activation = parse_activation(value_or<std::string>(j, "hidden_act", "gelu"), origin);
        m.rotary_pct = value_or<double>(j, "rotary_pct", 0.25);
        m.attn_dropout = rate_or(j, "attention_dropout", 0.0, origin);
        m.resid_dropout = rate_or(j, "hidden_dropout", 0.0, origin);
        m.embd_dropout = m.resid_dropout;  // GPTNeoXModel.emb_dropout uses hidden_dropout
        m.parallel_residual = value_or<bool>(j, "use_parallel_residual", true);
        m.tied_embeddings = value_or<bool>(j, "tie_word_embeddings", false);
        m.attn_bias = value_or<bool>(j, "attention_bias", true);
        m.mlp_bias = true;
    } else {
        throw InputError(fmt::format(
            "{}: model_type '{}' is not supported; use gpt2, llama, mistral or gpt_neox", origin,
            type));
    }
    return m;
}

Arch parse_arch(const std::string& s, const std::string& origin) {
    if (s == "gpt2") return Arch::gpt2;
    if (s == "llama") return Arch::llama;
    if (s == "gpt_neox") return Arch::gpt_neox;
    throw InputError(fmt::format("{}: arch '{}' is not one of gpt2, llama, gpt_neox", origin, s));
}

// remat's own preset format: every field explicit, nothing defaulted.
ModelConfig from_preset(const json& j, const std::string& origin) {
    ModelConfig m;
    try {
        m.name = j.at("name").get<std::string>();
        m.arch = parse_arch(j.at("arch").get<std::string>(), origin);
        m.n_layers = size_field(j, "n_layers", origin);
        m.hidden = size_field(j, "hidden", origin);
        m.n_heads = size_field(j, "n_heads", origin);
        m.n_kv_heads = size_field(j, "n_kv_heads", origin);
        m.ffn = size_field(j, "ffn", origin);
        m.vocab = size_field(j, "vocab", origin);
        m.context = size_field(j, "context", origin);
        const auto norm = j.at("norm").get<std::string>();
        if (norm != "layernorm" && norm != "rmsnorm")
            throw InputError(fmt::format("{}: norm '{}' must be layernorm or rmsnorm", origin, norm));
        m.norm = norm == "rmsnorm" ? NormKind::rmsnorm : NormKind::layernorm;
        m.activation = parse_activation(j.at("activation").get<std::string>(), origin);
        m.tied_embeddings = j.at("tied_embeddings").get<bool>();
        m.learned_positions = j.at("learned_positions").get<bool>();
        m.rotary_pct = j.at("rotary_pct").get<double>();
        m.parallel_residual = j.at("parallel_residual").get<bool>();
        m.attn_bias = j.at("attn_bias").get<bool>();
        m.mlp_bias = j.at("mlp_bias").get<bool>();
        m.attn_dropout = rate_or(j, "attn_dropout", 0.0, origin);
        m.resid_dropout = rate_or(j, "resid_dropout", 0.0, origin);
        m.embd_dropout = rate_or(j, "embd_dropout", 0.0, origin);
        if (j.contains("head_dim")) m.head_dim = size_field(j, "head_dim", origin);
        m.source = j.value("source", origin);
    } catch (const json::exception& e) {
        throw InputError(fmt::format("{}: not a valid remat model preset: {}", origin, e.what()));
    }
    return m;
}

}  // namespace

std::string_view arch_name(Arch a) {
    switch (a) {
        case Arch::gpt2: return "gpt2";
        case Arch::llama: return "llama";
        case Arch::gpt_neox: return "gpt_neox";
    }
    return "?";
}

std::string_view activation_name(Activation a) {
    switch (a) {
        case Activation::gelu_new: return "gelu_new";
        case Activation::gelu: return "gelu";
        case Activation::gelu_tanh: return "gelu_pytorch_tanh";
        case Activation::silu: return "silu";
    }
    return "?";
}

ModelConfig model_from_json(const json& j, const std::string& origin) {
    if (!j.is_object())
        throw InputError(fmt::format("{}: expected a JSON object with a model config", origin));
    ModelConfig m;
    if (j.value("format", "") == "remat-model") {
        m = from_preset(j, origin);
    } else if (j.contains("model_type")) {
        m = from_hf_config(j, origin);
    } else {
        throw InputError(fmt::format(
            "{}: neither a remat preset (\"format\": \"remat-model\") nor a Hugging Face "
            "config.json (\"model_type\")", origin));
    }
    if (m.head_dim == 0 && m.n_heads > 0) m.head_dim = m.hidden / m.n_heads;
    validate_model(m);
    return m;
}

void validate_model(const ModelConfig& m) {
    const auto& n = m.name;
    if (m.n_layers == 0 || m.hidden == 0 || m.n_heads == 0 || m.n_kv_heads == 0 || m.ffn == 0 ||
        m.vocab == 0 || m.context == 0)
        throw InputError(fmt::format("model '{}': every size must be positive", n));
    if (m.hidden % m.n_heads != 0 && m.head_dim * m.n_heads != m.hidden)
        throw InputError(fmt::format(
            "model '{}': hidden size {} is not divisible by {} heads; pick a head count that "
            "divides it", n, m.hidden, m.n_heads));
    if (m.n_heads % m.n_kv_heads != 0)
        throw InputError(fmt::format(
            "model '{}': {} attention heads are not a multiple of {} key/value heads", n,
            m.n_heads, m.n_kv_heads));
    if (m.rotary_pct < 0.0 || m.rotary_pct > 1.0)
        throw InputError(fmt::format("model '{}': rotary_pct {} must be in [0, 1]", n, m.rotary_pct));
}

std::uint64_t block_parameter_count(const ModelConfig& m) {
    const std::uint64_t H = m.hidden, F = m.ffn, D = m.head_dim;
    const std::uint64_t q = m.n_heads * D, kv = m.n_kv_heads * D;
    const std::uint64_t norm = m.norm == NormKind::layernorm ? 2 * H : H;
    std::uint64_t attn = H * (q + 2 * kv) + q * H;
    if (m.attn_bias) attn += q + 2 * kv + H;
    std::uint64_t mlp = m.activation == Activation::silu ? 3 * H * F : 2 * H * F;
    if (m.mlp_bias) mlp += (m.activation == Activation::silu ? 2 * F : F) + H;
    return 2 * norm + attn + mlp;
}

std::uint64_t embedding_parameter_count(const ModelConfig& m) {
    return m.vocab * m.hidden + (m.learned_positions ? m.context * m.hidden : 0);
}

std::uint64_t final_norm_parameter_count(const ModelConfig& m) {
    return m.norm == NormKind::layernorm ? 2 * m.hidden : m.hidden;
}

std::uint64_t head_parameter_count(const ModelConfig& m) {
    return m.tied_embeddings ? 0 : m.vocab * m.hidden;
}

std::uint64_t parameter_count(const ModelConfig& m) {
    return embedding_parameter_count(m) + m.n_layers * block_parameter_count(m) +
           final_norm_parameter_count(m) + head_parameter_count(m);
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
    if (std::filesystem::exists(name_or_path))
        return model_from_json(read_json_file(name_or_path), name_or_path);
    throw_unknown("model", name_or_path, model_preset_names());
}

}  // namespace remat
