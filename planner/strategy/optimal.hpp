// The optimal planner: a dynamic program over the heterogeneous chain (embedding, blocks, final
// norm, head + loss) that finds, for every memory budget, the fastest schedule of its family.
//
// The family (Rotor's, Beaumont et al. 2019, extended with selective and offload): to run the
// backward of stages s..t with x_s live, either
//   A  F_all(s), then s+1..t, then B(s)
//   S  F_sel(s), then s+1..t, then R_sel(s), B(s)          (stages with an attention core)
//   C  F_ck(s) F_none(s+1..s'-1), then s'..t with x_s kept, then s..s'-1 again from x_s
//   C^ as C, with x_s offloaded to host memory in between (when offload is enabled)
// The first pass is the same recursion with first forwards. Each subproblem keeps its Pareto
// frontier of (bytes needed, seconds); runs of identical blocks share one frontier per length,
// shifted by the progress-dependent memory. See docs/optimal.md.
//
//   OptimalPlanner dp(costs, cap_bytes, {});
//   auto s = dp.fastest_within(allocator_budget);   // nullopt when nothing fits
//
// It does not replay schedules op by op (planner/simulate does), and it does not try the
// heuristics (plan_optimal in planner/strategy/strategy.cpp does).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "planner/config/schedule.hpp"
#include "planner/strategy/chain_costs.hpp"

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

// Called as subproblems are solved, about every 1%: (solved, total). A chain of 100,000 blocks
// takes seconds; the CLI shows it on a terminal.
using OptimalProgress = std::function<void(std::size_t, std::size_t)>;

struct FrontierPoint {
    std::uint64_t allocator_peak_bytes = 0;  // base, optimizer step included
    double step_time_s = 0;                  // optimizer included
    double recompute_flops = 0;
};

class OptimalPlanner {
  public:
    // cap_bytes: the most memory above the base worth considering (the budget, or what keeping
    // everything needs); larger points are pruned.
    OptimalPlanner(const ChainCosts& costs, std::uint64_t cap_bytes, OptimalOptions options,
                   const OptimalProgress& progress = {});
    ~OptimalPlanner();
    OptimalPlanner(const OptimalPlanner&) = delete;
    OptimalPlanner& operator=(const OptimalPlanner&) = delete;

    // Peak ascending, time strictly falling. Under DDP with autocast the DP's accounting is an
    // upper bound (chain_costs.hpp); each point's peak is then its schedule's replayed one.
    const std::vector<FrontierPoint>& frontier() const { return points_; }
    std::optional<std::size_t> fastest_within(std::uint64_t allocator_budget_bytes) const;
    Schedule schedule_of(std::size_t point) const;
    bool exact() const { return slot_ == 0; }  // no frontier point thinned away
    std::uint64_t slot_bytes() const { return slot_; }
    std::size_t subproblems() const { return subproblems_; }
    std::size_t stored_points() const { return stored_; }  // over every subproblem's frontier

  private:
    class Collector;
    struct Store;
    // A stored frontier, and one read with the shift of its range (runs of identical blocks).
    using Id = std::uint32_t;
    static constexpr Id none = ~Id{0};
    struct View {
        const std::uint64_t* need;
        const double* time;
        std::uint32_t size;
        std::uint64_t shift;  // added to every need
    };
    View view(Id id, std::uint64_t shift = 0) const;
    View seq(std::size_t s, std::size_t t) const;
    std::vector<double> rflops_of(const std::vector<std::uint32_t>& top_points) const;
    Id seq_id(std::size_t s, std::size_t t) const;
    void mark_needed_prefix();
    Id build_seq(std::size_t s, std::size_t t, Collector& col);
    Id build_top(std::size_t s, Collector& col);
    template <class Sub>
    Id build(std::size_t s, const Sub& sub, Collector& col);
    template <class Sub, class Emit>
    void options(std::size_t s, const Sub& sub, Collector& col, Emit& emit);
    Id store(Collector& col);
    void emit(std::uint32_t top_point, Schedule& out) const;  // from top_[0]'s point

    const ChainCosts& k_;
    OptimalOptions opt_;
    OptimalProgress progress_;  // used while solving only
    std::uint64_t cap_ = 0, slot_ = 0;
    std::size_t n_ = 0;
    // The backward subproblems Seq(s, t), t <= n - 2, fall in three families around the longest
    // run [b0, b1] of identical stages whose progress terms move by one slope per position:
    //   inside the run (b0 <= s, t <= b1): one canonical frontier per length, shifted;
    //   prefix rows (s < b0): by s, then t - s; only those some subproblem reads are built;
    //   suffix columns (b0 <= s, t > b1): by t, then s - b0.
    // Without a run, b0 = n - 1 and every range is a prefix row.
    std::size_t b0_ = 0, b1_ = 0;
    std::int64_t slope_ = 0;                  // env change per position inside the run
    std::vector<Id> seq_run_;                 // by length
    std::vector<std::vector<Id>> pre_, suf_;  // none: not built (no subproblem reads it)
    std::vector<Id> top_;
    std::vector<char> split_ok_;                    // by offset s' - s
    std::vector<std::uint32_t> offsets_;            // the offsets split_ok_ allows, ascending
    std::vector<long double> f_prefix_, t_prefix_;  // forward FLOPs and seconds of stages 0..i-1
    std::unique_ptr<Store> store_;
    std::vector<FrontierPoint> points_;
    std::vector<std::uint32_t> top_index_;  // points_[i] comes from top_[0]'s point top_index_[i]
    std::size_t subproblems_ = 0, stored_ = 0, total_ = 0;  // total_: subproblems to solve
};

}  // namespace remat
