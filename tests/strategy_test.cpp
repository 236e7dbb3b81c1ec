// Strategies and their schedules.
#include "planner/strategy/strategy.hpp"

#include <doctest/doctest.h>

#include "planner/config/error.hpp"
#include "planner/simulate/simulate.hpp"

using namespace remat;

namespace {
Chain tiny(std::uint64_t layers) {
    ModelConfig m = load_model("tiny-gpt2");
    m.n_layers = layers;
    RunOptions o;
    o.seq = 64;
    return build_chain(m, o);
}
PlanContext context(const GpuSpec& gpu) {
    PlanContext ctx;
    ctx.gpu = &gpu;
    ctx.reserve = default_reserve(gpu);
    ctx.capacity_bytes = gpu.capacity_bytes;
    return ctx;
}
std::vector<Keep> blocks(const Plan& p) { return {p.keeps.begin() + 1, p.keeps.end() - 2}; }
}  // namespace

TEST_SUITE("strategy") {
    TEST_CASE("strategy::parse_strategy validates names and ranges") {
        CHECK(parse_strategy("every-3").n == 3);
        CHECK(parse_strategy("segments-2").kind == StrategyKind::segments_k);
        CHECK_THROWS_AS(parse_strategy("every-0"), InputError);
        CHECK_THROWS_AS(parse_strategy("every-x"), InputError);
        CHECK_THROWS_AS(parse_strategy("sqr"), InputError);
        CHECK_THROWS_AS(validate_strategy(parse_strategy("segments-9"), 8), InputError);
        CHECK_NOTHROW(validate_strategy(parse_strategy("segments-8"), 8));
        CHECK(parse_strategy_list("all").size() == 9);
        CHECK(parse_strategy_list("all").back().kind == StrategyKind::optimal);
        CHECK(parse_strategy_list("none,sqrt").size() == 2);
        CHECK_THROWS_AS(parse_strategy_list("none,,sqrt"), InputError);
    }

    TEST_CASE("strategy::make_plan keeps per strategy") {
        const GpuSpec gpu = load_gpu("h100-80gb");
        const PlanContext ctx = context(gpu);
        const Chain c = tiny(9);
        using K = Keep;
        CHECK(blocks(make_plan(c, parse_strategy("none"), ctx)) == std::vector<K>(9, K::all));
        CHECK(blocks(make_plan(c, parse_strategy("full"), ctx)) == std::vector<K>(9, K::input));
        CHECK(blocks(make_plan(c, parse_strategy("every-4"), ctx)) ==
              std::vector<K>{K::input, K::all, K::all, K::all, K::input, K::all, K::all, K::all,
                             K::input});
        // sqrt(9) = 3: three segments of three blocks.
        CHECK(blocks(make_plan(c, parse_strategy("sqrt"), ctx)) ==
              std::vector<K>{K::input, K::none, K::none, K::input, K::none, K::none, K::input,
                             K::none, K::none});
        // sqrt(10) -> 4: segments of 4, 4 and 2 blocks.
        CHECK(blocks(make_plan(tiny(10), parse_strategy("sqrt"), ctx)) ==
              std::vector<K>{K::input, K::none, K::none, K::none, K::input, K::none, K::none,
                             K::none, K::input, K::none});
        CHECK(blocks(make_plan(c, parse_strategy("segments-2"), ctx)) ==
              std::vector<K>{K::input, K::none, K::none, K::none, K::input, K::none, K::none,
                             K::none, K::none});
        CHECK(blocks(make_plan(c, parse_strategy("selective"), ctx)) ==
              std::vector<K>(9, K::selective));
        // Embedding, final norm and head are never checkpointed.
        const Plan p = make_plan(c, parse_strategy("full"), ctx);
        CHECK(p.keeps.front() == K::all);
        CHECK(p.keeps.back() == K::all);
    }

    TEST_CASE("strategy::schedule_from_keeps recomputes a segment whole before its backwards") {
        const Schedule s = schedule_from_keeps({Keep::all, Keep::input, Keep::none, Keep::all});
        std::string text;
        for (const Action& a : s.actions) text += action_label(a) + " ";
        CHECK(text ==
              "F_all(0) F_ck(1) F_none(2) F_all(3) B(3) F_all(1)* F_all(2)* B(2) B(1) B(0) ");
        const Schedule sel = schedule_from_keeps({Keep::all, Keep::selective, Keep::all});
        text.clear();
        for (const Action& a : sel.actions) text += action_label(a) + " ";
        CHECK(text == "F_all(0) F_sel(1) F_all(2) B(2) R_sel(1)* B(1) B(0) ");
    }

    TEST_CASE("strategy::greedy-budget stores what fits and stays within the budget") {
        const GpuSpec gpu = load_gpu("h100-80gb");
        PlanContext ctx = context(gpu);
        RunOptions o;
        o.seq = 4096;
        o.micro_batch = 2;
        const Chain c = build_chain(load_model("llama2-7b"), o);
        const auto full =
            simulate(c, make_plan(c, parse_strategy("full"), ctx), gpu, ctx.reserve).peak_bytes;
        const auto none =
            simulate(c, make_plan(c, parse_strategy("none"), ctx), gpu, ctx.reserve).peak_bytes;
        REQUIRE(full < none);
        ctx.budget_bytes = full + (none - full) / 2;
        const Plan p = make_plan(c, parse_strategy("greedy-budget"), ctx);
        const auto peak = simulate(c, p, gpu, ctx.reserve).peak_bytes;
        CHECK(peak <= *ctx.budget_bytes);
        const auto stored = std::count(p.keeps.begin() + 1, p.keeps.end() - 2, Keep::all);
        CHECK(stored > 0);
        CHECK(stored < static_cast<long>(c.n_blocks()));
    }
}
