#include "planner/search/pareto.hpp"

#include <algorithm>
#include <chrono>

#include "planner/strategy/chain_costs.hpp"
#include "planner/strategy/optimal.hpp"

namespace remat {

ParetoFrontier pareto_frontier(const Question& q, const ParetoProgress& progress) {
    ParetoFrontier out;
    const Chain chain = build_chain(q.model, q.options);
    const ChainCosts costs = chain_costs(chain, q.gpu, q.context.time_model);
    const std::uint64_t keep_all = keep_all_need(costs);
    const double tokens =
        static_cast<double>(q.options.sequences() * q.options.seq * q.options.grad_accumulation);
    auto point = [&](std::uint64_t allocator, double time, double rflops, std::string source) {
        return ParetoPoint{allocator + reserve_bytes(q.context.reserve, allocator),
                           allocator,
                           time,
                           rflops,
                           time > 0 ? tokens / time : 0,
                           std::move(source)};
    };

    const auto t0 = std::chrono::steady_clock::now();
    OptimalProgress solving;
    if (progress)
        solving = [&](std::size_t done, std::size_t total) { progress("solving", done, total); };
    const OptimalPlanner dp(costs, keep_all,
                            {q.context.memory_slots, q.context.offload_checkpoints, keep_all},
                            solving);
    out.solve_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    out.slot_bytes = dp.slot_bytes();
    std::vector<ParetoPoint> all;
    for (const FrontierPoint& p : dp.frontier())
        all.push_back(point(p.allocator_peak_bytes, p.step_time_s, p.recompute_flops, "optimal"));

    // The heuristics, replayed op by op (with and without offload where it is enabled).
    PlanContext ctx = q.context;
    ctx.gpu = &q.gpu;
    std::vector<std::pair<StrategySpec, bool>> heuristics;
    for (const StrategySpec& h : all_strategies()) {
        if (h.kind == StrategyKind::optimal) continue;
        if (!strategy_applies(h, chain.n_blocks())) continue;
        for (bool off : {false, true})
            if (!off || q.context.offload_checkpoints) heuristics.emplace_back(h, off);
    }
    for (std::size_t i = 0; i < heuristics.size(); ++i) {
        if (progress) progress("replaying", i, heuristics.size());
        const auto& [h, off] = heuristics[i];
        ctx.offload_checkpoints = off;
        const Plan plan = make_plan(chain, h, ctx);
        const SimResult r = simulate(chain, plan, q.gpu, ctx.reserve, ctx.time_model);
        all.push_back(point(r.allocator_peak_bytes, r.compute_step_time_s, r.recompute_flops,
                            off ? h.name() + " (offloaded)" : h.name()));
    }
    if (progress) progress("replaying", heuristics.size(), heuristics.size());

    // Non-dominated points: peak ascending, each strictly faster than every leaner one; the
    // DP's point first where a heuristic ties it.
    std::stable_sort(all.begin(), all.end(), [](const ParetoPoint& a, const ParetoPoint& b) {
        if (a.peak_bytes != b.peak_bytes) return a.peak_bytes < b.peak_bytes;
        return a.step_time_s < b.step_time_s;
    });
    for (ParetoPoint& p : all)
        if (out.points.empty() || p.step_time_s < out.points.back().step_time_s * (1 - 1e-12))
            out.points.push_back(std::move(p));
    return out;
}

}  // namespace remat
