// Replays a Plan's Schedule against the memory model, op by op: allocate on produce, free after
// the last use (a forward consumer, or the last backward that saved it). Adds the model states,
// the FSDP/ZeRO-3 gathered units, PyTorch autocast's weight copies, gradient buffers, the
// optimizer step's temporaries and the reserve. One steady step on one rank.
//
//   SimResult r = simulate(chain, plan, gpu, reserve);
//   r.peak_bytes; r.peak_action; r.timeline; r.step_time_s
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "planner/chain/chain.hpp"
#include "planner/simulate/gpu.hpp"
#include "planner/simulate/memory.hpp"
#include "planner/config/schedule.hpp"
#include "planner/simulate/step_time.hpp"

namespace remat {

struct Breakdown {
    std::uint64_t parameters_bytes = 0;            // persistent, per rank
    std::uint64_t gradients_bytes = 0;             // live gradient storage at that moment
    std::uint64_t optimizer_bytes = 0;             // persistent, per rank
    std::uint64_t unsharded_parameters_bytes = 0;  // gathered units, autocast weight copies
    std::uint64_t activations_bytes = 0;           // kept for backward, checkpoints, stage outputs
    std::uint64_t temporaries_bytes = 0;           // in-flight tensors, gradient buffers, workspaces
    std::uint64_t reserve_bytes = 0;
    std::uint64_t allocator_total() const {
        return parameters_bytes + gradients_bytes + optimizer_bytes + unsharded_parameters_bytes +
               activations_bytes + temporaries_bytes;
    }
};

struct TimelinePoint {
    std::string action;             // "F_ck(3)", "B(3)", "optimizer"
    std::uint64_t live_bytes = 0;   // allocator-visible, after the action
    std::uint64_t peak_bytes = 0;   // allocator-visible high-water mark during the action
};

struct SimResult {
    std::uint64_t peak_bytes = 0;            // allocator peak + reserve
    std::uint64_t allocator_peak_bytes = 0;  // what a runtime's allocator would report
    std::string peak_action;                 // "B(32)"
    std::string peak_op;                     // "self_attn.sdpa" or "optimizer.step"
    std::string peak_category;               // what the allocation that set it was: "gradients", "activations", ...
    Breakdown at_peak;
    std::vector<TimelinePoint> timeline;
    double forward_flops = 0;
    double recompute_flops = 0;
    double backward_flops = 0;
    double step_time_s = 0;
    double tokens_per_s = 0;  // per GPU: micro_batch * seq / step time
};

SimResult simulate(const Chain& chain, const Plan& plan, const GpuSpec& gpu, const Reserve& reserve,
                   const StepTimeModel& time_model = {});

}  // namespace remat
