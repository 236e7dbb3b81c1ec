#include "planner/config/schedule.hpp"

#include <fmt/format.h>

#include <cassert>

namespace remat {

std::string_view action_kind_name(ActionKind k) {
    switch (k) {
        case ActionKind::F_all:
            return "F_all";
        case ActionKind::F_ck:
            return "F_ck";
        case ActionKind::F_none:
            return "F_none";
        case ActionKind::F_sel:
            return "F_sel";
        case ActionKind::R_sel:
            return "R_sel";
        case ActionKind::B:
            return "B";
    }
    return "?";
}

std::string action_label(const Action& a) {
    return fmt::format("{}({}){}{}", action_kind_name(a.kind), a.stage, a.recompute ? "*" : "",
                       a.offload ? "^" : "");
}

std::string_view keep_name(Keep k) {
    switch (k) {
        case Keep::all:
            return "all";
        case Keep::selective:
            return "selective";
        case Keep::input:
            return "input";
        case Keep::none:
            return "none";
    }
    return "?";
}

bool offloads(const Schedule& s) {
    for (const Action& a : s.actions)
        if (a.offload) return true;
    return false;
}

std::vector<Keep> keeps_of(const Schedule& s, std::size_t n) {
    std::vector<Keep> keeps(n, Keep::all);
    for (const Action& a : s.actions) {
        if (a.kind == ActionKind::B) break;
        switch (a.kind) {
            case ActionKind::F_all:
                keeps[a.stage] = Keep::all;
                break;
            case ActionKind::F_sel:
                keeps[a.stage] = Keep::selective;
                break;
            case ActionKind::F_ck:
                keeps[a.stage] = Keep::input;
                break;
            case ActionKind::F_none:
                keeps[a.stage] = Keep::none;
                break;
            default:
                break;
        }
    }
    return keeps;
}

Schedule schedule_from_keeps(const std::vector<Keep>& keeps, bool offload) {
    Schedule s;
    const auto n = static_cast<std::uint32_t>(keeps.size());
    for (std::uint32_t i = 0; i < n; ++i) {
        static constexpr ActionKind forward[] = {ActionKind::F_all, ActionKind::F_sel,
                                                 ActionKind::F_ck, ActionKind::F_none};
        s.actions.push_back(
            {forward[static_cast<int>(keeps[i])], i, false, offload && keeps[i] == Keep::input});
    }
    for (std::uint32_t i = n; i-- > 0;) {
        if (keeps[i] == Keep::all) {
            s.actions.push_back({ActionKind::B, i, false});
        } else if (keeps[i] == Keep::selective) {
            s.actions.push_back({ActionKind::R_sel, i, true});
            s.actions.push_back({ActionKind::B, i, false});
        } else {
            // Segment [start, i]: a checkpoint at start, nothing kept after it.
            std::uint32_t start = i;
            while (keeps[start] == Keep::none) {
                assert(start > 0 && "a segment needs a checkpoint at its start");
                --start;
            }
            for (std::uint32_t j = start; j <= i; ++j)
                s.actions.push_back({ActionKind::F_all, j, true});
            for (std::uint32_t j = i + 1; j-- > start;)
                s.actions.push_back({ActionKind::B, j, false});
            i = start;
        }
    }
    return s;
}

}  // namespace remat
