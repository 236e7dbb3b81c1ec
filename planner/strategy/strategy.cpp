#include "planner/strategy/strategy.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <memory>

#include "planner/config/error.hpp"
#include "planner/simulate/simulate.hpp"
#include "planner/strategy/chain_costs.hpp"
#include "planner/strategy/optimal.hpp"

namespace remat {

std::string StrategySpec::name() const {
    switch (kind) {
        case StrategyKind::none:
            return "none";
        case StrategyKind::full:
            return "full";
        case StrategyKind::every_n:
            return fmt::format("every-{}", n);
        case StrategyKind::segments_k:
            return fmt::format("segments-{}", n);
        case StrategyKind::sqrt:
            return "sqrt";
        case StrategyKind::greedy_budget:
            return "greedy-budget";
        case StrategyKind::selective:
            return "selective";
        case StrategyKind::optimal:
            return "optimal";
    }
    return "?";
}

namespace {

std::uint64_t parse_count(const std::string& text, const std::string& whole) {
    const auto v = decimal_count(text);
    if (!v || *v == 0)
        throw InputError(
            fmt::format("strategy {}: the count must be a positive decimal integer (every-N and "
                        "segments-K with 1 <= N, K <= "
                        "number of blocks)",
                        quote(whole)));
    return *v;
}

}  // namespace

StrategySpec parse_strategy(const std::string& text) {
    if (text == "none") return {StrategyKind::none, 0};
    if (text == "full") return {StrategyKind::full, 0};
    if (text == "sqrt") return {StrategyKind::sqrt, 0};
    if (text == "greedy-budget") return {StrategyKind::greedy_budget, 0};
    if (text == "selective") return {StrategyKind::selective, 0};
    if (text == "optimal") return {StrategyKind::optimal, 0};
    if (text.rfind("every-", 0) == 0)
        return {StrategyKind::every_n, parse_count(text.substr(6), text)};
    if (text.rfind("segments-", 0) == 0)
        return {StrategyKind::segments_k, parse_count(text.substr(9), text)};
    throw_unknown(
        "strategy", text,
        {"none", "full", "every-N", "segments-K", "sqrt", "greedy-budget", "selective", "optimal"});
}

std::vector<StrategySpec> all_strategies() {
    return {{StrategyKind::none, 0},          {StrategyKind::full, 0},
            {StrategyKind::every_n, 2},       {StrategyKind::every_n, 4},
            {StrategyKind::sqrt, 0},          {StrategyKind::segments_k, 4},
            {StrategyKind::greedy_budget, 0}, {StrategyKind::selective, 0},
            {StrategyKind::optimal, 0}};
}

std::vector<StrategySpec> parse_strategy_list(const std::string& text) {
    if (text == "all") return all_strategies();
    std::vector<StrategySpec> out;
    std::size_t start = 0;
    while (start <= text.size()) {
        const std::size_t comma = text.find(',', start);
        const std::string item =
            text.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
        if (item.empty())
            throw InputError(fmt::format("{} {}: empty name in the list", named(Input::strategies),
                                         quote(text)));
        if (item == "all")
            throw InputError(named(Input::strategies) +
                             ": 'all' cannot be combined with other names");
        out.push_back(parse_strategy(item));
        if (comma == std::string::npos) break;
        start = comma + 1;
    }
    return out;
}

bool strategy_applies(const StrategySpec& s, std::uint64_t n_blocks) {
    return (s.kind != StrategyKind::segments_k && s.kind != StrategyKind::every_n) ||
           s.n <= n_blocks;
}

void validate_strategy(const StrategySpec& s, std::uint64_t n_blocks) {
    // One rule for both counts: every-N past the last block would checkpoint block 0 alone,
    // which is every-L; segments-K past it would make empty segments.
    if (!strategy_applies(s, n_blocks))
        throw InputError(fmt::format(
            "strategy '{}': the model has {} blocks; use {} with 1 <= {} <= {}", s.name(), n_blocks,
            s.kind == StrategyKind::every_n ? "every-N" : "segments-K",
            s.kind == StrategyKind::every_n ? "N" : "K", n_blocks));
}

std::vector<StrategySpec> strategies_for(const std::string& text, std::uint64_t n_blocks) {
    std::vector<StrategySpec> specs = parse_strategy_list(text);
    if (text == "all")
        std::erase_if(specs, [&](const StrategySpec& s) { return !strategy_applies(s, n_blocks); });
    for (const StrategySpec& s : specs) validate_strategy(s, n_blocks);
    return specs;
}

namespace {

std::vector<Keep> keeps_for_blocks(const Chain& c, const std::vector<Keep>& block_keeps) {
    std::vector<Keep> keeps(c.stages.size(), Keep::all);
    for (std::size_t b = 0; b < block_keeps.size(); ++b) keeps[b + 1] = block_keeps[b];
    return keeps;
}

// K segments of consecutive blocks, as even as possible; only segment inputs are kept.
std::vector<Keep> segments(std::uint64_t n_blocks, std::uint64_t k) {
    std::vector<Keep> keeps(n_blocks, Keep::none);
    for (std::uint64_t s = 0; s < k; ++s) keeps[s * n_blocks / k] = Keep::input;
    return keeps;
}

Plan finish(const Chain& c, std::string name, std::vector<Keep> block_keeps, bool offload) {
    Plan p;
    p.strategy = std::move(name);
    p.keeps = keeps_for_blocks(c, block_keeps);
    p.schedule = schedule_from_keeps(p.keeps, offload);
    return p;
}

Plan plan_heuristic(const Chain& c, const StrategySpec& spec, const PlanContext& ctx);

Plan plan_optimal(const Chain& c, const PlanContext& ctx) {
    const std::uint64_t budget = ctx.budget_bytes.value_or(ctx.capacity_bytes);
    const std::uint64_t allocator = allocator_budget(ctx.reserve, budget);
    const ChainCosts costs = chain_costs(c, *ctx.gpu, ctx.time_model);
    const std::uint64_t keep_all = keep_all_need(costs);
    const OptimalOptions options{ctx.memory_slots, ctx.offload_checkpoints, keep_all};
    const auto t0 = std::chrono::steady_clock::now();
    std::uint64_t cap = allocator > costs.base ? std::min(allocator - costs.base, keep_all) : 0;
    auto dp = std::make_unique<OptimalPlanner>(costs, cap, options, ctx.progress);
    std::optional<std::size_t> pick = dp->fastest_within(allocator);
    const bool fits = pick.has_value();
    if (!fits) {  // nothing fits: the leanest schedule, so that the plan says by how much
        dp = std::make_unique<OptimalPlanner>(costs, keep_all, options, ctx.progress);
        pick = 0;
    }
    const double solve_s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    Plan p;
    p.strategy = "optimal";
    p.schedule = dp->schedule_of(*pick);
    const FrontierPoint& point = dp->frontier()[*pick];
    p.optimal = OptimalInfo{budget,
                            fits,
                            point.allocator_peak_bytes,
                            point.step_time_s,
                            dp->frontier().size(),
                            dp->slot_bytes(),
                            solve_s,
                            {}};
    // Incumbents: every heuristic's schedule, replayed op by op. Where memory slots thinned the
    // frontier, or the DP's cast model over-counts (DDP + autocast), one may fit and be faster;
    // the answer is then that schedule, so optimal is never worse than a heuristic at its peak.
    bool best_fits = fits;
    double best = point.step_time_s;
    // Sums over the stages in another order differ by rounding: about n ulps (1e-13 at 3,000
    // stages). Within that a heuristic is a tie, not faster.
    const double tie = std::max(
        1e-12, 8.0 * static_cast<double>(c.stages.size()) * std::numeric_limits<double>::epsilon());
    std::uint64_t best_peak = point.allocator_peak_bytes;
    for (const StrategySpec& h : all_strategies()) {
        if (h.kind == StrategyKind::optimal) continue;
        if (!strategy_applies(h, c.n_blocks())) continue;
        // torch 1.13 has no selective activation checkpointing (chain_costs.cpp, has_core).
        if (h.kind == StrategyKind::selective && c.options.torch == TorchFlavor::cpu_1_13) continue;
        for (bool off : {false, true}) {
            if (off && !ctx.offload_checkpoints) continue;
            PlanContext hctx = ctx;
            hctx.offload_checkpoints = off;
            hctx.budget_bytes = budget;
            Plan hp = plan_heuristic(c, h, hctx);
            SimResult r;
            try {
                r = simulate(c, hp, *ctx.gpu, ctx.reserve, ctx.time_model);
            } catch (const SizeOverflow&) {
                continue;  // a heuristic whose peak cannot be counted is no incumbent
            }
            const bool h_fits = r.peak_bytes <= budget;
            // Compared by compute time, the DP's objective (communication is the replay's).
            const bool better = h_fits ? !best_fits || r.compute_step_time_s < best * (1 - tie)
                                       : !best_fits && r.allocator_peak_bytes < best_peak;
            if (!better) continue;
            best_fits = h_fits;
            best = r.compute_step_time_s;
            best_peak = r.allocator_peak_bytes;
            p.optimal->fits = h_fits;
            p.schedule = std::move(hp.schedule);
            p.optimal->allocator_peak_bytes = r.allocator_peak_bytes;
            p.optimal->step_time_s = r.compute_step_time_s;
            p.optimal->incumbent = off ? hp.strategy + " (offloaded)" : hp.strategy;
        }
    }
    p.keeps = keeps_of(p.schedule, c.stages.size());
    return p;
}

}  // namespace

std::uint64_t allocator_budget(const Reserve& r, std::uint64_t budget) {
    // peak_bytes = A + reserve_bytes(A) grows with A: the largest A within budget, by bisection.
    std::uint64_t lo = 0, hi = budget;
    if (hi + reserve_bytes(r, hi) <= budget) return hi;
    if (reserve_bytes(r, 0) > budget) return 0;
    while (hi - lo > 1) {
        const std::uint64_t mid = lo + (hi - lo) / 2;
        (mid + reserve_bytes(r, mid) <= budget ? lo : hi) = mid;
    }
    return lo;
}

Plan make_plan(const Chain& c, const StrategySpec& spec, const PlanContext& ctx) {
    validate_strategy(spec, c.n_blocks());
    // A forward under no_grad keeps nothing for a backward: every strategy is the same one.
    if (c.options.train == Training::frozen) {
        Plan p;
        p.strategy = "forward only";
        p.keeps.assign(c.stages.size(), Keep::none);
        for (std::size_t i = 0; i < c.stages.size(); ++i)
            p.schedule.actions.push_back(
                {ActionKind::F_none, static_cast<std::uint32_t>(i), false, false});
        return p;
    }
    if (spec.kind == StrategyKind::optimal) return plan_optimal(c, ctx);
    return plan_heuristic(c, spec, ctx);
}

namespace {

Plan plan_heuristic(const Chain& c, const StrategySpec& spec, const PlanContext& ctx) {
    const std::uint64_t L = c.n_blocks();
    const bool off = ctx.offload_checkpoints;
    switch (spec.kind) {
        case StrategyKind::optimal:
            break;
        case StrategyKind::none:
            return finish(c, spec.name(), std::vector<Keep>(L, Keep::all), off);
        case StrategyKind::full:
            return finish(c, spec.name(), std::vector<Keep>(L, Keep::input), off);
        case StrategyKind::selective:
            return finish(c, spec.name(), std::vector<Keep>(L, Keep::selective), off);
        case StrategyKind::every_n: {
            // As the seeds' code: `if i % N == 0: x = checkpoint(layer, x) else: x = layer(x)`.
            std::vector<Keep> k(L, Keep::all);
            for (std::uint64_t b = 0; b < L; b += spec.n) k[b] = Keep::input;
            return finish(c, spec.name(), k, off);
        }
        case StrategyKind::segments_k:
            return finish(c, spec.name(), segments(L, spec.n), off);
        case StrategyKind::sqrt: {
            // Chen et al. 2016: segments of ceil(sqrt(L)) blocks.
            const auto len =
                static_cast<std::uint64_t>(std::ceil(std::sqrt(static_cast<double>(L))));
            std::vector<Keep> k(L, Keep::none);
            for (std::uint64_t b = 0; b < L; b += len) k[b] = Keep::input;
            return finish(c, spec.name(), k, off);
        }
        case StrategyKind::greedy_budget: {
            // After Chen et al.'s greedy pass: walk the blocks in forward order and store each
            // block whole while the running memory stays within the budget; once storing the
            // next block would pass it, checkpoint that block instead. The running memory is
            // the simulated peak, so the plan's own peak is checked, not estimated.
            const std::uint64_t budget = ctx.budget_bytes.value_or(ctx.capacity_bytes);
            std::vector<Keep> k(L, Keep::input);
            auto peak_of = [&](const std::vector<Keep>& keeps) {
                return simulate(c, finish(c, spec.name(), keeps, off), *ctx.gpu, ctx.reserve,
                                ctx.time_model)
                    .peak_bytes;
            };
            if (peak_of(k) <= budget) {
                // Largest prefix of stored blocks that fits; peaks grow with the prefix.
                std::uint64_t lo = 0, hi = L;
                while (lo < hi) {
                    const std::uint64_t mid = (lo + hi + 1) / 2;
                    std::vector<Keep> trial(L, Keep::input);
                    for (std::uint64_t b = 0; b < mid; ++b) trial[b] = Keep::all;
                    if (peak_of(trial) <= budget)
                        lo = mid;
                    else
                        hi = mid - 1;
                }
                for (std::uint64_t b = 0; b < lo; ++b) k[b] = Keep::all;
            }
            return finish(c, spec.name(), k, off);
        }
    }
    return {};
}

}  // namespace

}  // namespace remat
