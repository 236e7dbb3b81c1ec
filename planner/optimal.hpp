// The optimal planner: a dynamic program over the heterogeneous chain (embedding, blocks, final
// norm, head + loss) that finds, for every memory budget, the fastest schedule of its family.
//
// The family (Rotor's, Beaumont et al. 2019, extended with selective and offload): to run the
// backward of stages s..t with x_s live, either
//   A  F_all(s), then s+1..t, then B(s)
//   S  F_sel(s), then s+1..t, then R_sel(s), B(s)          (stages with an attention core)
//   C  F_ck(s) F_none(s+1..s'-1), then s'..t with x_s kept, then s..s'-1 again from x_s
//   C^ as C, with x_s offloaded to host memory in between (when offload is enabled)
// The first pass is the same recursion with first forwards. Each subproblem keeps its exact
// Pareto frontier of (bytes needed, seconds); runs of identical blocks share one frontier per
// length, shifted by the progress-dependent memory. See docs/optimal.md.
//
//   OptimalPlanner dp(costs, cap_bytes, {});
//   auto s = dp.fastest_within(allocator_budget);   // nullopt when nothing fits
#pragma once
#include <cstdint>
#include <optional>
#include <unordered_map>
#include <vector>

#include "planner/chain_costs.hpp"
#include "planner/schedule.hpp"

namespace remat {

// Default resolution: 1024 slots, 256 on chains of more than 128 stages.
inline constexpr std::uint32_t auto_memory_slots = ~std::uint32_t{0};

struct OptimalOptions {
    // Frontier points whose memory falls in the same slot of cap / memory_slots bytes are thinned
    // to the fastest; 0 keeps every point and tries every split (exact; slower on long chains).
    std::uint32_t memory_slots = auto_memory_slots;
    bool offload = false;  // let the DP offload checkpoints to host memory
    // The span the slots divide (bytes above base); 0: the cap. Fixing it per question keeps
    // the same grid whatever the budget.
    std::uint64_t slot_span = 0;
};

struct FrontierPoint {
    std::uint64_t allocator_peak_bytes = 0;  // base, optimizer step included
    double step_time_s = 0;                  // optimizer included
    double recompute_flops = 0;
};

class OptimalPlanner {
public:
    // cap_bytes: the most memory above the base worth considering (the budget, or what keeping
    // everything needs); larger points are pruned.
    OptimalPlanner(const ChainCosts& costs, std::uint64_t cap_bytes, OptimalOptions options);

    const std::vector<FrontierPoint>& frontier() const { return points_; }  // peak ascending
    std::optional<std::size_t> fastest_within(std::uint64_t allocator_budget_bytes) const;
    Schedule schedule_of(std::size_t point) const;
    bool exact() const { return slot_ == 0; }   // no frontier point thinned away
    std::uint64_t slot_bytes() const { return slot_; }
    std::size_t subproblems() const { return subproblems_; }

    struct Point;
    using Frontier = std::vector<Point>;

private:
    struct SeqRef {
        const Frontier* f;
        std::uint64_t shift;  // added to every need (runs of identical blocks)
    };
    SeqRef seq(std::size_t s, std::size_t t) const;
    class Collector;
    void build_seq(std::size_t s, std::size_t t, Frontier& out, Collector& col);
    void build_top(std::size_t s, Frontier& out, Collector& col);
    void emit_seq(std::size_t s, std::size_t t, std::uint32_t idx, Schedule& out) const;
    void emit_top(std::size_t s, std::uint32_t idx, Schedule& out) const;

    const ChainCosts& k_;
    OptimalOptions opt_;
    std::uint64_t cap_ = 0, slot_ = 0;
    std::size_t n_ = 0;
    // Block run [b0, b1]: identical stages with progress terms affine in position.
    bool uniform_ = false;
    std::size_t b0_ = 0, b1_ = 0;
    std::int64_t slope_ = 0;  // env change per position inside the run
    std::unordered_map<std::size_t, Frontier> seq_;  // s * n + t, ranges touching a non-run stage
    std::vector<Frontier> seq_run_;    // by length, canonical ranges inside the block run
    std::vector<Frontier> top_;
    std::vector<char> split_ok_;  // by offset s' - s
    std::vector<FrontierPoint> points_;
    std::vector<std::uint32_t> top_index_;  // points_[i] comes from top_[0][top_index_[i]]
    std::size_t subproblems_ = 0;
};

struct OptimalPlanner::Point {
    std::uint64_t need = 0;  // bytes above base, residents outside the subproblem excluded
    double time = 0;
    double rflops = 0;
    std::uint32_t choice = 0;  // option (2 bits) | split offset << 2
    std::uint32_t a = 0, b = 0;  // indices into the sub-frontiers
};

}  // namespace remat
