// Prints how long `remat max-batch ... --strategies all` takes on README command 1 (llama2-7b,
// FSDP over 8 H100s) and on the target (llama2-70b, FSDP over 64): in process (median of
// repeated searches) and as a whole process (median of repeated runs of the CLI binary given as
// argv[1]). Figures go to the README.
//
//   ./build/bin/bench_max_batch ./build/bin/remat
#include <fmt/format.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "bench/timing.hpp"
#include "planner/search/search.hpp"

namespace {

using remat::bench::median;
using remat::bench::seconds;

struct Command {
    const char* model;
    std::uint64_t world_size;
    const char* args;  // the CLI's, after `remat max-batch`
};

}  // namespace

int main(int argc, char** argv) {
    using namespace remat;
    if (argc > 2 || (argc == 2 && (std::string_view(argv[1]) == "--help" ||
                                   std::string_view(argv[1]) == "-h"))) {
        std::fputs(
            "usage: bench_max_batch [REMAT_BINARY]\n"
            "  times max-batch --strategies all in process, and as a whole process of "
            "REMAT_BINARY\n",
            argc > 2 ? stderr : stdout);
        return argc > 2 ? 2 : 0;
    }
    const Command commands[] = {
        {"llama2-7b", 8,
         "--model llama2-7b --gpu h100-80gb --sharding fsdp --world-size 8 --strategies all"},
        {"llama2-70b", 64, "--model llama2-70b --sharding fsdp --world-size 64 --strategies all"},
    };
    constexpr int repeats = 21;
    for (const Command& cmd : commands) {
        Question q;
        q.model = load_model(cmd.model);
        q.options.seq = q.model.context;
        q.options.sharding = Sharding::fsdp;
        q.options.world_size = cmd.world_size;
        q.gpu = load_gpu("h100-80gb");
        q.context.reserve = default_reserve(q.gpu);
        q.context.capacity_bytes = q.gpu.capacity_bytes;
        std::vector<StrategySpec> specs = all_strategies();
        std::erase_if(
            specs, [&](const StrategySpec& s) { return !strategy_applies(s, q.model.n_layers); });
        std::vector<double> in_process;
        std::uint64_t evaluations = 0;
        for (int r = 0; r < repeats; ++r)
            in_process.push_back(seconds([&] {
                evaluations = 0;
                for (const auto& s : specs) evaluations += max_micro_batch(q, s).evaluations;
            }));
        fmt::print("max-batch {}, fsdp x{}, h100-80gb, seq {}, all {} strategies\n", cmd.model,
                   cmd.world_size, q.options.seq, specs.size());
        fmt::print(
            "  in process:     median {:.2f} ms over {} runs ({} fits tests and plans per run)\n",
            median(in_process) * 1e3, repeats, evaluations);
        if (argc > 1) {
            const std::string line =
                fmt::format("{} max-batch {} --json > /dev/null", argv[1], cmd.args);
            std::vector<double> whole;
            for (int r = 0; r < repeats; ++r)
                whole.push_back(seconds([&] {
                    if (std::system(line.c_str()) != 0) std::exit(1);
                }));
            fmt::print("  whole process:  median {:.2f} ms over {} runs (remat max-batch {})\n",
                       median(whole) * 1e3, repeats, cmd.args);
        }
    }
    return 0;
}
