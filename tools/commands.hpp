// The subcommands of `remat`, one function each: take what main() parsed, ask the planner or
// the runtime, print the table or the --json document, and return the exit code. They throw
// InputError (and HostMemoryError, SizeOverflow) for main() to print as one line; `remat
// validate` is run_validate in tools/validation.hpp.
//
//   CommonArgs a;  ...                      // filled by add_common_options and CLI11
//   return run_plan(a, PlanFlags{.strategy = "sqrt"});
#pragma once
#include <cstdint>
#include <optional>
#include <string>

#include "tools/cli_options.hpp"

namespace remat::cli {

int run_models(bool json);
int run_devices(bool json);
struct PlanFlags {
    std::string strategy = "none";
    bool saved = false, schedule = false, timeline = false;
    std::string emit;             // "torch": the Python lines instead of the report
    std::string memory_snapshot;  // a file: the predicted step as a PyTorch memory snapshot
};
int run_plan(const CommonArgs& a, const PlanFlags& f);
int run_max_batch(const CommonArgs& a, const std::string& strategies, bool micro_batch_given);
int run_pareto(const CommonArgs& a, bool all_points);
// recommend --max-gpus N: the fewest GPUs and the fastest layout per GPU count.
struct GpuCountFlags {
    std::optional<std::int64_t> max_gpus;
    bool world_size_given = false;
    bool sharding_given = false;  // then only that sharding is tried
};
// Exit code 3 when nothing fits.
int run_recommend(const CommonArgs& a, bool micro_batch_given,
                  std::optional<std::int64_t> global_batch, const GpuCountFlags& gpus);
struct DotFlags {
    bool ops = false;          // blocks opened into their op graphs
    bool transparent = false;  // no background (for overlays); white otherwise
};
// output: a file to write, or empty for stdout.
int run_dot(const CommonArgs& a, const std::string& strategies, const std::string& output,
            const DotFlags& flags);

struct ReportFlags {
    std::string strategies = "all";  // the curves' strategies
    std::string strategy;            // pin the chosen plan's strategy ("" : recommend's)
    bool micro_batch_given = false;  // pin its micro-batch (CommonArgs::micro_batch)
    std::string output;              // the HTML file
    std::string plotly;              // the figures as Plotly JSON
    std::string command;             // how remat was called, for the page's footer
};
// Writes -o's HTML and/or --plotly's JSON; --json prints the data.
int run_report(const CommonArgs& a, const ReportFlags& f);

struct RunFlags {
    std::string strategy = "none", device = "cpu", memory_cap, data;
    std::int64_t steps = 2;
    std::uint64_t seed = 1234;
    bool check_gradients = false, timeline = false, work_times = false;
};
// Exit code 3 when a rank ran out of memory under --memory-cap, 4 when the gradients differ.
int run_run(const CommonArgs& a, const RunFlags& f, bool sharding_given, bool profile_given);

struct CalibrateFlags {
    std::string device = "cpu", precision, output;
    bool json = false;
};
int run_calibrate(const CalibrateFlags& f);

}  // namespace remat::cli
