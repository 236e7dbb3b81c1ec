// Fuzzes strategy names and lists (`--strategy`, `--strategies`): parse_strategy_list and
// parse_strategy, then validate_strategy and make_plan for each strategy on chains of tiny-llama
// blocks (1, 4 and 13 of them: every-N and segments-K at, below and above the block count), each
// plan replayed by the simulator.
//
// Findings besides crashes: a strategy whose name() does not parse back to itself, a plan
// without one Keep per stage, and a list that parses as a list but not item by item.
#include <fmt/format.h>

#include "fuzz/fuzz_common.hpp"
#include "planner/config/model.hpp"
#include "planner/simulate/memory.hpp"
#include "planner/simulate/simulate.hpp"
#include "planner/strategy/strategy.hpp"

namespace {

using namespace remat;

struct Setup {
    GpuSpec gpu = load_gpu("h100-80gb");
    std::vector<Chain> chains;
    PlanContext ctx;
    Setup() {
        for (const std::uint64_t layers : {1, 4, 13}) {
            ModelConfig m = load_model("tiny-llama");
            m.n_layers = layers;
            RunOptions o;
            o.seq = 32;
            chains.push_back(build_chain(m, o));
        }
        ctx.gpu = &gpu;
        ctx.capacity_bytes = gpu.capacity_bytes;
        ctx.reserve = default_reserve(gpu);
        ctx.budget_bytes = 64ull << 20;  // tight enough for greedy-budget and optimal to choose
    }
};

const Setup& setup() {
    static const Setup s;
    return s;
}

bool same(const StrategySpec& a, const StrategySpec& b) { return a.kind == b.kind && a.n == b.n; }

void plan_each(const std::vector<StrategySpec>& specs) {
    const Setup& s = setup();
    for (const StrategySpec& spec : specs) {
        if (!same(parse_strategy(spec.name()), spec))
            remat::fuzz::finding(
                fmt::format("strategy '{}' does not parse back to itself", spec.name()));
        for (const Chain& chain : s.chains) {
            remat::fuzz::rejects_only_with_input_errors([&] {
                validate_strategy(spec, chain.n_blocks());
                const Plan plan = make_plan(chain, spec, s.ctx);
                if (plan.keeps.size() != chain.stages.size())
                    remat::fuzz::finding(fmt::format("'{}' on {} blocks: {} keeps for {} stages",
                                                     spec.name(), chain.n_blocks(),
                                                     plan.keeps.size(), chain.stages.size()));
                (void)simulate(chain, plan, *s.ctx.gpu, s.ctx.reserve, s.ctx.time_model);
            });
        }
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string text(remat::fuzz::as_text(data, size));
    std::vector<StrategySpec> list;
    bool listed = false;
    remat::fuzz::rejects_only_with_input_errors([&] {
        list = parse_strategy_list(text);
        listed = true;
    });
    if (listed) {
        plan_each(list);
        // Each comma-separated item of an accepted list (other than "all") is itself a strategy.
        if (text != "all") {
            std::size_t start = 0, k = 0;
            for (;; ++k) {
                const std::size_t comma = text.find(',', start);
                const std::string item =
                    text.substr(start, comma == std::string::npos ? comma : comma - start);
                remat::fuzz::rejects_only_with_input_errors([&] {
                    if (!same(parse_strategy(item), list.at(k)))
                        remat::fuzz::finding(
                            fmt::format("item {} of '{}' parses differently alone", k, text));
                });
                if (comma == std::string::npos) break;
                start = comma + 1;
            }
        }
    }
    remat::fuzz::rejects_only_with_input_errors([&] { plan_each({parse_strategy(text)}); });
    return 0;
}
