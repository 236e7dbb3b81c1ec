// Checkpointing strategies: each turns a Chain into a Plan (what every stage keeps, and the
// explicit Schedule). Embedding, final norm and head are never checkpointed by these.
//
//   StrategySpec s = parse_strategy("every-2");     // throws InputError with the valid range
//   Plan p = make_plan(chain, s, gpu, reserve, budget_bytes);
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "planner/chain/chain.hpp"
#include "planner/config/schedule.hpp"
#include "planner/simulate/gpu.hpp"
#include "planner/simulate/memory.hpp"
#include "planner/simulate/step_time.hpp"

namespace remat {

enum class StrategyKind {
    none,
    full,
    every_n,
    segments_k,
    sqrt,
    greedy_budget,
    selective,
    optimal
};

struct StrategySpec {
    StrategyKind kind = StrategyKind::none;
    std::uint64_t n = 0;  // N of every-N, K of segments-K
    std::string name() const;
};

StrategySpec parse_strategy(const std::string& text);
// "all" or a comma-separated list; every name validated.
std::vector<StrategySpec> parse_strategy_list(const std::string& text);
std::vector<StrategySpec> all_strategies();
// Range checks that need the model (more segments than blocks, ...).
bool strategy_applies(const StrategySpec& s,
                      std::uint64_t n_blocks);  // every-N, segments-K: count <= blocks
void validate_strategy(const StrategySpec& s, std::uint64_t n_blocks);
// A --strategies list for a model of n_blocks: "all" is every strategy that applies to it
// (every-4 and segments-4 need 4 blocks); a strategy named on its own must apply.
std::vector<StrategySpec> strategies_for(const std::string& text, std::uint64_t n_blocks);

struct PlanContext {
    const GpuSpec* gpu = nullptr;
    Reserve reserve;
    std::uint64_t capacity_bytes = 0;  // the GPU's memory (after --gpu-memory)
    std::optional<std::uint64_t>
        budget_bytes;  // --memory-budget; greedy's and optimal's default is capacity
    bool offload_checkpoints = false;  // heuristics: every checkpoint to host; optimal: may offload
    // Host memory per node (--host-memory): offloaded states of its ranks must fit.
    std::optional<std::uint64_t> host_capacity_bytes;
    std::uint32_t memory_slots = ~std::uint32_t{0};  // optimal's resolution (auto_memory_slots)
    StepTimeModel time_model;  // the preset's by default; --calibration sets measured rates
    // optimal: called as the DP's subproblems are solved (done, total); the CLI shows it.
    std::function<void(std::size_t, std::size_t)> progress;
};

// The largest allocator peak whose peak_bytes (allocator peak + reserve) stays within budget.
std::uint64_t allocator_budget(const Reserve& r, std::uint64_t budget_bytes);

Plan make_plan(const Chain& chain, const StrategySpec& spec, const PlanContext& ctx);

}  // namespace remat
