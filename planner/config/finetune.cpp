#include "planner/config/finetune.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>

#include "planner/config/checked.hpp"
#include "planner/config/error.hpp"

namespace remat {

std::vector<BlockLinear> block_linears(const ModelConfig& m) {
    const std::uint64_t H = m.hidden, F = m.ffn, D = m.head_dim;
    const std::uint64_t q = checked_mul(m.n_heads, D), kv = checked_mul(m.n_kv_heads, D);
    const std::uint64_t qkv = checked_add(q, checked_mul(2, kv));
    switch (m.arch) {
        case Arch::gpt2:  // Conv1D modules, which PEFT adapts as linears
            return {{"c_attn", H, checked_mul(3, H)},
                    {"c_proj", H, H},
                    {"c_fc", H, F},
                    {"c_proj", F, H}};
        case Arch::gpt_neox:
            return {{"query_key_value", H, checked_mul(3, H)},
                    {"dense", H, H},
                    {"dense_h_to_4h", H, F},
                    {"dense_4h_to_h", F, H}};
        case Arch::falcon:
            return {{"query_key_value", H, qkv},
                    {"dense", q, H},
                    {"dense_h_to_4h", H, F},
                    {"dense_4h_to_h", F, H}};
        default:
            break;
    }
    // transformers' Llama-style decoders (planner/graph/hf_decoder.cpp, hf_moe.cpp).
    std::vector<BlockLinear> out;
    if (m.fused_qkv)
        out.push_back({"qkv_proj", H, qkv});
    else
        out.insert(out.end(), {{"q_proj", H, q}, {"k_proj", H, kv}, {"v_proj", H, kv}});
    out.push_back({"o_proj", q, H});
    if (m.n_experts > 0) {
        out.push_back({"gate", H, m.n_experts});  // the router
        const bool mixtral = m.arch == Arch::mixtral;
        const std::uint64_t E = m.n_experts, EF = m.expert_ffn;
        out.push_back({mixtral ? "w1" : "gate_proj", H, EF, E});
        out.push_back({mixtral ? "w3" : "up_proj", H, EF, E});
        out.push_back({mixtral ? "w2" : "down_proj", EF, H, E});
        if (const std::uint64_t SF = m.shared_expert_ffn; SF > 0) {
            out.insert(out.end(), {{"gate_proj", H, SF}, {"up_proj", H, SF}, {"down_proj", SF, H}});
            out.push_back({"shared_expert_gate", H, 1});
        }
    } else if (m.fused_gate_up) {
        out.insert(out.end(), {{"gate_up_proj", H, checked_mul(2, F)}, {"down_proj", F, H}});
    } else {
        out.insert(out.end(), {{"gate_proj", H, F}, {"up_proj", H, F}, {"down_proj", F, H}});
    }
    return out;
}

std::vector<std::string> peft_default_targets(const ModelConfig& m) {
    // peft/utils/constants.py, TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING (mistral's
    // entry is llama's too).
    switch (m.arch) {
        case Arch::gpt2:
            return {"c_attn"};
        case Arch::gpt_neox:
        case Arch::falcon:
            return {"query_key_value"};
        case Arch::llama:
        case Arch::qwen2:
        case Arch::gemma:
        case Arch::gemma2:
        case Arch::mixtral:
            return {"q_proj", "v_proj"};
        case Arch::phi3:
        case Arch::qwen2_moe:
            return {};
    }
    return {};
}

std::string_view module_name(std::string_view path) {
    const std::size_t dot = path.rfind('.');
    return dot == std::string_view::npos ? path : path.substr(dot + 1);
}

LoraOptions resolve_lora(const ModelConfig& m, LoraOptions lora) {
    const std::vector<BlockLinear> linears = block_linears(m);
    std::vector<std::string> names;
    for (const BlockLinear& l : linears)
        if (std::find(names.begin(), names.end(), l.name) == names.end()) names.push_back(l.name);
    if (lora.rank == 0)
        throw InputError(fmt::format("{} 0: LoRA needs a rank of at least 1 (PEFT's default is 8)",
                                     named(Input::lora_rank)));
    if (!(lora.dropout >= 0 && lora.dropout < 1))
        throw InputError(fmt::format("{} {}: a probability in [0, 1), e.g. 0.05",
                                     named(Input::lora_dropout), lora.dropout));
    if (lora.targets.empty()) {
        lora.targets = peft_default_targets(m);
        if (lora.targets.empty())
            throw InputError(fmt::format(
                "{}: PEFT has no default target modules for model '{}' ({}); name them, e.g. {}, "
                "or give all-linear",
                named(Input::lora_targets), m.name, arch_name(m.arch),
                fmt::join(names.begin(), names.begin() + std::min<std::size_t>(2, names.size()),
                          ",")));
        return lora;
    }
    if (lora.targets.size() == 1 && lora.targets[0] == "all-linear") {
        lora.targets = names;
        return lora;
    }
    for (const std::string& t : lora.targets)
        if (std::find(names.begin(), names.end(), t) == names.end())
            throw InputError(fmt::format(
                "{} {}: model '{}' has no block linear of that name; its linears are {} (or give "
                "all-linear)",
                named(Input::lora_targets), quote(t), m.name, fmt::join(names, ",")));
    return lora;
}

bool lora_targets(const LoraOptions& lora, std::string_view linear_path) {
    const std::string_view name = module_name(linear_path);
    return std::find(lora.targets.begin(), lora.targets.end(), name) != lora.targets.end();
}

std::uint64_t lora_block_params(const ModelConfig& m, const LoraOptions& lora) {
    std::uint64_t total = 0;
    for (const BlockLinear& l : block_linears(m))
        if (lora_targets(lora, l.name))
            add_to(total, checked_mul(l.count, lora.rank, checked_add(l.in, l.out)));
    return total;
}

std::uint64_t largest_lora_tensor(const ModelConfig& m, const LoraOptions& lora) {
    std::uint64_t largest = 0;
    for (const BlockLinear& l : block_linears(m))
        if (lora_targets(lora, l.name))
            largest = std::max(largest, checked_mul(lora.rank, std::max(l.in, l.out)));
    return largest;
}

ParameterCounts peft_parameter_counts(const ModelConfig& m, const RunOptions& o) {
    const std::uint64_t base = parameter_count(m);
    if (o.train == Training::full) return {base, base};
    if (o.train == Training::frozen) return {0, base};
    const std::uint64_t adapters = checked_mul(m.n_layers, lora_block_params(m, o.lora));
    return {adapters, checked_add(base, adapters)};
}

DType base_float_dtype(const RunOptions& o) {
    if (o.train != Training::full) switch (o.base_dtype) {
            case BaseDType::fp32:
                return DType::f32;
            case BaseDType::bf16:
                return DType::bf16;
            case BaseDType::fp16:
                return DType::f16;
            case BaseDType::int8:
            case BaseDType::nf4:
                break;
        }
    return o.precision == Precision::bf16 ? DType::bf16 : DType::f32;
}

DType reference_dtype(const RunOptions& o) {
    if (!o.ref_dtype) return base_float_dtype(o);
    switch (*o.ref_dtype) {
        case BaseDType::bf16:
            return DType::bf16;
        case BaseDType::fp16:
            return DType::f16;
        default:
            return DType::f32;
    }
}

std::uint64_t stored_weight_bytes(std::uint64_t in, std::uint64_t out, BaseDType base,
                                  bool double_quant) {
    const std::uint64_t n = checked_mul(in, out);
    switch (base) {
        case BaseDType::fp32:
            return checked_mul(4, n);
        case BaseDType::bf16:
        case BaseDType::fp16:
            return checked_mul(2, n);
        case BaseDType::int8:
            // bitsandbytes/nn/modules.py Int8Params._quantize: CB (int8, out x in) and SCB,
            // one fp32 absmax per output row (functional.int8_vectorwise_quant).
            return checked_add(n, checked_mul(4, out));
        case BaseDType::nf4: {
            // bitsandbytes/functional.py quantize_4bit: (n + 1) / 2 packed bytes, one absmax
            // per blocksize-64 block, and the 16-entry fp32 NF4 code (get_4bit_type). With
            // compress_statistics (double quantization) the absmax are quantize_blockwise'd to
            // uint8 in blocks of 256, with fp32 absmax, a copy of the 256-entry fp32 dynamic
            // code and the fp32 offset; without it they stay fp32.
            const std::uint64_t blocks = ceil_div(n, 64);
            std::uint64_t bytes = checked_add(ceil_div(n, 2), 16 * 4);
            if (double_quant)
                return checked_add(bytes, blocks, checked_mul(4, ceil_div(blocks, 256)),
                                   256 * 4 + 4);
            return checked_add(bytes, checked_mul(4, blocks));
        }
    }
    return 0;
}

std::uint64_t frozen_block_bytes(const ModelConfig& m, const RunOptions& o) {
    const std::uint64_t float_bytes = dtype_bytes(base_float_dtype(o));
    std::uint64_t weights = 0, stored = 0;
    for (const BlockLinear& l : block_linears(m)) {
        const std::uint64_t n = checked_mul(l.count, l.in, l.out);
        add_to(weights, n);
        add_to(stored, quantized(o.base_dtype)
                           ? checked_mul(l.count, stored_weight_bytes(l.in, l.out, o.base_dtype,
                                                                      o.lora.double_quant))
                           : checked_mul(float_bytes, n));
    }
    // Biases and norms stay floats.
    return checked_add(stored, checked_mul(float_bytes, block_parameter_count(m) - weights));
}

std::uint64_t ParamTensor::numel() const { return checked_mul(rows, cols); }

std::vector<ParamTensor> trainable_tensors(const ModelConfig& m, const RunOptions& o) {
    using K = ParamTensor::Kind;
    std::vector<ParamTensor> out;
    const std::uint64_t L = m.n_layers;
    if (o.train == Training::frozen) return out;
    if (o.train == Training::lora) {
        for (const BlockLinear& l : block_linears(m))
            if (lora_targets(o.lora, l.name)) {
                const std::uint64_t n = checked_mul(l.count, L);
                out.push_back({K::matrix, o.lora.rank, l.in, n});
                out.push_back({K::matrix, l.out, o.lora.rank, n});
            }
        return out;
    }
    out.push_back({K::matrix, m.vocab, m.hidden, 1});
    if (m.learned_positions) out.push_back({K::matrix, m.context, m.hidden, 1});
    std::uint64_t weights = 0;
    for (const BlockLinear& l : block_linears(m)) {
        out.push_back({K::matrix, l.out, l.in, checked_mul(l.count, L)});
        add_to(weights, checked_mul(l.count, l.in, l.out));
    }
    out.push_back({K::vectors, block_parameter_count(m) - weights, 1, L});
    out.push_back({K::vectors, final_norm_parameter_count(m), 1, 1});
    if (!m.tied_embeddings) out.push_back({K::matrix, m.vocab, m.hidden, 1});
    return out;
}

}  // namespace remat
