// Per-graph facts that the replay (planner/simulate) and the optimal planner's cost
// extraction (planner/strategy/chain_costs) both read: each op's produced and consumed storages,
// the last backward use of every saved storage, and per-op times. Computed once per graph (the
// blocks share theirs); both walk them with the one walk of stage_walk.hpp.
//
//   GraphFacts f = facts_of(chain.graph_of(i), gpu, precision, time_model);
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "planner/config/options.hpp"
#include "planner/graph/graph.hpp"
#include "planner/simulate/gpu.hpp"
#include "planner/simulate/step_time.hpp"

namespace remat {

struct GraphFacts {
    struct OpStep {
        std::vector<TensorId> produce;   // storages allocated by the op (views and shared excluded)
        std::vector<TensorId> consume;   // input storages, once per op
        std::vector<TensorId> grad_in;   // input storages that receive a gradient
        std::vector<TensorId> grad_out;  // output storages whose gradient this op consumes
        std::vector<TensorId> release;   // saved storages whose last backward use is this op
        bool core = false;
        double fwd_s = 0, bwd_s = 0, fwd_flops = 0, bwd_flops = 0;
        std::uint64_t fwd_ws = 0, bwd_ws = 0;
        const std::string* name = nullptr;
    };
    std::vector<OpStep> steps;         // program order
    std::vector<std::uint64_t> bytes;  // per storage; 0 for views and shared tensors
    std::vector<int> uses_all;         // forward consumers per storage
    std::vector<int> uses_core;        // consumers among attention-core ops
    std::vector<bool> saved, sel_kept, sel_dropped;
    std::vector<bool> external;  // stage inputs other than x (shared rotary tables): always there
    TensorId input = no_tensor, output = no_tensor;
};

GraphFacts facts_of(const StageGraph& g, const GpuSpec& gpu, Precision precision,
                    const StepTimeModel& tm);

}  // namespace remat
