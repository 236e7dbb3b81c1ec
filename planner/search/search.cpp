#include "planner/search/search.hpp"

#include <algorithm>
#include <optional>

#include "planner/config/checked.hpp"
#include "planner/strategy/chain_costs.hpp"
#include "planner/strategy/optimal.hpp"

namespace remat {

std::uint64_t ranks_per_node(const Question& q) {
    return std::min<std::uint64_t>(q.options.world_size,
                                   network_of(q.context.time_model, q.gpu).gpus_per_node);
}

std::uint64_t host_bytes_per_node(const Question& q, std::uint64_t host_bytes_per_rank) {
    return checked_mul(host_bytes_per_rank, ranks_per_node(q));
}

bool host_fits(const Question& q, std::uint64_t host_bytes_per_rank) {
    return !q.context.host_capacity_bytes ||
           host_bytes_per_node(q, host_bytes_per_rank) <= *q.context.host_capacity_bytes;
}

Evaluation evaluate(const Question& q, const StrategySpec& spec) {
    Evaluation e{build_chain(q.model, q.options), {}, {}, false};
    PlanContext ctx = q.context;
    ctx.gpu = &q.gpu;
    e.plan = make_plan(e.chain, spec, ctx);
    e.result = simulate(e.chain, e.plan, q.gpu, ctx.reserve, ctx.time_model);
    e.host_bytes = model_states(e.chain).host_bytes;
    e.fits = e.result.peak_bytes <= ctx.capacity_bytes && host_fits(q, e.host_bytes);
    return e;
}

namespace {

// Whether a strategy's plan at micro-batch b stays within `limit` bytes (plans budgeted at the
// limit), without the op-level replay: a heuristic's schedule replayed stage by stage
// (chain_costs' accounting gives the op-level replay's allocator peak on every schedule of the
// family, tests/chain_costs_test.cpp), and for optimal the DP within the budget, then the
// heuristics plan_optimal would take instead.
class FitTest {
  public:
    FitTest(const Question& q, std::uint64_t b, std::uint64_t limit) : q_(q) {
        Question t = q;
        t.options.micro_batch = b;
        chain_ = build_chain(t.model, t.options);
        // Keeping everything past 2^63 bytes cannot be counted stage by stage (chain_costs
        // checks that bound once); a heuristic's plan may still be, op by op.
        try {
            costs_ = chain_costs(chain_, q.gpu, q.context.time_model);
        } catch (const SizeOverflow&) {
            stage_level_ = false;
        }
        ctx_ = q.context;
        ctx_.gpu = &q_.gpu;
        ctx_.budget_bytes = limit;
        allocator_ = allocator_budget(ctx_.reserve, limit);
    }

    // The offloaded states do not depend on the micro-batch or the schedule.
    bool host_fits() const { return remat::host_fits(q_, model_states(chain_).host_bytes); }

    bool fits(const StrategySpec& spec) {
        // A forward only: one schedule, replayed op by op.
        if (chain_.options.train == Training::frozen)
            return simulate(chain_, make_plan(chain_, spec, ctx_), q_.gpu, ctx_.reserve,
                            ctx_.time_model)
                       .allocator_peak_bytes <= allocator_;
        switch (spec.kind) {
            case StrategyKind::optimal:
                return optimal_fits();
            // Greedy keeps a prefix of blocks whole when full recomputation fits its budget (the
            // limit) and is full recomputation otherwise: it fits exactly when full does.
            case StrategyKind::greedy_budget:
                return heuristic_fits({StrategyKind::full, 0}, ctx_.offload_checkpoints);
            default:
                return heuristic_fits(spec, ctx_.offload_checkpoints);
        }
    }

  private:
    bool heuristic_fits(StrategySpec spec, bool offload) {
        // every-N past the last block checkpoints block 0 alone, as every-L (plan_optimal's
        // incumbents include it on short models).
        if (spec.kind == StrategyKind::every_n)
            spec.n = std::min<std::uint64_t>(spec.n, chain_.n_blocks());
        PlanContext h = ctx_;
        h.offload_checkpoints = offload;
        const Plan p = make_plan(chain_, spec, h);
        if (!stage_level_)
            return simulate(chain_, p, q_.gpu, ctx_.reserve, ctx_.time_model)
                       .allocator_peak_bytes <= allocator_;
        return simulate_costs(costs_, p.schedule).allocator_peak_bytes <= allocator_;
    }

