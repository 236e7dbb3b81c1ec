// DPO's reference forward (planner/chain: Chain::has_reference_model): the frozen reference
// model, or the policy with its adapters disabled, run under no_grad on the concatenated batch
// after the policy's forward and before its backward, as the seed's trainer runs it. Nothing is
// kept: each stage holds its input, its transients and its output while it runs; under FSDP its
// unit is gathered for it (and a separate reference model's root unit for the whole forward).
// The replay (simulate.cpp) and the optimal planner's costs (chain_costs.cpp) both add it after
// the head's forward.
//
//   ReferenceForward ref = reference_forward(chain, terms, gpu, time_model);
#pragma once
#include <cstdint>

#include "planner/chain/chain.hpp"
#include "planner/simulate/gpu.hpp"
#include "planner/simulate/memory.hpp"
#include "planner/simulate/step_time.hpp"

namespace remat {

struct ReferenceForward {
    std::uint64_t peak_bytes = 0;  // above what the policy holds when it starts
    double time_s = 0;
    double flops = 0;
};
// All zero without a reference model.
ReferenceForward reference_forward(const Chain& c, const StepTerms& terms, const GpuSpec& gpu,
                                   const StepTimeModel& tm);

}  // namespace remat
