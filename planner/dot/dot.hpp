// Graphviz DOT of one or more Plans over a Chain: a node per stage, edges along the chain, fill
// colour and label saying what each stage keeps after its first forward (Keep) and how many
// bytes that is. With DotOptions::ops the first blocks are opened into their op graphs, with
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
#include <vector>

#include "planner/chain/chain.hpp"
#include "planner/config/schedule.hpp"

namespace remat {

struct DotOptions {
    bool ops = false;  // expand blocks into their op graphs (the first few only)
};

// How many blocks per plan DotOptions::ops opens; the rest stay plain stage nodes so a 70B
// model's figure stays readable.
inline constexpr std::size_t dot_max_expanded_blocks = 2;

// Writes one digraph with one cluster per plan (labelled plan.strategy), even for one plan.
// Every plan must have one Keep per chain stage. Output is deterministic.
void write_dot(std::ostream& out, const Chain& chain, const std::vector<Plan>& plans,
               const DotOptions& options);

}  // namespace remat
