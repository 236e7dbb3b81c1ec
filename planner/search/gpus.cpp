#include "planner/search/gpus.hpp"

#include <fmt/format.h>

#include "planner/config/error.hpp"

namespace remat {

std::vector<std::uint64_t> cluster_world_sizes(std::uint64_t max_gpus) {
    std::vector<std::uint64_t> out;
    for (std::uint64_t w : {1, 2, 4, 8})
        if (w <= max_gpus) out.push_back(w);
    for (std::uint64_t w = 16; w <= max_gpus; w += 8) out.push_back(w);
    return out;
}

std::vector<Sharding> shardings_to_try(const Question& q, std::uint64_t W,
                                       std::optional<Sharding> only) {
    std::vector<Sharding> candidates;
    if (only)
        candidates = {*only};
    else if (W == 1)
        candidates = {Sharding::none};
    else
        candidates = {Sharding::none,  Sharding::fsdp,  Sharding::fsdp_grad_op,
                      Sharding::zero1, Sharding::zero2, Sharding::zero3};
    std::vector<Sharding> out;
    for (Sharding s : candidates) {
        RunOptions o = q.options;
        o.sharding = s;
        o.world_size = W;
        try {
            build_chain(q.model, o);  // the question's own checks: LoRA, QLoRA, DPO
            out.push_back(s);
        } catch (const InputError&) {
            if (only) throw;
        }
    }
    return out;
}

GpuCountSweep gpus_needed(const Question& q, std::uint64_t max_gpus, std::optional<Sharding> only,
                          const RecommendOptions& options) {
    if (max_gpus == 0)
        throw InputError("the GPU count 0: give at least 1 (the largest world size to try)");
    GpuCountSweep out;
    struct Job {
        std::uint64_t W;
        Sharding s;
    };
    std::vector<Job> jobs;
    for (std::uint64_t W : cluster_world_sizes(max_gpus)) {
        if (options.global_batch && *options.global_batch % W != 0) continue;
        out.rows.push_back({W, {}, std::nullopt});
        for (Sharding s : shardings_to_try(q, W, only)) {
            jobs.push_back({W, s});
            out.rows.back().layouts.push_back({s, std::nullopt});
        }
    }
    std::size_t done = 0;
    for (GpuCountRow& row : out.rows) {
        for (std::size_t k = 0; k < row.layouts.size(); ++k) {
            if (options.progress) options.progress(done++, jobs.size());
            Question t = q;
            t.options.world_size = row.world_size;
            t.options.sharding = row.layouts[k].sharding;
            RecommendOptions inner;
            inner.global_batch = options.global_batch;
            const Recommendation r = recommend(t, inner);
            out.evaluated += r.evaluated;
            if (r.ranked.empty()) continue;
            row.layouts[k].best = r.ranked.front();
            const Candidate* best = row.best_candidate();
            if (!best || r.ranked.front().tokens_per_s > best->tokens_per_s) row.best = k;
        }
        if (row.best && !out.fewest) out.fewest = row.world_size;
    }
    if (options.progress) options.progress(jobs.size(), jobs.size());
    return out;
}

}  // namespace remat
