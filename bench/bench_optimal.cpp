// Prints the optimal planner's solve time (the DP only; cost extraction shown apart) for chains
// of N = 10, 80, 320 and 1000 llama2-70b blocks under FSDP over 64 H100s (micro-batch 1, seq
// 4096): at the default memory resolution and exact (every frontier point kept), for one
// budget (half of what keeping everything needs, as `remat plan --strategy optimal
// --memory-budget`) and for the whole frontier (as `remat pareto`). Median of repeated solves.
// Figures go to the README.
//
//   ./build/bin/bench_optimal            # or: ./build/bin/bench_optimal 10 80
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "planner/chain_costs.hpp"
#include "planner/model.hpp"
#include "planner/optimal.hpp"

using namespace remat;

namespace {

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

template <typename F>
double seconds(F&& f) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

std::string ms(double s) { return fmt::format("{:.2f} ms", s * 1e3); }

}  // namespace

int main(int argc, char** argv) {
    std::vector<std::uint64_t> sizes = {10, 80, 320, 1000};
    if (argc > 1) {
        sizes.clear();
        for (int i = 1; i < argc; ++i) sizes.push_back(std::stoull(argv[i]));
    }
    const GpuSpec gpu = load_gpu("h100-80gb");
    fmt::print("optimal planner solve time, llama2-70b blocks, FSDP x64, micro-batch 1, seq 4096, h100-80gb\n");
    fmt::print("(median of repeated solves on this machine; DP only, cost extraction apart)\n\n");
    fmt::print("{:>6} {:>8} {:>12} {:>16} {:>16} {:>16} {:>16} {:>10} {:>14}\n", "blocks", "stages", "costs", "budget, default",
               "budget, exact", "frontier, default", "frontier, exact", "points",
               "default loss");
    for (std::uint64_t n : sizes) {
        ModelConfig m = load_model("llama2-70b");
        m.n_layers = n;
        RunOptions o;
        o.micro_batch = 1;
        o.seq = 4096;
        o.sharding = Sharding::fsdp;
        o.world_size = 64;
        const Chain c = build_chain(m, o);
        ChainCosts k;
        const double t_costs = seconds([&] { k = chain_costs(c, gpu); });
        const std::uint64_t keep_all = keep_all_need(k);
        // One budget: half of what keeping everything needs (the GPU's capacity would be below
        // the model states of the longer chains, leaving the DP nothing to do).
        const std::uint64_t cap = keep_all / 2;
        const int reps = n <= 80 ? 9 : 3;
        std::size_t points = 0;
        double at_budget = 0;  // the step time it picks within the budget
        auto solve = [&](std::uint64_t limit, std::uint32_t slots, int r) {
            std::vector<double> t;
            for (int i = 0; i < r; ++i)
                t.push_back(seconds([&] {
                    const OptimalPlanner dp(k, limit, {slots, false, keep_all});
                    points = dp.frontier().size();
                    const auto pick = dp.fastest_within(k.base + cap);
                    at_budget = pick ? dp.frontier()[*pick].step_time_s : 0;
                }));
            return median(t);
        };
        const double budget_default = solve(cap, auto_memory_slots, reps);
        const double time_default = at_budget;
        // Exact mode keeps every frontier point and tries every split: past 320 blocks it runs
        // for minutes, which is what the default resolution is for.
        const bool exact = n <= 320;
        const double budget_exact = exact ? solve(cap, 0, n < 320 ? reps : 1) : 0;
        const double time_exact = at_budget;
        const double frontier_default = solve(keep_all, auto_memory_slots, reps);
        const std::size_t default_points = points;
        const double frontier_exact = exact ? solve(keep_all, 0, n < 320 ? reps : 1) : 0;
        auto maybe = [&](double t) { return exact ? ms(t) : std::string("(skipped)"); };
        fmt::print(stdout, "{:>6} {:>8} {:>12} {:>16} {:>16} {:>16} {:>16} {:>10} {:>14}\n", n, c.stages.size(),
                   ms(t_costs), ms(budget_default), maybe(budget_exact), ms(frontier_default), maybe(frontier_exact),
                   exact ? fmt::format("{}/{}", default_points, points) : fmt::format("{}/-", default_points),
                   exact ? fmt::format("{:+.4f}%", (time_default / time_exact - 1) * 100) : std::string("-"));
        std::fflush(stdout);
    }
    fmt::print("\npoints: frontier points at the default resolution / exact\n"
               "default loss: step time picked within the budget at the default resolution, vs exact\n");
    return 0;
}
