// How many GPUs a question needs: for each world size a cluster offers (1, 2, 4, 8, then
// multiples of 8) up to a maximum, the fastest layout that fits, sharding x strategy x
// micro-batch (each sharding by recommend()), and the fewest GPUs on which anything fits.
//
//   GpuCountSweep s = gpus_needed(question, 64, {});
//   s.fewest;          // 4: the smallest world size with a layout that fits
//   s.rows[k].best;    // the fastest layout at rows[k].world_size, if any fits
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "planner/search/recommend.hpp"

namespace remat {

struct ShardingBest {
    Sharding sharding = Sharding::none;
    std::optional<Candidate> best;  // none fits
};

struct GpuCountRow {
    std::uint64_t world_size = 1;
    std::vector<ShardingBest> layouts;  // every sharding the question allows at this size
    // Index into layouts of the most tokens/s per GPU that fits; none when nothing fits.
    std::optional<std::size_t> best;
    const Candidate* best_candidate() const { return best ? &*layouts[*best].best : nullptr; }
    Sharding best_sharding() const { return best ? layouts[*best].sharding : Sharding::none; }
};

struct GpuCountSweep {
    std::vector<GpuCountRow> rows;
    std::optional<std::uint64_t> fewest;  // the smallest world size where a layout fits
    std::size_t evaluated = 0;            // configurations planned and replayed
};

// 1, 2, 4, 8, 16, 24, ... up to max_gpus (which must be at least 1).
std::vector<std::uint64_t> cluster_world_sizes(std::uint64_t max_gpus);

// The data-parallel shardings tried at world size W: DDP alone on one GPU, else DDP, FSDP's
// FULL_SHARD and SHARD_GRAD_OP, and ZeRO-1/2/3 (Megatron's need tensor parallelism, which remat
// does not plan). Those the question refuses (LoRA under ZeRO, QLoRA under FSDP, ...) are left
// out. `only`: the one sharding the user asked for.
std::vector<Sharding> shardings_to_try(const Question& q, std::uint64_t W,
                                       std::optional<Sharding> only);

// With a global batch, only world sizes that divide it. `progress(done, total)` per
// (world size, sharding).
GpuCountSweep gpus_needed(const Question& q, std::uint64_t max_gpus, std::optional<Sharding> only,
                          const RecommendOptions& options);

}  // namespace remat
