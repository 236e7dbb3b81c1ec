// The model as a chain of stages: embedding, block 0..L-1, final norm, head + loss. Identical
// blocks share one op graph. Per stage: input bytes x, bytes kept when everything is stored x̄,
// bytes kept under selective recomputation, FLOPs and parameters (its FSDP unit).
//
//   Chain c = build_chain(model, options);   // options.seq must be resolved
//   c.stages[1].all_bytes                    // x̄ of block 0
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "planner/config/model.hpp"
#include "planner/config/options.hpp"
#include "planner/config/schedule.hpp"
#include "planner/config/selective.hpp"
#include "planner/graph/graph.hpp"
#include "planner/graph/profiles.hpp"

namespace remat {

struct Stage {
    std::string name;  // "embedding", "block 3", "final norm", "head"
    StageKind kind = StageKind::block;
    std::size_t graph = 0;              // index into Chain::graphs
    std::uint64_t input_bytes = 0;      // x: the stage input, what a checkpoint keeps
    std::uint64_t all_bytes = 0;        // x̄: unique storages saved for backward
    std::uint64_t selective_bytes = 0;  // kept by F_sel (attention core dropped)
    std::uint64_t params = 0;           // parameters owned by this stage (the base's)
    // --train lora: the adapters' parameters (fp32, trained) and the frozen base's bytes as
    // stored (planner/config/finetune.hpp); 0 for full training.
    std::uint64_t adapter_params = 0;
    std::uint64_t frozen_bytes = 0;
    bool lora = false;
    // The parameters that get gradients and optimizer state.
    std::uint64_t trainable_params() const { return lora ? adapter_params : params; }
    double fwd_flops = 0, bwd_flops = 0;
    double core_fwd_flops = 0;  // the attention core's share (selective recompute)
};

struct Chain {
    ModelConfig model;
    RunOptions options;
    std::vector<StageGraph> graphs;
    std::vector<Stage> stages;
    // DPO with a reference model: its graphs, indexed as `graphs` (the blocks share one), and
    // its architecture (the policy's unless --ref-model).
    std::vector<StageGraph> reference_graphs;
    ModelConfig reference;
    bool has_reference_model() const {
        return options.recipe == Recipe::dpo && options.ref_logprobs == RefLogprobs::model;
    }
    // Under full training the reference is a second copy of the weights; under LoRA it is the
    // policy's base with the adapters disabled.
    bool reference_weights() const {
        return has_reference_model() && options.train == Training::full;
    }
    std::size_t n_blocks() const { return model.n_layers; }
    const StageGraph& graph_of(std::size_t stage) const { return graphs[stages[stage].graph]; }
};

Chain build_chain(const ModelConfig& model, const RunOptions& options);

// The bytes a stage keeps after its first forward under k: x̄, the selective share, x, or 0.
std::uint64_t kept_bytes(const Stage& s, Keep k);

// Consecutive stages drawn and printed as one: blocks of the same graph and sizes that keep
// the same (`blocks 1-5 none`); every other stage is a run of its own. first..last, inclusive.
struct StageRun {
    std::size_t first = 0, last = 0;
    std::size_t size() const { return last - first + 1; }
};
std::vector<StageRun> stage_runs(const Chain& c, const std::vector<Keep>& keeps);
// "block 3" for one stage, "blocks 1-5" for a run of blocks (0-based block numbers).
std::string run_name(const Chain& c, const StageRun& r);

// Megatron's selective rule (planner/config/selective.hpp) over g's storages: a view counts as
// its storage, and shared storages (rotary cos/sin) are never kept.
SelectiveSets selective_sets(const StageGraph& g);
// Storages kept by F_sel: everything saved except what attention-core ops produce and only
// attention-core ops save, plus the core's inputs (R_sel recomputes from them).
std::vector<TensorId> selective_kept_storages(const StageGraph& g);
// Storages produced by attention-core ops that F_sel drops and R_sel recomputes.
std::vector<bool> selective_dropped_mask(const StageGraph& g);

}  // namespace remat