    // As plan_optimal decides (planner/strategy/strategy.cpp): the DP's fastest point within the
    // budget, else the heuristics' schedules replayed, with and without offload where it is
    // enabled.
    bool optimal_fits() {
        const bool off = ctx_.offload_checkpoints;
        // Full recomputation first: the leanest heuristic as a rule, and cheap.
        if (!stage_level_) throw_size_overflow();  // as plan_optimal's own chain_costs would
        if (heuristic_fits({StrategyKind::full, 0}, false) ||
            (off && heuristic_fits({StrategyKind::full, 0}, true)))
            return true;
        const std::uint64_t keep_all = keep_all_need(costs_);
        const std::uint64_t cap =
            allocator_ > costs_.base ? std::min(allocator_ - costs_.base, keep_all) : 0;
        const OptimalPlanner dp(costs_, cap, {ctx_.memory_slots, off, keep_all});
        if (dp.fastest_within(allocator_)) return true;
        for (const StrategySpec& h : all_strategies()) {
            if (h.kind == StrategyKind::optimal || h.kind == StrategyKind::full) continue;
            if (h.kind == StrategyKind::greedy_budget) continue;  // full, which did not fit
            if (!strategy_applies(h, chain_.n_blocks())) continue;
            for (bool o : {false, true}) {
                if (o && !off) continue;
                if (heuristic_fits(h, o)) return true;
            }
        }
        return false;
    }

    const Question& q_;
    Chain chain_;
    ChainCosts costs_;
    PlanContext ctx_;
    std::uint64_t allocator_ = 0;
    bool stage_level_ = true;
};

}  // namespace

bool plan_fits(const Question& q, const StrategySpec& spec, std::uint64_t micro_batch,
               std::uint64_t limit_bytes) {
    FitTest t(q, micro_batch, limit_bytes);
    return t.host_fits() && t.fits(spec);
}

std::uint64_t largest_fitting(const std::function<bool(std::uint64_t)>& fits, std::uint64_t limit,
                              bool& limit_reached) {
    auto at = [&](std::uint64_t b) {
        try {
            return fits(b);
        } catch (const SizeOverflow&) {
            if (b == 1) throw;
            return false;
        }
    };
    limit_reached = false;
    if (!at(1)) return 0;
    std::uint64_t lo = 1, hi = 2;
    for (;;) {
        if (hi > limit) {
            limit_reached = true;
            hi = limit + 1;
            break;
        }
        if (!at(hi)) break;
        lo = hi;
        hi *= 2;
    }
    if (limit_reached && lo < limit) {
        // Between the last doubling and the limit.
        if (at(limit)) return limit;
        limit_reached = false;
        hi = limit;
    }
    while (hi - lo > 1) {
        const std::uint64_t mid = lo + (hi - lo) / 2;
        (at(mid) ? lo : hi) = mid;
    }
    return lo;
}

MaxBatch max_micro_batch(const Question& q, const StrategySpec& spec) {
    MaxBatch out;
    out.strategy = spec;
    std::optional<Evaluation> answer;  // the plan and op-level replay at the answer (at 1 if none)
    auto evaluate_at = [&](std::uint64_t b) {
        Question t = q;
        t.options.micro_batch = b;
        ++out.evaluations;
        return evaluate(t, spec);
    };
    bool limit_reached = false;
    std::uint64_t b = 0;
    // The fits test without the op-level replay where it answers the same question.
    const bool fast =
        !q.context.budget_bytes || *q.context.budget_bytes == q.context.capacity_bytes;
    if (fast) {
        b = largest_fitting(
            [&](std::uint64_t m) {
                ++out.evaluations;
                return plan_fits(q, spec, m, q.context.capacity_bytes);
            },
            max_search_micro_batch, limit_reached);
        // The plan and replay at the answer; where they disagree with the fits test (or a size
        // the stage-level accounting counted does not count in the replay), the replay decides.
        try {
            answer = evaluate_at(std::max<std::uint64_t>(b, 1));
            if (answer->fits != (b > 0)) answer.reset();
        } catch (const SizeOverflow&) {
            answer.reset();
        }
    }
    if (!answer)
        b = largest_fitting(
            [&](std::uint64_t m) {
                Evaluation e = evaluate_at(m);
                const bool fits = e.fits;
                // The largest that fits so far (each one that fits raises the lower end), or 1.
                if (fits || m == 1) answer = std::move(e);
                return fits;
            },
            max_search_micro_batch, limit_reached);
    out.max_micro_batch = b;
    out.search_limit_reached = limit_reached;
    out.peak_bytes = answer->result.peak_bytes;
    out.tokens_per_s = b ? answer->result.tokens_per_s : 0;
    return out;
}

}  // namespace remat
