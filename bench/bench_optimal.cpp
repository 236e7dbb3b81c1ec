// Prints the optimal planner's solve time (the DP only; cost extraction shown apart) for chains
// of llama2-70b blocks under FSDP over 64 H100s (micro-batch 1, seq 4096): at the default memory
// resolution and exact (every frontier point kept), for one budget (half of what keeping
// everything needs, as `remat plan --strategy optimal --memory-budget`) and for the whole
// frontier (as `remat pareto`). Median of repeated solves; past --exact-max blocks exact mode is
// skipped (it runs for minutes), and chains of 10,000 blocks and more are solved once. Figures go
// to the README and docs/optimal.md.
//
//   ./build/bin/bench_optimal                  # 10, 80, 320 and 1000 blocks
//   ./build/bin/bench_optimal 10000 100000     # the sizes (default resolution)
#include <fmt/format.h>

#include <charconv>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include "bench/timing.hpp"
#include "planner/config/model.hpp"
#include "planner/strategy/chain_costs.hpp"
#include "planner/strategy/optimal.hpp"

using namespace remat;

namespace {

constexpr const char* usage =
    "usage: bench_optimal [--exact-max BLOCKS] [BLOCKS...]\n"
    "  BLOCKS       chain lengths in llama2-70b blocks, 1 to 100000 (default: 10 80 320 1000)\n"
    "  --exact-max  longest chain also solved exact, every frontier point kept (default 320)\n";

using remat::bench::median;
using remat::bench::seconds;

std::string ms(double s) {
    return s >= 1 ? fmt::format("{:.2f} s", s) : fmt::format("{:.2f} ms", s * 1e3);
}

// A count from 1 to 100000 (the model's limit), or nothing.
bool parse_blocks(std::string_view text, std::uint64_t& out) {
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
    return ec == std::errc() && end == text.data() + text.size() && out >= 1 && out <= 100000;
}

}  // namespace

int main(int argc, char** argv) {
    std::vector<std::uint64_t> sizes;
    std::uint64_t exact_max = 320;
    for (int i = 1; i < argc; ++i) {
        const std::string_view arg = argv[i];
        if (arg == "--help" || arg == "-h") {
            std::fputs(usage, stdout);
            return 0;
        }
        std::uint64_t n = 0;
        if (arg == "--exact-max" && i + 1 < argc && parse_blocks(argv[i + 1], n)) {
            exact_max = n;
            ++i;
        } else if (parse_blocks(arg, n)) {
            sizes.push_back(n);
        } else {
            std::fprintf(stderr, "bench_optimal: '%s' is not a block count from 1 to 100000\n%s",
                         argv[i], usage);
            return 2;
        }
    }
    if (sizes.empty()) sizes = {10, 80, 320, 1000};
    const GpuSpec gpu = load_gpu("h100-80gb");
    fmt::print(
        "optimal planner solve time, llama2-70b blocks, FSDP x64, micro-batch 1, seq 4096, "
        "h100-80gb\n");
    fmt::print(
        "(median of repeated solves on this machine, one solve from 10,000 blocks; DP only, cost "
        "extraction apart)\n\n");
    fmt::print("{:>6} {:>8} {:>12} {:>16} {:>16} {:>17} {:>16} {:>10} {:>14} {:>12}\n", "blocks",
               "stages", "costs", "budget, default", "budget, exact", "frontier, default",
               "frontier, exact", "points", "default loss", "stored");
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
        const int reps = n <= 80 ? 9 : n < 10000 ? 3 : 1;
        std::size_t points = 0, stored = 0;
        double at_budget = 0;  // the step time it picks within the budget
        auto solve = [&](std::uint64_t limit, std::uint32_t slots, int r) {
            std::vector<double> t;
            for (int i = 0; i < r; ++i)
                t.push_back(seconds([&] {
                    const OptimalPlanner dp(k, limit, {slots, false, keep_all});
                    points = dp.frontier().size();
                    stored = dp.stored_points();
                    const auto pick = dp.fastest_within(k.base + cap);
                    at_budget = pick ? dp.frontier()[*pick].step_time_s : 0;
                }));
            return median(t);
        };
        const double budget_default = solve(cap, auto_memory_slots, reps);
        const double time_default = at_budget;
        // Exact mode keeps every frontier point and tries every split: past 320 blocks it runs
        // for minutes, which is what the default resolution is for.
        const bool exact = n <= exact_max;
        const double budget_exact = exact ? solve(cap, 0, n < 320 ? reps : 1) : 0;
        const double time_exact = at_budget;
        const double frontier_default = solve(keep_all, auto_memory_slots, reps);
        const std::size_t default_points = points, default_stored = stored;
        const double frontier_exact = exact ? solve(keep_all, 0, n < 320 ? reps : 1) : 0;
        auto maybe = [&](double t) { return exact ? ms(t) : std::string("(skipped)"); };
        fmt::print(stdout, "{:>6} {:>8} {:>12} {:>16} {:>16} {:>17} {:>16} {:>10} {:>14} {:>12}\n",
                   n, c.stages.size(), ms(t_costs), ms(budget_default), maybe(budget_exact),
                   ms(frontier_default), maybe(frontier_exact),
                   exact ? fmt::format("{}/{}", default_points, points)
                         : fmt::format("{}/-", default_points),
                   exact ? fmt::format("{:+.4f}%", (time_default / time_exact - 1) * 100)
                         : std::string("-"),
                   default_stored);
        std::fflush(stdout);
    }
    fmt::print(
        "\npoints: frontier points at the default resolution / exact\n"
        "default loss: step time picked within the budget at the default resolution, vs exact\n"
        "stored: frontier points kept over every subproblem at the default resolution (24 bytes "
        "each)\n");
    return 0;
}
