// The fastest configuration that fits: over micro-batch sizes, every strategy (optimal
// included) and, where the GPU preset has a host link, with and without checkpoint offload,
// the one with the most tokens/s per GPU (the seeds' Total_Throughput ∝ BatchSize / StepTime).
// With a target global batch, each micro-batch b runs N / (b·W) micro-steps of gradient
// accumulation, and only micro-batches that divide N / W are candidates.
//
//   Recommendation r = recommend(question, {.global_batch = 512});
//   r.ranked[0];   // the best; ranked holds every candidate that fits, best first
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "planner/search/search.hpp"

namespace remat {

struct Candidate {
    StrategySpec strategy;
    bool offload = false;
    std::uint64_t micro_batch = 0;
    std::uint64_t grad_accumulation = 1;
    std::uint64_t peak_bytes = 0;
    double step_time_s = 0;      // per optimizer step
    double tokens_per_s = 0;     // per GPU
    double recompute_share = 0;  // recompute FLOPs / all FLOPs of the step
    Schedule schedule;
    // Other strategies that produced the very same schedule at this micro-batch.
    std::vector<std::string> same_as;
};

struct RecommendOptions {
    std::optional<std::uint64_t> global_batch;  // sequences per optimizer step, all ranks
    // Called before each strategy's search: (done, total).
    std::function<void(std::size_t, std::size_t)> progress;
};

struct Recommendation {
    std::vector<Candidate> ranked;   // every distinct configuration that fits, most tokens/s first
    std::size_t evaluated = 0;       // configurations planned and replayed
    std::uint64_t budget_bytes = 0;  // what peak_bytes had to stay within
};

// The micro-batches tried: every size up to 8, then steps of about 25%, and each strategy's
// largest that fits; with a global batch, the divisors of N / W instead. None above the largest
// at which any schedule fits (at most max_search_micro_batch), so the work is bounded whatever
// the memory or the batch. A micro-batch too large to count (SizeOverflow) does not fit.
Recommendation recommend(const Question& q, const RecommendOptions& options);

}  // namespace remat
