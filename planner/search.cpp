#include "planner/search.hpp"

namespace remat {

Evaluation evaluate(const Question& q, const StrategySpec& spec) {
    Evaluation e{build_chain(q.model, q.options), {}, {}, false};
    PlanContext ctx = q.context;
    ctx.gpu = &q.gpu;
    e.plan = make_plan(e.chain, spec, ctx);
    e.result = simulate(e.chain, e.plan, q.gpu, ctx.reserve, ctx.time_model);
    e.fits = e.result.peak_bytes <= ctx.capacity_bytes;
    return e;
}

MaxBatch max_micro_batch(const Question& q, const StrategySpec& spec) {
    MaxBatch out;
    out.strategy = spec;
    Question trial = q;
    auto at = [&](std::uint64_t b) {
        trial.options.micro_batch = b;
        ++out.evaluations;
        return evaluate(trial, spec);
    };
    Evaluation best = at(1);
    if (!best.fits) {
        out.peak_bytes = best.result.peak_bytes;
        return out;
    }
    // Doubling, then bisection on (lo fits, hi does not).
    std::uint64_t lo = 1, hi = 2;
    constexpr std::uint64_t limit = std::uint64_t{1} << 24;
    for (;;) {
        Evaluation e = at(hi);
        if (!e.fits) break;
        lo = hi;
        best = std::move(e);
        if (hi >= limit) break;
        hi *= 2;
    }
    while (hi - lo > 1) {
        const std::uint64_t mid = lo + (hi - lo) / 2;
        Evaluation e = at(mid);
        if (e.fits) {
            lo = mid;
            best = std::move(e);
        } else {
            hi = mid;
        }
    }
    out.max_micro_batch = lo;
    out.peak_bytes = best.result.peak_bytes;
    out.tokens_per_s = best.result.tokens_per_s;
    return out;
}

}  // namespace remat
