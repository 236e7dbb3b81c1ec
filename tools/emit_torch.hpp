// `remat plan --emit torch`: the few lines of Python that apply a plan through the bridge
// (python/remat_torch), for people who paste them into their training script.
#pragma once
#include <string>

#include "planner/search/search.hpp"

namespace remat {

// The block runs the plan checkpoints, as remat_torch.segments() reads them from the JSON;
// a plan the bridge cannot apply (offloaded checkpoints, selective, a recomputed stage that is
// not a block) is an InputError naming what to change.
std::string torch_code(const Question& q, const Evaluation& e);

}  // namespace remat
