#include "planner/chain/chain.hpp"

#include <cassert>
#include <fmt/format.h>

#include "planner/config/checked.hpp"
#include "planner/config/error.hpp"

namespace remat {

std::vector<bool> selective_dropped_mask(const StageGraph& g) {
    std::vector<bool> core_produced(g.tensors().size(), false);
    std::vector<bool> saved_outside(g.tensors().size(), false);
    for (OpVertex v : g.order()) {
        const Op& op = g.op(v);
        if (op.attention_core)
            for (TensorId t : op.outputs) core_produced[g.storage(t)] = true;
        else
            for (TensorId t : op.saved) saved_outside[g.storage(t)] = true;
    }
    std::vector<bool> dropped(g.tensors().size(), false);
    for (std::size_t s = 0; s < dropped.size(); ++s) dropped[s] = core_produced[s] && !saved_outside[s];
    return dropped;
}

std::vector<TensorId> selective_kept_storages(const StageGraph& g) {
    const auto dropped = selective_dropped_mask(g);
    std::vector<bool> keep(g.tensors().size(), false);
    for (TensorId s : g.saved_storages()) keep[s] = !dropped[s];
    // R_sel recomputes the core from its inputs, so F_sel keeps them even when only core ops
    // read them (e.g. the fused qkv output that eager attention copies into q, k, v).
    for (OpVertex v : g.order()) {
        const Op& op = g.op(v);
        if (!op.attention_core) continue;
        for (TensorId t : op.inputs) {
            const TensorId s = g.storage(t);
            const int p = g.producer(s);
            if (!g.tensor(s).shared && (p < 0 || !g.op(static_cast<OpVertex>(p)).attention_core)) keep[s] = true;
        }
    }
    std::vector<TensorId> kept;
    for (TensorId s = 0; s < keep.size(); ++s)
        if (keep[s]) kept.push_back(s);
    return kept;
}

namespace {

Stage describe(const StageGraph& g, std::string name, StageKind kind, std::size_t index,
               std::uint64_t params) {
    Stage s;
    s.name = std::move(name);
    s.kind = kind;
    s.graph = index;
    s.params = params;
    s.input_bytes = g.tensor(g.input()).bytes();
    s.all_bytes = g.saved_bytes();
    for (TensorId t : selective_kept_storages(g)) add_to(s.selective_bytes, g.tensor(t).bytes());
    s.fwd_flops = g.fwd_flops();
    s.bwd_flops = g.bwd_flops();
    for (OpVertex v : g.order())
        if (g.op(v).attention_core) s.core_fwd_flops += g.op(v).fwd_flops;
    return s;
}

}  // namespace

Chain build_chain(const ModelConfig& model, const RunOptions& options, AutocastDevice device) {
    assert(options.seq > 0 && "resolve the sequence length before building the chain");
    if (options.attention != Attention::flash && options.profile != Profile::remat &&
        options.profile != Profile::remat_cuda)
        throw InputError(
            fmt::format("{} {}: applies to profiles remat and remat-cuda (profile {} fixes its "
                        "own attention; hf-eager is eager PyTorch's)",
                        named(Input::attention), attention_name(options.attention),
                        profile_name(options.profile)));
    Chain c;
    c.model = model;
    c.options = options;
    StageRequest r;
    r.model = &c.model;
    r.batch = options.micro_batch;
    r.seq = options.seq;
    r.precision = options.precision;
    r.profile = options.profile;
    r.attention = options.attention;
    r.autocast_device = device;
    for (StageKind kind : {StageKind::embedding, StageKind::block, StageKind::norm, StageKind::head}) {
        r.kind = kind;
        c.graphs.push_back(build_stage_graph(r));
    }
    c.stages.push_back(describe(c.graphs[0], "embedding", StageKind::embedding, 0,
                                embedding_parameter_count(model)));
    const Stage block = describe(c.graphs[1], "block", StageKind::block, 1, block_parameter_count(model));
    for (std::uint64_t i = 0; i < model.n_layers; ++i) {
        c.stages.push_back(block);
        c.stages.back().name = fmt::format("block {}", i);
    }
    c.stages.push_back(describe(c.graphs[2], "final norm", StageKind::norm, 2,
                                final_norm_parameter_count(model)));
    c.stages.push_back(describe(c.graphs[3], "head", StageKind::head, 3, head_parameter_count(model)));
    return c;
}

}  // namespace remat
