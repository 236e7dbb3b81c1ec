#include "planner/graph/stage_request.hpp"

#include <fmt/format.h>

#include <cmath>

#include "planner/config/checked.hpp"
#include "planner/config/error.hpp"

namespace remat {

std::vector<std::uint64_t> expert_tokens(const StageRequest& r) {
    const ModelConfig& m = *r.model;
    const std::uint64_t E = m.n_experts, k = m.experts_per_token;
    if (E == 0) return {};
    if (!r.expert_counts.empty()) {
        if (r.expert_counts.size() != E)
            throw InputError(fmt::format("{} expert token counts for a model with {} experts",
                                         r.expert_counts.size(), E));
        return r.expert_counts;
    }
    const std::uint64_t T = checked_mul(r.batch, r.seq), routed = checked_mul(T, k);
    const double c = r.moe_capacity_factor;
    const double most = static_cast<double>(E) / static_cast<double>(k);
    if (!(c >= 1.0) || c > most)
        throw InputError(fmt::format(
            "{} {} must be between 1 (balanced routing) and {} (experts / experts per token: an "
            "expert takes a token at most once)",
            named(Input::moe_capacity_factor), c, most));
    std::vector<std::uint64_t> n(E, routed / E);
    for (std::uint64_t e = 0; e < routed % E; ++e) ++n[e];
    if (c > 1.0) {
        // The busiest expert gets ceil(c * T * k / E) tokens (at most T), the others share the
        // rest evenly.
        const auto busiest = std::min<std::uint64_t>(
            T, static_cast<std::uint64_t>(
                   std::ceil(c * static_cast<double>(routed) / static_cast<double>(E))));
        n[0] = busiest;
        const std::uint64_t rest = routed - busiest, others = E - 1;
        for (std::uint64_t e = 1; e < E; ++e)
            n[e] = rest / others + (e - 1 < rest % others ? 1 : 0);
    }
    return n;
}

std::string_view stage_kind_name(StageKind k) {
    switch (k) {
        case StageKind::embedding:
            return "embedding";
        case StageKind::block:
            return "block";
        case StageKind::norm:
            return "norm";
        case StageKind::head:
            return "head";
    }
    return "?";
}

}  // namespace remat
