// The chain as the optimal planner sees it: for every stage, what each way of running it costs
// in bytes and seconds, and the memory that depends only on how far the step has progressed
// (gradients made so far, gathered FSDP units, the gradient flowing back). Extracted from the
// same graph facts and step terms as the replay (planner/simulate), so that for a schedule of
// the planner's family the stage-level accounting here gives the replay's allocator peak.
//
//   ChainCosts k = chain_costs(chain, gpu);
//   CostsResult r = simulate_costs(k, schedule);   // peak and time, stage by stage
//
// Memory at any moment = base + env(where the step is) + what the stages keep + the running
// action's transient. The env terms count autocast's low-precision weight copies (DDP with
// autocast) from each stage's first forward to its backward: the optimal planner's accounting,
// an upper bound. PyTorch frees a checkpointed stage's copies when the forward ends and makes
// them again at its recompute; simulate_costs can replay that too (CastModel::as_replayed),
// which is what the op-level replay gives (see docs/optimal.md).
#pragma once
#include <array>
#include <cstdint>
#include <vector>

#include "planner/chain/chain.hpp"
#include "planner/config/schedule.hpp"
#include "planner/simulate/gpu.hpp"
#include "planner/simulate/step_time.hpp"

namespace remat {

// A forward's cost: the peak above the level it starts at (input live), and what it leaves.
struct ForwardCost {
    std::uint64_t peak = 0;    // internal tensors and the output, at their high-water mark
    std::uint64_t keep = 0;    // stage-internal bytes kept after it (the output not included)
    bool holds_input = false;  // whether the stage keeps its input x
};

struct StageCosts {
    std::uint64_t x = 0;               // the stage input (a checkpoint's size)
    std::uint64_t dx = 0;              // its gradient; 0 when the input needs none (token ids)
    std::array<ForwardCost, 4> fwd{};  // indexed by Keep: all, selective, input, none
    bool has_core = false;             // selective applies (an attention core to drop)
    std::uint64_t rsel_peak = 0;       // R_sel: above its start
    std::uint64_t rsel_keep = 0;       // bytes R_sel adds to what the stage keeps
    std::array<std::uint64_t, 2> bwd_peak{};  // B's ops, above its start (after F_all / F_sel)
    double t_fwd = 0, t_core = 0, t_bwd = 0;  // seconds: forward, attention core, backward
    double f_fwd = 0, f_core = 0;             // FLOPs: forward, attention core
    bool block = false;                       // a block: has its own FSDP unit
    // Progress-dependent memory above base, by action of this stage:
    std::uint64_t env_first = 0;    // its first forward
    std::uint64_t env_rec = 0;      // a recompute forward of any stage while this one is the next
                                    // to run backward (plus pair_gather terms, see env_rec_of)
    std::uint64_t env_rsel = 0;     // its R_sel
    std::uint64_t env_b = 0;        // the start of its B
    std::uint64_t b_start = 0;      // allocated as B starts (FSDP: the unit's unsharded gradients)
    std::uint64_t env_after_b = 0;  // after B has freed everything of the stage
    std::uint64_t b_spike = 0;      // then: reduce-scatter output and new p.grad (or DDP's p.grad)
    std::uint64_t cast = 0;         // autocast's weight copies of this stage, in the env terms of
                                    // every action from its first forward to its B
};

struct ChainCosts {
    std::vector<StageCosts> stages;
    std::uint64_t base = 0;            // persistent model states before the step
    std::uint64_t pair_gather = 0;     // FSDP: one block unit gathered per distinct block in {i, t}
    std::uint64_t optimizer_need = 0;  // the optimizer step's peak, above base
    double t_optimizer = 0;
    double host_bandwidth = 0;  // bytes/s per direction, for offloaded checkpoints
    double micro_steps = 1;     // gradient accumulation: micro-steps per optimizer step

    // The optimizer step's time from one micro-step's (stage times summed).
    double step_time_s(double micro_step_s) const {
        return micro_steps * micro_step_s + t_optimizer;
    }

    std::size_t size() const { return stages.size(); }
    // A recompute forward of stage i while stage t is the next to run backward.
    std::uint64_t env_rec_of(std::size_t i, std::size_t t) const {
        return stages[t].env_rec +
               pair_gather * ((stages[i].block ? 1u : 0u) + (i != t && stages[t].block ? 1u : 0u));
    }
    // Offload's copy time of stage i's checkpoint beyond the compute it overlaps.
    double copy_excess_s(std::size_t i, double overlap_s) const {
        return remat::copy_excess_s(stages[i].x, host_bandwidth, overlap_s);
    }
    // Whether the env terms over-count (autocast copies that the replay frees between the end of
    // forward and a recompute): the planner's peaks are then upper bounds.
    bool casts_over_counted() const;
};

ChainCosts chain_costs(const Chain& chain, const GpuSpec& gpu, const StepTimeModel& tm = {});

struct CostsResult {
    std::uint64_t allocator_peak_bytes = 0;  // base included: compare with SimResult's
    double step_time_s = 0;
    double recompute_flops = 0;
};
// How simulate_costs counts autocast's weight copies: held from first forward to backward (the
// optimal planner's accounting), or freed at the end of forward for the stages that keep no
// saved tensor and made again at their recompute (the op-level replay's, planner/simulate).
enum class CastModel { held_to_backward, as_replayed };

// The stage-level replay of a schedule of the planner's family (see planner/strategy/optimal.hpp),
// in time linear in its length. Throws std::logic_error on a schedule that reads what is gone.
CostsResult simulate_costs(const ChainCosts& k, const Schedule& s,
                           CastModel casts = CastModel::as_replayed);
// What keeping everything needs above base: no schedule is worth more memory.
std::uint64_t keep_all_need(const ChainCosts& k);

}  // namespace remat
