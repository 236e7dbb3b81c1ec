// The `remat` profile's stages (planner/profile_remat.cpp): what remat's own runtime saves.
#pragma once
#include <cstdint>

#include "planner/graph.hpp"
#include "planner/model.hpp"
#include "planner/options.hpp"
#include "planner/profiles.hpp"

namespace remat {

// Builds stage `kind` of model `m` into `g` (finished) for the runtime's op decomposition.
void build_remat_stage(StageGraph& g, StageKind kind, const ModelConfig& m, std::uint64_t batch,
                       std::uint64_t seq, Precision precision);

}  // namespace remat
