// The predicted memory of one step in PyTorch's memory snapshot format, as
// torch.cuda.memory._dump_snapshot writes it, so that the prediction opens in PyTorch's viewer
// (https://pytorch.org/memory_viz, torch/utils/viz/MemoryViz.js) beside a measured snapshot.
//
//   const SimResult traced = simulate_traced(e.chain, e.plan, q.gpu, ctx.reserve, ctx.time_model);
//   nlohmann::json s = memory_snapshot(e.chain, traced, "sqrt");
//   std::ofstream("plan.pickle", std::ios::binary) << to_pickle(s);
//
// What it holds (docs/report.md):
// - device_traces[0]: a segment_alloc, then for every allocation of the replay an `alloc` and,
//   when freed, `free_requested` and `free_completed` at the same address. Each entry has its
//   `category` (the report's: parameters, gradients, optimizer state, unsharded parameters,
//   activations, temporaries; a temporary kept for backward counts as the activation it
//   becomes) and frames naming what it is, the op that made it and the Schedule action.
// - segments: one segment holding everything, as it stands at the end of the step: the blocks
//   still allocated, and the gaps between them as inactive blocks (the viewer requires the
//   blocks to tile the segment).
// Addresses are laid out first fit, without rounding: the allocator's real layout (and its
// fragmentation, which remat counts in the reserve) is not modelled, so the viewer's
// "Active Memory Timeline" is the view to read; its total at every moment is the replay's.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

#include "planner/chain/chain.hpp"
#include "planner/simulate/simulate.hpp"

namespace remat::cli {

// traced: from simulate_traced. strategy names the plan in the frames.
nlohmann::json memory_snapshot(const Chain& chain, const SimResult& traced,
                               const std::string& strategy);

}  // namespace remat::cli
