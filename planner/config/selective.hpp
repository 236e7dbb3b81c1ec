// Megatron's selective recomputation (Korthikanti et al. 2022) as one rule, for the planner's op
// graphs (planner/chain) and the runtime's stage programs (runtime/executor): F_sel keeps every
// storage saved for backward except those an attention-core op produces and only attention-core
// ops save; R_sel recomputes those from the core's inputs, so F_sel keeps the inputs too, even
// where only core ops read them (the fused qkv output that eager attention copies into q, k, v).
// It sees storages and the ops over them, not sizes: each side counts its own bytes.
//
//   std::vector<SelectiveOp> ops = ...;     // per op, the storages it reads, writes and saves
//   SelectiveSets s = selective_sets(n_storages, ops);
//   s.dropped[k]                            // F_sel drops storage k and R_sel brings it back
//   s.kept[k]                               // F_sel keeps storage k
#pragma once
#include <cstddef>
#include <vector>

namespace remat {

struct SelectiveOp {
    bool attention_core = false;
    std::vector<std::size_t> inputs, outputs, saved;  // storages
};

struct SelectiveSets {
    std::vector<bool> kept, dropped;  // by storage
};

// never_kept: storages F_sel keeps no copy of, saved or not (the planner's shared rotary
// tables, made once per step by the embedding stage); empty: none.
SelectiveSets selective_sets(std::size_t n_storages, const std::vector<SelectiveOp>& ops,
                             const std::vector<bool>& never_kept = {});

}  // namespace remat
