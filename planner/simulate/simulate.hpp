// Replays a Plan's Schedule against the memory model, op by op: allocate on produce, free after
// the last use (a forward consumer, or the last backward that saved it). Adds the model states,
// the FSDP/ZeRO-3 gathered units, PyTorch autocast's weight copies, gradient buffers, the
// optimizer step's temporaries and the reserve. One steady step on one rank.
//
// Its parts: the byte ledger (ledger.hpp: categories, peak, timeline), the walk of one stage's
// ops (stage_walk.hpp, shared with the optimal planner's costs) and FSDP's unit policy
// (planner/config/fsdp_units.hpp, shared with the runtime's executor); simulate.cpp holds the
// storages' liveness across actions, the gradients and the step time.
//
//   SimResult r = simulate(chain, plan, gpu, reserve);
//   r.peak_bytes; r.peak_action; r.timeline; r.step_time_s
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "planner/chain/chain.hpp"
#include "planner/config/schedule.hpp"
#include "planner/simulate/gpu.hpp"
#include "planner/simulate/ledger.hpp"
#include "planner/simulate/memory.hpp"
#include "planner/simulate/network.hpp"
#include "planner/simulate/step_time.hpp"

namespace remat {

// The collectives of one kind in a step: how many, their bytes and seconds in all.
struct CollectiveTotal {
    Collective kind = Collective::all_gather;
    std::uint64_t count = 0;
    double bytes = 0;
    double seconds = 0;
};

struct SimResult {
    std::uint64_t peak_bytes = 0;            // allocator peak + reserve
    std::uint64_t allocator_peak_bytes = 0;  // what a runtime's allocator would report
    std::string peak_action;                 // "B(32)"
    std::string peak_op;                     // "self_attn.sdpa" or "optimizer.step"
    std::string
        peak_category;  // what the allocation that set it was: "gradients", "activations", ...
    Breakdown at_peak;
    std::vector<TimelinePoint> timeline;
    double forward_flops = 0;
    double recompute_flops = 0;
    double backward_flops = 0;
    double step_time_s = 0;
    double tokens_per_s = 0;  // per GPU: micro_batch * seq / step time
    // Communication (docs/step-time.md): every collective's time on the communication stream,
    // and what of it the step waits for (step time minus the step without any collective).
    std::vector<CollectiveTotal> collectives;
    double comm_s = 0;
    double exposed_comm_s = 0;
    // The step without any collective: the compute stream's busy time, what the optimal
    // planner's costs (planner/strategy/chain_costs) minimize.
    double compute_step_time_s = 0;
    std::string network;  // the network preset the collectives ran on
    // simulate_traced only: every allocation, release and recategorization, in order.
    std::vector<LedgerEvent> trace;
};

SimResult simulate(const Chain& chain, const Plan& plan, const GpuSpec& gpu, const Reserve& reserve,
                   const StepTimeModel& time_model = {});
// The same replay, recording SimResult::trace (what a memory snapshot lays out).
SimResult simulate_traced(const Chain& chain, const Plan& plan, const GpuSpec& gpu,
                          const Reserve& reserve, const StepTimeModel& time_model = {});
// What a traced allocation is, in words: "block 3: mlp.c_fc.output", "input of block 4".
std::string block_name(const Chain& c, const BlockTag& t);

}  // namespace remat
