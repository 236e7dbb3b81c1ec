// The plan as a figure: the DOT `remat dot` writes (planner/dot) with the question as its title
// and each plan's peak against the budget, and that DOT rendered to SVG by Graphviz's own
// library (libgvc), for the HTML report.
//
//   std::string dot = plan_dot(q, {evaluate(q, parse_strategy("sqrt"))}, false, false);
//   std::string svg = dot_to_svg(dot);   // "<svg ...>...</svg>", no XML prologue
#pragma once
#include <string>
#include <vector>

#include "planner/search/search.hpp"

namespace remat::cli {

// One cluster per evaluation (all of q, so they share one chain).
std::string plan_dot(const Question& q, const std::vector<Evaluation>& plans, bool ops,
                     bool transparent);

// Lays out and renders DOT text with Graphviz (dot layout). Throws std::runtime_error naming
// Graphviz's complaint when it cannot read, lay out or render it (the DOT is remat's own, so
// that is Graphviz's installation, not the user's input).
std::string dot_to_svg(const std::string& dot);

}  // namespace remat::cli
