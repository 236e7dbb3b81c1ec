// Search over micro-batch sizes: the largest that fits per strategy. Exact: the peak at the
// answer b fits, the peak at b + 1 does not (peaks grow with b).
//
//   Question q{model, options, gpu, ctx};
//   Evaluation e = evaluate(q, spec);               // chain + plan + simulation at q.options
//   MaxBatch m = max_micro_batch(q, spec);
#pragma once
#include <cstdint>
#include <vector>

#include "planner/chain.hpp"
#include "planner/simulate.hpp"
#include "planner/strategy.hpp"

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
    bool fits = false;
};

Evaluation evaluate(const Question& q, const StrategySpec& spec);

struct MaxBatch {
    StrategySpec strategy;
    std::uint64_t max_micro_batch = 0;  // 0: even one sequence does not fit
    std::uint64_t peak_bytes = 0;       // at max_micro_batch (at 1 when it is 0)
    double tokens_per_s = 0;            // at max_micro_batch; 0 when nothing fits
    std::uint64_t evaluations = 0;      // simulations run by the search
};

MaxBatch max_micro_batch(const Question& q, const StrategySpec& spec);

}  // namespace remat
