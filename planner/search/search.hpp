// Search over micro-batch sizes: the largest that fits per strategy. Exact: the peak at the
// answer b fits, the peak at b + 1 does not (peaks grow with b), up to max_search_micro_batch.
// A micro-batch whose sizes cannot be counted (SizeOverflow past 2^63) does not fit.
//
//   Question q{model, options, gpu, ctx};
//   Evaluation e = evaluate(q, spec);               // chain + plan + simulation at q.options
//   MaxBatch m = max_micro_batch(q, spec);
//
// The search's steps ask only whether a plan fits, from the stage-level accounting
// (planner/chain_costs) where that answers evaluate()'s question exactly; the op-level replay
// runs at the answer.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "planner/chain/chain.hpp"
#include "planner/simulate/simulate.hpp"
#include "planner/strategy/strategy.hpp"

namespace remat {

struct Question {
    ModelConfig model;
    RunOptions options;  // seq resolved
    GpuSpec gpu;
    PlanContext context;  // gpu pointer is set by evaluate()
};

struct Evaluation {
    Chain chain;
    Plan plan;
    SimResult result;
    bool fits = false;             // on the GPU, and on the host when a capacity is given
    std::uint64_t host_bytes = 0;  // offloaded states of one rank
};

// Ranks per node: 8 GPUs a node (a DGX/HGX layout), or fewer when the world is smaller.
std::uint64_t ranks_per_node(const Question& q);
// What the offloaded states of a node's ranks take, and whether they fit --host-memory.
std::uint64_t host_bytes_per_node(const Question& q, std::uint64_t host_bytes_per_rank);
bool host_fits(const Question& q, std::uint64_t host_bytes_per_rank);

Evaluation evaluate(const Question& q, const StrategySpec& spec);

// The largest micro-batch any search tries (2^24 sequences).
inline constexpr std::uint64_t max_search_micro_batch = std::uint64_t{1} << 24;

struct MaxBatch {
    StrategySpec strategy;
    std::uint64_t max_micro_batch = 0;  // 0: even one sequence does not fit
    bool search_limit_reached = false;  // max_search_micro_batch fits: the answer is at least that
    std::uint64_t peak_bytes = 0;       // at max_micro_batch (at 1 when it is 0)
    double tokens_per_s = 0;            // at max_micro_batch; 0 when nothing fits
    std::uint64_t evaluations = 0;      // fits tests and plans replayed by the search
};

MaxBatch max_micro_batch(const Question& q, const StrategySpec& spec);

// Whether spec's plan at micro_batch stays within limit_bytes (peak, reserve included; plans
// budgeted at it): evaluate()'s question where limit_bytes is its capacity and budget, answered
// without the op-level replay.
bool plan_fits(const Question& q, const StrategySpec& spec, std::uint64_t micro_batch,
               std::uint64_t limit_bytes);

// The largest b in [1, limit] with fits(b), fits shrinking as b grows: doubling, then bisection.
// A size too large to count (SizeOverflow) at b > 1 does not fit; at b = 1 it is rethrown.
// 0: b = 1 does not fit. limit_reached: limit itself fits.
std::uint64_t largest_fitting(const std::function<bool(std::uint64_t)>& fits, std::uint64_t limit,
                              bool& limit_reached);

}  // namespace remat
