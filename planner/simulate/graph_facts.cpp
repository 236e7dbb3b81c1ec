#include "planner/simulate/graph_facts.hpp"

#include <algorithm>

#include "planner/chain/chain.hpp"

namespace remat {

GraphFacts facts_of(const StageGraph& g, const GpuSpec& gpu, Precision precision,
                    const StepTimeModel& tm) {
    GraphFacts f;
    const std::size_t n = g.tensors().size();
    f.bytes.assign(n, 0);
    for (TensorId t = 0; t < n; ++t)
        if (g.tensor(t).view_of == no_tensor && !g.tensor(t).shared)
            f.bytes[t] = g.tensor(t).bytes();
    f.uses_all.assign(n, 0);
    f.uses_core.assign(n, 0);
    f.saved.assign(n, false);
    f.input = g.storage(g.input());
    f.output = g.storage(g.output());
    auto unique_storages = [&](const std::vector<TensorId>& ts) {
        std::vector<TensorId> out;
        for (TensorId t : ts) {
            const TensorId s = g.storage(t);
            if (std::find(out.begin(), out.end(), s) == out.end()) out.push_back(s);
        }
        return out;
    };
    for (OpVertex v : g.order()) {
        const Op& op = g.op(v);
        GraphFacts::OpStep st;
        st.name = &op.name;
        st.core = op.attention_core;
        for (TensorId t : op.outputs)
            if (g.tensor(t).view_of == no_tensor) st.produce.push_back(t);
        st.consume = unique_storages(op.inputs);
        for (TensorId s : st.consume) {
            ++f.uses_all[s];
            if (op.attention_core) ++f.uses_core[s];
            if (g.tensor(s).needs_grad && !g.tensor(s).shared) st.grad_in.push_back(s);
        }
        // Held tensors live until the op like its inputs, with no gradient flowing to them.
        for (TensorId s : unique_storages(op.held))
            if (std::find(st.consume.begin(), st.consume.end(), s) == st.consume.end()) {
                st.consume.push_back(s);
                ++f.uses_all[s];
                if (op.attention_core) ++f.uses_core[s];
            }
        for (TensorId t : st.produce)
            if (g.tensor(t).needs_grad) st.grad_out.push_back(t);
        for (TensorId s : unique_storages(op.saved)) f.saved[s] = true;
        st.fwd_flops = op.fwd_flops;
        st.bwd_flops = op.bwd_flops;
        st.fwd_s = op_time_s(op, false, gpu, precision, tm);
        st.bwd_s = op_time_s(op, true, gpu, precision, tm);
        st.fwd_ws = op.fwd_workspace_bytes;
        st.bwd_ws = op.bwd_workspace_bytes;
        f.steps.push_back(std::move(st));
    }
    // The last backward use of a saved storage is the earliest op (in forward order) saving it.
    std::vector<bool> released(n, false);
    for (std::size_t k = 0; k < f.steps.size(); ++k) {
        for (TensorId s : unique_storages(g.op(g.order()[k]).saved)) {
            if (released[s]) continue;
            released[s] = true;
            f.steps[k].release.push_back(s);
        }
    }
    f.sel_dropped = selective_dropped_mask(g);
    f.sel_kept.assign(n, false);
    for (TensorId s : selective_kept_storages(g)) f.sel_kept[s] = true;
    f.external.assign(n, false);
    for (TensorId t : g.inputs())
        if (g.storage(t) != f.input) f.external[g.storage(t)] = true;
    return f;
}

}  // namespace remat
