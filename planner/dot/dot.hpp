// Graphviz DOT of one or more Plans over a Chain: a node per stage (a run of identical blocks
// folded into one), edges along the chain, fill colour and label saying what each stage keeps
// after its first forward (Keep) and how many bytes that is; a title and a legend naming the
// roles. With DotOptions::ops the first blocks are opened into their op graphs, with
// the tensors saved for backward drawn as separate, bold-linked nodes.
//
//   std::vector<Plan> plans = {make_plan(chain, parse_strategy("none"), ctx),
//                              make_plan(chain, parse_strategy("sqrt"), ctx)};
//   write_dot(std::cout, chain, plans, DotOptions{.ops = true});
//   // $ dot -Tsvg plan.dot -o plan.svg
//
// It does not lay anything out or run Graphviz, and it does not show the Schedule's order of
// actions (see action_label for that): only what each stage keeps.
#pragma once
#include <ostream>
#include <string>
#include <vector>

#include "planner/chain/chain.hpp"
#include "planner/config/schedule.hpp"

namespace remat {

struct DotOptions {
    bool ops = false;  // expand blocks into their op graphs (the first few only)
    // Runs of identical consecutive blocks drawn as one node, as `remat plan` prints them
    // (stage_runs); with ops, the expanded blocks stay single.
    bool fold = true;
    // Above the figure: model, question, what the peak is against the budget. Empty: no title.
    std::string title = {};
    // Under each plan's strategy label (one per plan, or none): its peak, whether it fits.
    std::vector<std::string> plan_notes = {};
    bool legend = true;                // the roles' fills, named
    std::string background = "white";  // Graphviz bgcolor; "transparent" for overlays
};

// How many blocks per plan DotOptions::ops opens; the rest stay plain stage nodes so a 70B
// model's figure stays readable.
inline constexpr std::size_t dot_max_expanded_blocks = 2;

// Writes one digraph with one cluster per plan (labelled plan.strategy, then its note), even for
// one plan. Every plan must have one Keep per chain stage; plan_notes is empty or one per plan.
// Output is deterministic.
void write_dot(std::ostream& out, const Chain& chain, const std::vector<Plan>& plans,
               const DotOptions& options);

}  // namespace remat
