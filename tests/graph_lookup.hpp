// Finding an op of a stage graph by name, for tests that check what one op saves.
#pragma once
#include <string>

#include "planner/graph/graph.hpp"

namespace remat::test {

inline const Op* find_op(const StageGraph& g, const std::string& name) {
    for (OpVertex v : g.order())
        if (g.op(v).name == name) return &g.op(v);
    return nullptr;
}

}  // namespace remat::test
