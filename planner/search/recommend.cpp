#include "planner/search/recommend.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "planner/config/checked.hpp"
#include "planner/config/error.hpp"

namespace remat {

namespace {

// The divisors of n up to `upto`, ascending: at most `upto` trial divisions, whatever n (a
// global batch near 2^62 has divisors far beyond any micro-batch that fits).
std::vector<std::uint64_t> divisors(std::uint64_t n, std::uint64_t upto) {
    std::vector<std::uint64_t> out;
    for (std::uint64_t d = 1; d <= upto && d <= n; ++d)
        if (n % d == 0) out.push_back(d);
    return out;
}

// Every size up to 8, then steps of about 25%, and the limit itself.
std::vector<std::uint64_t> ladder(std::uint64_t limit) {
    std::vector<std::uint64_t> out;
    for (std::uint64_t b = 1; b <= std::min<std::uint64_t>(8, limit); ++b) out.push_back(b);
    for (double b = 10; b <= static_cast<double>(limit); b *= 1.25)
        out.push_back(static_cast<std::uint64_t>(std::llround(b)));
    if (out.empty() || out.back() != limit) out.push_back(limit);
    return out;
}

}  // namespace

Recommendation recommend(const Question& q, const RecommendOptions& options) {
    Recommendation out;
    out.budget_bytes = q.context.budget_bytes.value_or(q.context.capacity_bytes);
    const std::uint64_t W = q.options.world_size;
    std::uint64_t per_rank = 0;
    if (options.global_batch) {
        const std::uint64_t n = *options.global_batch;
        if (n == 0 || n % W != 0)
            throw InputError(
                fmt::format("{} {} must be a positive multiple of {} {} "
                            "(sequences per optimizer step over all ranks)",
                            named(Input::global_batch), n, named(Input::world_size), W));
        per_rank = n / W;
    }
    const bool can_offload = q.gpu.host_link_bandwidth > 0;
    struct Variant {
        StrategySpec spec;
        bool offload;
    };
    std::vector<Variant> variants;
    for (const StrategySpec& s : all_strategies()) {
        if (!strategy_applies(s, q.model.n_layers)) continue;
        variants.push_back({s, false});
        if (can_offload && s.kind != StrategyKind::none) variants.push_back({s, true});
    }

    // A size too large to count at a micro-batch above 1 does not fit (at 1 the question
    // itself is too large, and the error says so).
    auto at = [&](const Variant& v, std::uint64_t b) -> std::pair<std::optional<Candidate>, bool> {
        Question t = q;
        t.options.micro_batch = b;
        t.options.grad_accumulation = per_rank ? per_rank / b : q.options.grad_accumulation;
        t.context.offload_checkpoints = v.offload;
        t.context.budget_bytes = out.budget_bytes;
        ++out.evaluated;
        try {
            const Evaluation e = evaluate(t, v.spec);
            const SimResult& r = e.result;
            const double all = r.forward_flops + r.recompute_flops + r.backward_flops;
            Candidate c{v.spec,
                        v.offload,
                        b,
                        t.options.grad_accumulation,
                        r.peak_bytes,
                        r.step_time_s,
                        r.tokens_per_s,
                        all > 0 ? r.recompute_flops / all : 0,
                        e.plan.schedule,
                        {}};
            return {c, r.peak_bytes <= out.budget_bytes && host_fits(t, e.host_bytes)};
        } catch (const SizeOverflow&) {
            if (b == 1) throw;
            return {std::nullopt, false};
        }
    };

    // No micro-batch above the largest at which any schedule fits (optimal with offload where
    // the GPU has a host link, without gradient accumulation: the leanest of all candidates)
    // is worth trying: it bounds the walks and the divisors, whatever the memory or batch.
    Question lean = q;
    lean.context.offload_checkpoints = can_offload;
    if (per_rank) lean.options.grad_accumulation = 1;
    bool limit_reached = false;
    const std::uint64_t upper = largest_fitting(
        [&](std::uint64_t b) {
            ++out.evaluated;
            return plan_fits(lean, {StrategyKind::optimal, 0}, b, out.budget_bytes);
        },
        per_rank ? std::min(per_rank, max_search_micro_batch) : max_search_micro_batch,
        limit_reached);
    const std::vector<std::uint64_t> sizes = upper == 0 ? std::vector<std::uint64_t>{}
                                             : per_rank ? divisors(per_rank, upper)
                                                        : ladder(upper);

    for (std::size_t k = 0; k < variants.size(); ++k) {
        if (options.progress) options.progress(k, variants.size());
        const Variant& v = variants[k];
        // Peaks grow with the micro-batch: walk up until it stops fitting, then pin the
        // largest that fits by bisection (its tokens/s is often the best of the strategy).
        std::uint64_t fit = 0, over = 0;
        for (std::uint64_t b : sizes) {
            auto [c, fits] = at(v, b);
            if (!fits) {
                over = b;
                break;
            }
            out.ranked.push_back(*c);
            fit = b;
        }
        if (!per_rank && fit && over > fit + 1) {
            std::uint64_t lo = fit, hi = over;
            std::optional<Candidate> best;
            while (hi - lo > 1) {
                const std::uint64_t mid = lo + (hi - lo) / 2;
                auto [c, fits] = at(v, mid);
                if (fits) {
                    lo = mid;
                    best = std::move(c);
                } else {
                    hi = mid;
                }
            }
            if (best) out.ranked.push_back(*best);
        }
    }
    if (options.progress) options.progress(variants.size(), variants.size());
    std::stable_sort(out.ranked.begin(), out.ranked.end(),
                     [](const Candidate& a, const Candidate& b) {
                         if (a.tokens_per_s != b.tokens_per_s)
                             return a.tokens_per_s > b.tokens_per_s;
                         return a.peak_bytes < b.peak_bytes;
                     });
    // One entry per distinct configuration: a strategy that lands on another's schedule (the
    // optimum is often a heuristic's) is folded into the first, in all_strategies() order.
    std::vector<Candidate> distinct;
    for (Candidate& c : out.ranked) {
        auto same = std::find_if(distinct.begin(), distinct.end(), [&](const Candidate& d) {
            return d.micro_batch == c.micro_batch && d.grad_accumulation == c.grad_accumulation &&
                   d.schedule == c.schedule;
        });
        if (same == distinct.end()) {
            distinct.push_back(std::move(c));
        } else {
            const std::string name = c.strategy.name() + (c.offload ? " +offload" : "");
            if (std::find(same->same_as.begin(), same->same_as.end(), name) == same->same_as.end())
                same->same_as.push_back(name);
        }
    }
    out.ranked = std::move(distinct);
    return out;
}

}  // namespace remat
