// FSDP's unit policy: which parameter units are gathered (unsharded) at each action of a
// Schedule, and after which backward a unit's gradients are complete. A decision with no sizes
// in it, so that the planner's replay (planner/simulate) and the runtime's executor (runtime/)
// make it alike: the one counts the bytes it predicts, the other allocates the bytes it measures.
//
//   UnitPolicy units(schedule, unit_of_stage, n_units, {.gather_per_unit = true});
//   for (std::size_t a = 0; a < schedule.actions.size(); ++a) {
//       const UnitChanges& c = units.start(a);   // free c.freed, then gather c.gathered
//       ...run action a...
//       units.finish(a);
//   }
//   const UnitChanges& last = units.finish_step();  // the optimizer step: free last.freed
//
// The policy: the root unit (unit 0: embedding, final norm, head) is gathered from the start of
// forward to the end of backward; every action gathers its own stage's unit and prefetches one
// more: the next stage's in a first forward, the previous stage's in a backward, and in a
// recompute the unit of the backward that follows it. Without resharding after forward
// (SHARD_GRAD_OP), a unit also stays gathered while one of its stages has run forward and not
// yet backward. It does not decide when gradients are allocated or how large anything is.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "planner/config/schedule.hpp"

namespace remat {

struct UnitFlags {
    bool gather_per_unit = true;        // false: nothing is ever gathered (DDP, ZeRO-1/2)
    bool reshard_after_forward = true;  // false for SHARD_GRAD_OP: open stages keep their unit
};

// What changes as an action starts: the units to free, then those to gather, each in ascending
// unit order.
struct UnitChanges {
    std::vector<std::size_t> freed, gathered;
};

class UnitPolicy {
  public:
    // unit_of_stage: each stage's unit index, below n_units; unit 0 is the root unit.
    UnitPolicy(const Schedule& schedule, std::vector<std::size_t> unit_of_stage,
               std::size_t n_units, UnitFlags flags);

    // The changes as action a starts; actions 0 .. a-1 have started and finished, in order.
    const UnitChanges& start(std::size_t a);
    // Action a has run: a forward opens its stage, a backward closes it.
    void finish(std::size_t a);
    // The optimizer step: every gathered unit is freed, and the policy is ready for the next step.
    const UnitChanges& finish_step();

    bool gathered(std::size_t u) const { return gathered_[u] != 0; }
    std::size_t unit_of(std::size_t stage) const { return unit_of_stage_[stage]; }
    // Whether the backward of `stage` completes its unit's gradients. Backward runs from the last
    // stage to the first, so a unit is complete after the backward of its first stage: a block's
    // own, the root unit's after the embedding's.
    bool completes_gradients(std::size_t stage) const {
        return first_stage_[unit_of(stage)] == stage;
    }

  private:
    void free_unit(std::size_t u);
    void gather_unit(std::size_t u);
    void open(std::size_t stage, bool is_open);

    const Schedule& schedule_;
    std::vector<std::size_t> unit_of_stage_;
    std::vector<std::size_t> first_stage_;  // per unit: its lowest stage index
    UnitFlags flags_;
    // Per action: the stage of the next B (the number of stages: none).
    std::vector<std::size_t> next_backward_;
    std::vector<char> gathered_;                // per unit
    std::vector<char> forwarded_, backwarded_;  // per stage, this step
    // The gathered set changes by a few units per action: the wanted set is at most three units
    // (root, own, prefetch) plus, without resharding after forward, every unit with an open
    // stage. Only units in the last wanted few or whose open count crossed zero since the last
    // action can change, so an action touches only those, not every unit.
    std::vector<std::uint32_t> open_in_unit_;    // per unit: stages forwarded, not yet backwarded
    std::vector<std::size_t> crossed_;           // units whose open count crossed zero since then
    std::array<std::size_t, 3> wanted_small_{};  // the last action's root, own and prefetched units
    std::size_t wanted_small_n_ = 0;
    UnitChanges changes_;
};

}  // namespace remat
