#include "planner/config/fsdp_units.hpp"

#include <algorithm>
#include <cassert>
#include <utility>

namespace remat {

namespace {
// A few units at most: insertion sort, no allocation.
void sort_small(std::vector<std::size_t>& v) {
    for (std::size_t k = 1; k < v.size(); ++k)
        for (std::size_t j = k; j > 0 && v[j - 1] > v[j]; --j) std::swap(v[j - 1], v[j]);
}
}  // namespace

UnitPolicy::UnitPolicy(const Schedule& schedule, std::vector<std::size_t> unit_of_stage,
                       std::size_t n_units, UnitFlags flags)
    : schedule_(schedule), unit_of_stage_(std::move(unit_of_stage)), flags_(flags) {
    const std::size_t n = unit_of_stage_.size();
    first_stage_.assign(n_units, n);
    for (std::size_t i = n; i-- > 0;) {
        assert(unit_of_stage_[i] < n_units && "a stage's unit is one of the units");
        first_stage_[unit_of_stage_[i]] = i;
    }
    // The stage of the first backward after each action, in one sweep from the end.
    const auto& acts = schedule_.actions;
    next_backward_.resize(acts.size());
    std::size_t nb = n;
    for (std::size_t a = acts.size(); a-- > 0;) {
        next_backward_[a] = nb;
        if (acts[a].kind == ActionKind::B) nb = acts[a].stage;
    }
    gathered_.assign(n_units, 0);
    forwarded_.assign(n, 0);
    backwarded_.assign(n, 0);
    open_in_unit_.assign(n_units, 0);
}

void UnitPolicy::free_unit(std::size_t u) {
    if (!gathered_[u]) return;
    gathered_[u] = 0;
    changes_.freed.push_back(u);
}

void UnitPolicy::gather_unit(std::size_t u) {
    if (gathered_[u]) return;
    gathered_[u] = 1;
    changes_.gathered.push_back(u);
}

const UnitChanges& UnitPolicy::start(std::size_t a) {
    changes_.freed.clear();
    changes_.gathered.clear();
    if (!flags_.gather_per_unit) return changes_;
    const Action& act = schedule_.actions[a];
    const std::size_t i = act.stage, n = unit_of_stage_.size();
    std::array<std::size_t, 3> small{};
    std::size_t small_n = 0;
    small[small_n++] = 0;  // the root unit: from the start of forward to the end of backward
    small[small_n++] = unit_of(i);
    if (act.kind == ActionKind::B) {
        if (i > 0) small[small_n++] = unit_of(i - 1);  // prefetch the previous unit
    } else if (!act.recompute) {
        if (i + 1 < n) small[small_n++] = unit_of(i + 1);  // prefetch the next unit
    } else if (next_backward_[a] < n) {
        small[small_n++] = unit_of(next_backward_[a]);  // the unit of the backward that follows
    }
    auto wanted = [&](std::size_t u) {
        for (std::size_t k = 0; k < small_n; ++k)
            if (small[k] == u) return true;
        return !flags_.reshard_after_forward && open_in_unit_[u] > 0;
    };
    for (std::size_t k = 0; k < wanted_small_n_; ++k)
        if (!wanted(wanted_small_[k])) free_unit(wanted_small_[k]);
    for (std::size_t u : crossed_)
        if (!wanted(u)) free_unit(u);
    for (std::size_t k = 0; k < small_n; ++k) gather_unit(small[k]);
    for (std::size_t u : crossed_)
        if (wanted(u)) gather_unit(u);
    crossed_.clear();
    wanted_small_ = small;
    wanted_small_n_ = small_n;
    sort_small(changes_.freed);
    sort_small(changes_.gathered);
    return changes_;
}

// A stage's forward has run and its backward not yet: without resharding after forward, its
// unit stays gathered.
void UnitPolicy::open(std::size_t stage, bool is_open) {
    if (!flags_.gather_per_unit || flags_.reshard_after_forward) return;
    const std::size_t u = unit_of(stage);
    const bool before = open_in_unit_[u] > 0;
    if (is_open)
        ++open_in_unit_[u];
    else
        --open_in_unit_[u];
    if (before != (open_in_unit_[u] > 0)) crossed_.push_back(u);
}

void UnitPolicy::finish(std::size_t a) {
    const Action& act = schedule_.actions[a];
    const std::size_t i = act.stage;
    if (act.kind == ActionKind::R_sel) return;
    const bool was = forwarded_[i] && !backwarded_[i];
    (act.kind == ActionKind::B ? backwarded_ : forwarded_)[i] = 1;
    const bool now = forwarded_[i] && !backwarded_[i];
    if (was != now) open(i, now);
}

const UnitChanges& UnitPolicy::finish_step() {
    changes_.freed.clear();
    changes_.gathered.clear();
    for (std::size_t u = 0; u < gathered_.size(); ++u) free_unit(u);
    std::fill(forwarded_.begin(), forwarded_.end(), 0);
    std::fill(backwarded_.begin(), backwarded_.end(), 0);
    std::fill(open_in_unit_.begin(), open_in_unit_.end(), 0);
    crossed_.clear();
    wanted_small_n_ = 0;
    return changes_;
}

}  // namespace remat
