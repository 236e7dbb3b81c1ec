// Prints how long `remat max-batch --model llama2-70b --sharding fsdp --world-size 64
// --strategies all` takes: in process (median of repeated searches) and as a whole process
// (median of repeated runs of the CLI binary given as argv[1]). Figures go to the README.
//
//   ./build/bin/bench_max_batch ./build/bin/remat
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <string>
#include <vector>

#include "planner/search.hpp"

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

}  // namespace

int main(int argc, char** argv) {
    using namespace remat;
    Question q;
    q.model = load_model("llama2-70b");
    q.options.seq = q.model.context;
    q.options.sharding = Sharding::fsdp;
    q.options.world_size = 64;
    q.gpu = load_gpu("h100-80gb");
    q.context.reserve = default_reserve(q.gpu);
    q.context.capacity_bytes = q.gpu.capacity_bytes;
    constexpr int repeats = 21;
    std::vector<double> in_process;
    std::uint64_t evaluations = 0;
    for (int r = 0; r < repeats; ++r)
        in_process.push_back(seconds([&] {
            evaluations = 0;
            for (const auto& s : all_strategies()) evaluations += max_micro_batch(q, s).evaluations;
        }));
    fmt::print("max-batch llama2-70b, fsdp x64, h100-80gb, seq 4096, all 8 strategies\n");
    fmt::print("  in process:     median {:.2f} ms over {} runs ({} plan evaluations per run)\n",
               median(in_process) * 1e3, repeats, evaluations);
    if (argc > 1) {
        const std::string cmd = fmt::format(
            "{} max-batch --model llama2-70b --sharding fsdp --world-size 64 --strategies all --json > /dev/null",
            argv[1]);
        std::vector<double> whole;
        for (int r = 0; r < repeats; ++r)
            whole.push_back(seconds([&] {
                if (std::system(cmd.c_str()) != 0) std::exit(1);
            }));
        fmt::print("  whole process:  median {:.2f} ms over {} runs ({})\n", median(whole) * 1e3, repeats, argv[1]);
    }
    return 0;
}
