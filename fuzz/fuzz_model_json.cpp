// Fuzzes `--model FILE`: a Hugging Face config.json (every family remat reads) or remat's
// preset format ("format": "remat-model"), read as load_model reads a file (parse_json_text,
// then model_from_json), and on through to a plan: the chain at micro-batch 1 and 2 and a short
// sequence, planned with `none` and `full` and replayed by the simulator on the h100-80gb
// preset under each profile in turn.
//
// Findings besides crashes: a peak that is not its breakdown plus the reserve, a peak that falls
// when the micro-batch grows (what 64-bit wraparound looks like), a step time that is not a
// finite positive number. It does not run the runtime's model (fuzz_token_data does, on a fixed
// tiny model) or `optimal` (its cost grows with the block count by design; fuzz_strategy plans
// it on small chains).
#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "fuzz/fuzz_common.hpp"
#include "planner/config/json_io.hpp"
#include "planner/config/model.hpp"
#include "planner/search/search.hpp"
#include "planner/simulate/memory.hpp"

namespace {

using namespace remat;

constexpr std::uint64_t k_max_seq = 64;  // "a small sequence": the parser, not the size, is fuzzed

const GpuSpec& gpu() {
    static const GpuSpec g = load_gpu("h100-80gb");
    return g;
}

Question question(const ModelConfig& m, Profile profile, std::uint64_t micro_batch) {
    Question q;
    q.model = m;
    q.gpu = gpu();
    q.options.micro_batch = micro_batch;
    q.options.seq = std::min(m.context, k_max_seq);
    q.options.profile = profile;
    // The remat profiles describe remat's own runtime, which runs fp32 or bf16-mixed under FSDP.
    if (profile == Profile::remat || profile == Profile::remat_cuda)
        q.options.sharding = Sharding::fsdp;
    q.context.capacity_bytes = q.gpu.capacity_bytes;
    q.context.reserve = default_reserve(q.gpu);
    return q;
}

void check(const Evaluation& e, const std::string& what) {
    const SimResult& r = e.result;
    if (r.at_peak.allocator_total() != r.allocator_peak_bytes)
        remat::fuzz::finding(fmt::format("{}: breakdown sums to {}, allocator peak is {}", what,
                                         r.at_peak.allocator_total(), r.allocator_peak_bytes));
    if (r.allocator_peak_bytes + r.at_peak.reserve_bytes != r.peak_bytes)
        remat::fuzz::finding(fmt::format("{}: peak {} is not allocator peak {} + reserve {}", what,
                                         r.peak_bytes, r.allocator_peak_bytes,
                                         r.at_peak.reserve_bytes));
    if (!(std::isfinite(r.step_time_s) && r.step_time_s > 0) || !std::isfinite(r.tokens_per_s))
        remat::fuzz::finding(
            fmt::format("{}: step time {} s, {} tokens/s", what, r.step_time_s, r.tokens_per_s));
}

void plan_small(const ModelConfig& m) {
    (void)parameter_count(m);  // every command reports it
    for (const Profile profile : {Profile::sdpa, Profile::hf_eager, Profile::megatron,
                                  Profile::remat, Profile::remat_cuda}) {
        for (const char* strategy : {"none", "full"}) {
            const StrategySpec spec = parse_strategy(strategy);
            const std::string what = fmt::format("{} {}", profile_name(profile), strategy);
            const Evaluation one = evaluate(question(m, profile, 1), spec);
            check(one, what + " B=1");
            const Evaluation two = evaluate(question(m, profile, 2), spec);
            check(two, what + " B=2");
            if (two.result.peak_bytes < one.result.peak_bytes)
                remat::fuzz::finding(fmt::format("{}: peak {} at B=2 below {} at B=1", what,
                                                 two.result.peak_bytes, one.result.peak_bytes));
        }
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    remat::fuzz::rejects_only_with_input_errors([&] {
        const std::string origin = "fuzz/config.json";
        const ModelConfig m =
            model_from_json(parse_json_text(remat::fuzz::as_text(data, size), origin), origin);
        plan_small(m);
    });
    return 0;
}
