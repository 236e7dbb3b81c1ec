#include "planner/config/selective.hpp"

namespace remat {

SelectiveSets selective_sets(std::size_t n_storages, const std::vector<SelectiveOp>& ops,
                             const std::vector<bool>& never_kept) {
    const std::size_t n = n_storages;
    auto excluded = [&](std::size_t s) { return !never_kept.empty() && never_kept[s]; };
    std::vector<bool> core_made(n, false), saved_outside(n, false), saved(n, false);
    for (const SelectiveOp& op : ops) {
        for (std::size_t s : op.saved) saved[s] = true;
        if (op.attention_core)
            for (std::size_t s : op.outputs) core_made[s] = true;
        else
            for (std::size_t s : op.saved) saved_outside[s] = true;
    }
    SelectiveSets sets{std::vector<bool>(n, false), std::vector<bool>(n, false)};
    for (std::size_t s = 0; s < n; ++s) {
        sets.dropped[s] = core_made[s] && !saved_outside[s];
        sets.kept[s] = saved[s] && !sets.dropped[s] && !excluded(s);
    }
    for (const SelectiveOp& op : ops)
        if (op.attention_core)
            for (std::size_t s : op.inputs)
                if (!core_made[s] && !excluded(s)) sets.kept[s] = true;
    return sets;
}

}  // namespace remat
