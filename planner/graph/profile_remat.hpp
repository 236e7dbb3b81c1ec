// The `remat` profile's stages (planner/graph/profile_remat.cpp): what remat's own runtime saves.
#pragma once
#include <cstdint>

#include "planner/config/model.hpp"
#include "planner/config/options.hpp"
#include "planner/graph/graph.hpp"
#include "planner/graph/stage_request.hpp"

namespace remat {

// The backend decides the ops' workspaces: the CPU's bf16 GEMMs stage fp32 copies; CUDA's
// GEMMs need none; each walks attention's S x S in its own scratch.
enum class RematBackend { cpu, cuda };

// Builds stage `kind` of model `m` into `g` (finished) for the runtime's op decomposition.
void build_remat_stage(StageGraph& g, StageKind kind, const ModelConfig& m, std::uint64_t batch,
                       std::uint64_t seq, Precision precision, RematBackend backend,
                       Attention attention);

}  // namespace remat
