#include "planner/simulate/reference.hpp"

#include <algorithm>
#include <vector>

#include "planner/simulate/graph_facts.hpp"
#include "planner/simulate/stage_walk.hpp"

namespace remat {
namespace {

// A no_grad forward of one stage: its input, then every storage from its op to its last reader.
struct NoGradCount {
    const GraphFacts& f;
    std::uint64_t live = 0, peak = 0;
    double time_s = 0, flops = 0;
    void reads(const OpStep&) {}
    void produce(TensorId s, const OpStep&) {
        live += f.bytes[s];
        peak = std::max(peak, live);
    }
    void ran(const OpStep& op) {
        peak = std::max(peak, live + op.fwd_ws);
        time_s += op.fwd_s;
        flops += op.fwd_flops;
    }
    void free(TensorId s) { live -= f.bytes[s]; }
    void keep(TensorId) {}
};

}  // namespace

ReferenceForward reference_forward(const Chain& c, const StepTerms& terms, const GpuSpec& gpu,
                                   const StepTimeModel& tm) {
    ReferenceForward out;
    if (!c.has_reference_model()) return out;
    const bool gathered = terms.rule.gather_per_unit;
    // One walk per graph (the blocks share theirs).
    std::vector<NoGradCount> counts;
    std::vector<GraphFacts> facts;
    facts.reserve(c.reference_graphs.size());
    for (const StageGraph& g : c.reference_graphs) {
        facts.push_back(facts_of(g, gpu, c.options.precision, tm));
        const GraphFacts& f = facts.back();
        counts.push_back({f, f.bytes[f.input], f.bytes[f.input]});
        walk_forward(f, kept_by(f, Keep::none), counts.back());
    }
    // The reference's chain: its embedding, its blocks, its final norm and head, each under FSDP
    // with its unit gathered (a separate model's; under LoRA the policy's own units again).
    const ModelConfig& ref = c.reference;
    const double compute = terms.bpp.compute;
    const std::uint64_t ref_block_unit =
        c.reference_weights()
            ? checked_round(compute * static_cast<double>(block_parameter_count(ref)))
            : terms.unit_bytes(1);
    const std::uint64_t stages[] = {1, ref.n_layers, 1, 1};
    for (std::size_t k = 0; k < counts.size(); ++k) {
        const NoGradCount& count = counts[k];
        const std::uint64_t unit = gathered && k == 1 ? ref_block_unit : 0;
        out.peak_bytes = std::max(out.peak_bytes, checked_add(count.peak, unit));
        out.time_s += static_cast<double>(stages[k]) * count.time_s;
        out.flops += static_cast<double>(stages[k]) * count.flops;
    }
    // A second model's root unit (embedding, final norm, head) stays gathered through its
    // forward; the policy's own (LoRA, adapters disabled) already is.
    if (gathered && c.reference_weights())
        out.peak_bytes =
            checked_add(out.peak_bytes,
                        checked_round(compute * static_cast<double>(outer_parameter_count(ref))));
    return out;
}

}  // namespace remat
