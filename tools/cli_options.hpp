// The options every question shares, registered on each subcommand so that they are accepted
// after it (`remat plan --model gpt2 --json`), and turned into a planner Question.
#pragma once
#include <CLI/CLI.hpp>
#include <optional>
#include <string>
#include <vector>

#include "planner/config/error.hpp"
#include "planner/search/search.hpp"

namespace remat::cli {

// The flag that sets each input library messages name (planner/config/error.hpp): the CLI's
// names for them, as InputNames.
std::string_view flag_of(Input input);
// A library message as the CLI prints it: each input it names spelled as its flag.
std::string flagged(const InputError& e);
std::string flagged(std::string_view text);

struct CommonArgs {
    std::string model;
    std::string gpu = "h100-80gb";
    std::string gpu_memory;
    std::int64_t micro_batch = 1;
    std::optional<std::int64_t> seq;  // default: the model's context length
    std::string precision = "bf16-mixed";
    std::string sharding = "none";
    std::int64_t world_size = 1;
    std::int64_t grad_accumulation = 1;
    std::string optimizer = "adamw";
    std::string optimizer_impl = "foreach";
    std::string torch = "cuda";
    std::string profile = "sdpa";
    std::string attention = "flash";
    std::optional<double> moe_capacity_factor;
    std::string memory_budget;
    std::string reserve_context;
    std::string reserve_workspace;
    std::optional<double> fragmentation;
    std::optional<std::int64_t> memory_slots;
    std::string calibration;  // a `remat calibrate` file: measured rates for the step-time model
    std::string network;      // a network preset (models/networks); default: the GPU's usual one
    std::optional<std::int64_t> gpus_per_node;
    bool offload_checkpoints = false;
    bool json = false;
    // Fine-tuning (docs/finetune.md): the LoRA options are accepted with --train lora only.
    std::string train = "full";
    std::optional<std::int64_t> lora_rank;
    std::optional<double> lora_alpha;
    std::optional<double> lora_dropout;
    std::string lora_targets;
    std::string base_dtype;
    bool no_double_quant = false;
    std::string recipe = "sft";
    std::string ref_logprobs = "model";
    std::string ref_dtype;
    std::string ref_model;
    bool offload_optimizer = false;
    bool offload_params = false;
    std::string host_memory;
};

// Integer options are decimal, with no sign, no hex and no clamping: CLI11 alone reads "0x10"
// as 16 and clamps 99999999999999999999 to 2^63 - 1. Attach with ->check(decimal()).
CLI::Validator decimal();

void add_common_options(CLI::App& app, CommonArgs& args);
// Validates every value; throws InputError naming the option (as its flag) and the fix.
Question make_question(const CommonArgs& args);
// The arguments after `remat plan` that reproduce one configuration of this question: the
// question's own options, with the micro-batch, accumulation, strategy and offload given.
std::vector<std::string> plan_args(const CommonArgs& args, const Question& q,
                                   std::uint64_t micro_batch, std::uint64_t grad_accumulation,
                                   const std::string& strategy, bool offload);

}  // namespace remat::cli
