// The memory/time frontier of one configuration: every non-dominated (peak, step time) pair,
// from the leanest schedule to keeping everything (no recomputation). The optimal planner's
// frontier, merged with the heuristics' replayed points so that none of them is left above it.
//
//   std::vector<ParetoPoint> f = pareto_frontier(question);   // peak ascending, time descending
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "planner/search/search.hpp"

namespace remat {

struct ParetoPoint {
    std::uint64_t peak_bytes = 0;  // allocator peak + reserve
    std::uint64_t allocator_peak_bytes = 0;
    double step_time_s = 0;
    double recompute_flops = 0;
    double tokens_per_s = 0;
    std::string source;  // "optimal", or the heuristic whose replayed point this is
};

struct ParetoFrontier {
    std::vector<ParetoPoint> points;
    std::uint64_t slot_bytes = 0;  // the DP's memory resolution; 0: exact
    double solve_s = 0;            // the DP's time
};

// progress (optional): called as the work advances, (what, done, total): "solving" counts the
// DP's subproblems, "replaying" the heuristics. A chain of 100,000 blocks takes seconds.
using ParetoProgress = std::function<void(std::string_view, std::size_t, std::size_t)>;
ParetoFrontier pareto_frontier(const Question& q, const ParetoProgress& progress = {});

}  // namespace remat
