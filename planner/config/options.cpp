#include "planner/config/options.hpp"

#include <fmt/format.h>

#include <array>
#include <cctype>
#include <utility>

#include "planner/config/error.hpp"

namespace remat {
namespace {

template <typename E, std::size_t N>
using Names = std::array<std::pair<E, std::string_view>, N>;

constexpr Names<Precision, 4> precisions{{{Precision::fp32, "fp32"},
                                          {Precision::bf16_mixed, "bf16-mixed"},
                                          {Precision::fp16_mixed, "fp16-mixed"},
                                          {Precision::bf16, "bf16"}}};
constexpr Names<Profile, 5> profiles{{{Profile::hf_eager, "hf-eager"},
                                      {Profile::sdpa, "sdpa"},
                                      {Profile::megatron, "megatron"},
                                      {Profile::remat, "remat"},
                                      {Profile::remat_cuda, "remat-cuda"}}};
constexpr Names<Sharding, 8> shardings{{{Sharding::none, "none"},
                                        {Sharding::fsdp, "fsdp"},
                                        {Sharding::fsdp_grad_op, "fsdp-grad-op"},
                                        {Sharding::zero1, "zero1"},
                                        {Sharding::zero2, "zero2"},
                                        {Sharding::zero3, "zero3"},
                                        {Sharding::megatron, "megatron"},
                                        {Sharding::megatron_distopt, "megatron-distopt"}}};
constexpr Names<Optimizer, 4> optimizers{{{Optimizer::adamw, "adamw"},
                                          {Optimizer::sgd, "sgd"},
                                          {Optimizer::adamw_8bit, "adamw-8bit"},
                                          {Optimizer::adafactor, "adafactor"}}};
constexpr Names<Attention, 2> attentions{
    {{Attention::flash, "flash"}, {Attention::eager, "eager"}}};
constexpr Names<OptimizerImpl, 3> optimizer_impls{{{OptimizerImpl::foreach, "foreach"},
                                                   {OptimizerImpl::for_loop, "for-loop"},
                                                   {OptimizerImpl::fused, "fused"}}};
constexpr Names<TorchFlavor, 2> torches{
    {{TorchFlavor::cuda, "cuda"}, {TorchFlavor::cpu_1_13, "cpu-1.13"}}};

constexpr Names<Training, 3> trainings{
    {{Training::full, "full"}, {Training::lora, "lora"}, {Training::frozen, "frozen"}}};
constexpr Names<BaseDType, 5> base_dtypes{{{BaseDType::fp32, "fp32"},
                                           {BaseDType::bf16, "bf16"},
                                           {BaseDType::fp16, "fp16"},
                                           {BaseDType::int8, "int8"},
                                           {BaseDType::nf4, "nf4"}}};

constexpr Names<Recipe, 2> recipes{{{Recipe::sft, "sft"}, {Recipe::dpo, "dpo"}}};
constexpr Names<RefLogprobs, 2> ref_logprob_sources{
    {{RefLogprobs::model, "model"}, {RefLogprobs::precomputed, "precomputed"}}};

template <typename E, std::size_t N>
std::string_view name_of(const Names<E, N>& names, E e) {
    for (const auto& [value, name] : names)
        if (value == e) return name;
    return "?";
}

template <typename E, std::size_t N>
std::vector<std::string> all_names(const Names<E, N>& names) {
    std::vector<std::string> out;
    for (const auto& entry : names) out.emplace_back(entry.second);
    return out;
}

// Names as people type them: any case, '_' for '-' (FSDP's FULL_SHARD, bf16_mixed).
std::string normalized(const std::string& s) {
    std::string out;
    for (char c : s)
        out += c == '_' ? '-' : static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return out;
}

template <typename E, std::size_t N, std::size_t M = 0>
E parse_name(const Names<E, N>& names, const std::string& s, const char* what,
             const Names<E, M>& aliases = {}) {
    const std::string n = normalized(s);
    for (const auto& [value, name] : names)
        if (name == n) return value;
    for (const auto& [value, name] : aliases)
        if (name == n) return value;
    throw_unknown(what, s, all_names(names));
}

// Other names for the same configuration: DDP is `none` (replicated states), FSDP's sharding
// strategies by their PyTorch names, DeepSpeed's stages as written in its docs.
constexpr Names<Sharding, 7> sharding_aliases{{{Sharding::none, "ddp"},
                                               {Sharding::none, "no-shard"},
                                               {Sharding::fsdp, "full-shard"},
                                               {Sharding::fsdp_grad_op, "shard-grad-op"},
                                               {Sharding::zero1, "zero-1"},
                                               {Sharding::zero2, "zero-2"},
                                               {Sharding::zero3, "zero-3"}}};
constexpr Names<Precision, 2> precision_aliases{
    {{Precision::fp32, "float32"}, {Precision::bf16, "bfloat16"}}};

}  // namespace

bool torch_data_parallel(Sharding s) {
    return s == Sharding::none || s == Sharding::fsdp || s == Sharding::fsdp_grad_op;
}
bool runtime_profile(Profile p) { return p == Profile::remat || p == Profile::remat_cuda; }
bool hf_profile(Profile p) { return p == Profile::hf_eager || p == Profile::sdpa; }

std::string_view precision_name(Precision p) { return name_of(precisions, p); }
std::string_view profile_name(Profile p) { return name_of(profiles, p); }
std::string_view sharding_name(Sharding s) { return name_of(shardings, s); }
std::string_view optimizer_name(Optimizer o) { return name_of(optimizers, o); }
std::string_view attention_name(Attention a) { return name_of(attentions, a); }
std::string_view optimizer_impl_name(OptimizerImpl i) { return name_of(optimizer_impls, i); }
std::string_view torch_name(TorchFlavor t) { return name_of(torches, t); }
std::string_view training_name(Training t) { return name_of(trainings, t); }
std::string_view base_dtype_name(BaseDType b) { return name_of(base_dtypes, b); }
std::string_view recipe_name(Recipe r) { return name_of(recipes, r); }
std::string_view ref_logprobs_name(RefLogprobs r) { return name_of(ref_logprob_sources, r); }
bool quantized(BaseDType b) { return b == BaseDType::int8 || b == BaseDType::nf4; }
Precision parse_precision(const std::string& s) {
    // "fp16" alone is ambiguous: Hugging Face's --fp16 is autocast (fp16-mixed); remat models no
    // pure-fp16 training (it needs loss scaling and fp32 master weights anyway).
    if (const std::string n = normalized(s); n == "fp16" || n == "float16")
        throw InputError(fmt::format(
            "precision {}: use fp16-mixed (fp32 weights with fp16 autocast, what Hugging "
            "Face's --fp16 and torch.autocast(dtype=torch.float16) run)",
            quote(s)));
    return parse_name(precisions, s, "precision", precision_aliases);
}
Profile parse_profile(const std::string& s) { return parse_name(profiles, s, "profile"); }
Sharding parse_sharding(const std::string& s) {
    return parse_name(shardings, s, "sharding", sharding_aliases);
}
Optimizer parse_optimizer(const std::string& s) { return parse_name(optimizers, s, "optimizer"); }
Attention parse_attention(const std::string& s) { return parse_name(attentions, s, "attention"); }
OptimizerImpl parse_optimizer_impl(const std::string& s) {
    return parse_name(optimizer_impls, s, "optimizer implementation");
}
TorchFlavor parse_torch(const std::string& s) { return parse_name(torches, s, "torch"); }
Recipe parse_recipe(const std::string& s) { return parse_name(recipes, s, "recipe"); }
RefLogprobs parse_ref_logprobs(const std::string& s) {
    return parse_name(ref_logprob_sources, s, "reference log-probabilities");
}
Training parse_training(const std::string& s) { return parse_name(trainings, s, "training"); }
BaseDType parse_base_dtype(const std::string& s) {
    return parse_name(base_dtypes, s, "base dtype");
}
std::vector<std::string> precision_names() { return all_names(precisions); }
std::vector<std::string> profile_names() { return all_names(profiles); }
std::vector<std::string> sharding_names() { return all_names(shardings); }
std::vector<std::string> optimizer_names() { return all_names(optimizers); }
std::vector<std::string> attention_names() { return all_names(attentions); }

}  // namespace remat
