#include "tools/report.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <iostream>

#include "planner/config/finetune.hpp"
#include "planner/config/units.hpp"
#include "planner/simulate/network.hpp"

namespace remat::cli {

using nlohmann::json;

json question_json(const Question& q) {
    const auto& o = q.options;
    json j = {{"model", q.model.name},
              {"gpu", q.gpu.name},
              {"capacity_bytes", q.context.capacity_bytes},
              {"micro_batch", o.micro_batch},
              {"seq", o.seq},
              {"precision", precision_name(o.precision)},
              {"profile", profile_name(o.profile)},
              {"attention", attention_name(o.attention)},
              {"sharding", sharding_name(o.sharding)},
              {"world_size", o.world_size},
              {"grad_accumulation", o.grad_accumulation},
              {"optimizer", optimizer_name(o.optimizer)},
              {"optimizer_impl", optimizer_impl_name(o.optimizer_impl)},
              {"torch", torch_name(o.torch)}};
    if (q.model.n_experts > 0) j["moe_capacity_factor"] = o.moe_capacity_factor;
    j["recipe"] = recipe_name(o.recipe);
    if (o.recipe == Recipe::dpo) {
        j["ref_logprobs"] = ref_logprobs_name(o.ref_logprobs);
        if (o.ref_dtype) j["ref_dtype"] = base_dtype_name(*o.ref_dtype);
        if (o.ref_model) j["ref_model"] = o.ref_model->name;
        j["sequences_per_micro_batch"] = o.sequences();
    }
    j["train"] = training_name(o.train);
    if (o.train == Training::frozen) j["base_dtype"] = base_dtype_name(o.base_dtype);
    const ParameterCounts n = peft_parameter_counts(q.model, o);
    j["trainable_params"] = n.trainable;
    j["all_params"] = n.all;
    if (o.train == Training::lora)
        j["lora"] = {{"rank", o.lora.rank},
                     {"alpha", o.lora.alpha},
                     {"dropout", o.lora.dropout},
                     {"targets", o.lora.targets},
                     {"base_dtype", base_dtype_name(o.base_dtype)},
                     {"double_quant", o.lora.double_quant}};
    return j;
}

namespace {

// A mixture of experts states its routing assumption wherever its question is shown.
std::string routing_note(const Question& q) {
    if (q.model.n_experts == 0) return "";
    if (q.options.moe_capacity_factor == 1.0)
        return fmt::format(", {} experts top-{} (balanced routing)", q.model.n_experts,
                           q.model.experts_per_token);
    return fmt::format(", {} experts top-{} (busiest expert {}x its share)", q.model.n_experts,
                       q.model.experts_per_token, q.options.moe_capacity_factor);
}

}  // namespace

namespace {

// DPO's batch in pairs and sequences, and where the reference's log-probabilities come from.
std::string recipe_note(const Question& q, bool with_micro_batch) {
    const auto& o = q.options;
    if (o.recipe == Recipe::sft) return "";
    const std::string ref =
        o.ref_logprobs == RefLogprobs::precomputed ? "precomputed (no reference model)"
        : o.train == Training::lora                ? "the policy with its adapters disabled"
        : o.ref_model
            ? fmt::format("reference model '{}' ({}, {} params)", o.ref_model->name,
                          dtype_name(reference_dtype(o)),
                          fmt::group_digits(parameter_count(*o.ref_model)))
            : fmt::format("a frozen copy of the policy ({})", dtype_name(reference_dtype(o)));
    const std::string batch = with_micro_batch
                                  ? fmt::format("{} pair{} = {} sequences", o.micro_batch,
                                                o.micro_batch == 1 ? "" : "s", o.sequences())
                                  : std::string("2 sequences each");
    return fmt::format(
        "\n  DPO: micro-batches count pairs, chosen and rejected concatenated ({}); reference "
        "log-probabilities: {}",
        batch, ref);
}

// LoRA as PEFT's print_trainable_parameters() says it, with the adapters' placement.
std::string training_note(const Question& q, bool with_micro_batch) {
    const auto& o = q.options;
    if (o.train == Training::full) return recipe_note(q, with_micro_batch);
    if (o.train == Training::frozen)
        return fmt::format(
            "\n  frozen: a forward under no_grad, nothing trained (base {}{}, {} params)",
            base_dtype_name(o.base_dtype),
            o.base_dtype == BaseDType::nf4 && o.lora.double_quant ? ", double quant" : "",
            fmt::group_digits(parameter_count(q.model)));
    const ParameterCounts n = peft_parameter_counts(q.model, o);
    return fmt::format(
               "\n  LoRA r {} alpha {} on {}, base {}{}: trainable params: {} || all params: {} || "
               "trainable%: {:.4f}",
               o.lora.rank, o.lora.alpha, fmt::join(o.lora.targets, ","),
               base_dtype_name(o.base_dtype),
               o.base_dtype == BaseDType::nf4 && o.lora.double_quant ? " (double quant)" : "",
               fmt::group_digits(n.trainable), fmt::group_digits(n.all),
               100.0 * static_cast<double>(n.trainable) / static_cast<double>(n.all)) +
           recipe_note(q, with_micro_batch);
}

}  // namespace

std::string question_header(const Question& q, bool with_micro_batch, bool with_layout) {
    const auto& o = q.options;
    return fmt::format(
        "{} ({} params{}) on {} ({}), {}seq {}, {}, profile {}{}, {}, {}{}{}\n", q.model.name,
        fmt::group_digits(parameter_count(q.model)), routing_note(q), q.gpu.name,
        format_bytes(q.context.capacity_bytes),
        with_micro_batch ? fmt::format("micro-batch {} x ", o.micro_batch) : std::string(), o.seq,
        precision_name(o.precision), profile_name(o.profile),
        o.attention == Attention::eager ? " (eager attention)" : "",
        with_layout ? fmt::format("sharding {} x{}", sharding_name(o.sharding), o.world_size)
                    : std::string("sharding and GPU count varied"),
        optimizer_name(o.optimizer),
        o.grad_accumulation > 1 ? fmt::format(", {} micro-batches per step", o.grad_accumulation)
                                : std::string(),
        training_note(q, with_micro_batch));
}

std::string question_title(const Question& q, bool with_micro_batch) {
    std::string t = question_header(q, with_micro_batch);
    while (!t.empty() && t.back() == '\n') t.pop_back();
    return t;
}

std::string peak_verdict(const Question& q, const Evaluation& e) {
    return fmt::format("peak {} of {}: {}", format_bytes(e.result.peak_bytes),
                       format_bytes(q.context.capacity_bytes), e.fits ? "fits" : "DOES NOT FIT");
}

json optimal_json(const Plan& p) {
    if (!p.optimal) return nullptr;
    const OptimalInfo& o = *p.optimal;
    return {{"budget_bytes", o.budget_bytes},
            {"fits_budget", o.fits},
            {"planned_allocator_peak_bytes", o.allocator_peak_bytes},
            {"planned_step_time_s", o.step_time_s},
            {"frontier_points", o.frontier_points},
            {"slot_bytes", o.slot_bytes},
            {"exact", o.slot_bytes == 0},
            {"solve_s", o.solve_s},
            {"incumbent", o.incumbent.empty() ? json(nullptr) : json(o.incumbent)}};
}

json communication_json(const SimResult& r) {
    json kinds = json::array();
    for (const CollectiveTotal& t : r.collectives)
        kinds.push_back({{"collective", collective_name(t.kind)},
                         {"count", t.count},
                         {"bytes", t.bytes},
                         {"seconds", t.seconds}});
    return {{"network", r.network},
            {"collectives", kinds},
            {"comm_s", r.comm_s},
            {"exposed_comm_s", r.exposed_comm_s},
            {"compute_step_time_s", r.compute_step_time_s}};
}

namespace {

// A Breakdown by category; the reserve only where it belongs (the peak's, not an action's).
json breakdown_json(const Breakdown& b, bool with_reserve) {
    json j = {{"parameters_bytes", b.parameters_bytes},
              {"gradients_bytes", b.gradients_bytes},
              {"optimizer_bytes", b.optimizer_bytes},
              {"unsharded_parameters_bytes", b.unsharded_parameters_bytes},
              {"activations_bytes", b.activations_bytes},
              {"temporaries_bytes", b.temporaries_bytes}};
    if (with_reserve) j["reserve_bytes"] = b.reserve_bytes;
    return j;
}

}  // namespace

json plan_json(const Question& q, const Evaluation& e) {
    const SimResult& r = e.result;
    const Breakdown& b = r.at_peak;
    json stages = json::array();
    for (std::size_t i = 0; i < e.chain.stages.size(); ++i) {
        const Stage& s = e.chain.stages[i];
        stages.push_back({{"name", s.name},
                          {"kind", stage_kind_name(s.kind)},
                          {"keeps", keep_name(e.plan.keeps[i])},
                          {"input_bytes", s.input_bytes},
                          {"all_bytes", s.all_bytes},
                          {"selective_bytes", s.selective_bytes},
                          {"kept_bytes", kept_bytes(s, e.plan.keeps[i])},
                          {"params", s.params}});
    }
    json schedule = json::array();
    for (const Action& a : e.plan.schedule.actions)
        schedule.push_back({{"action", action_kind_name(a.kind)},
                            {"stage", a.stage},
                            {"recompute", a.recompute},
                            {"offload", a.offload}});
    json timeline = json::array();
    for (const auto& t : r.timeline)
        timeline.push_back({{"action", t.action},
                            {"live_bytes", t.live_bytes},
                            {"peak_bytes", t.peak_bytes},
                            {"at_peak", breakdown_json(t.at_peak, false)}});
    const Reserve& rv = q.context.reserve;
    return {
        {"question", question_json(q)},
        {"strategy", e.plan.strategy},
        {"params", parameter_count(q.model)},
        {"peak_bytes", r.peak_bytes},
        {"allocator_peak_bytes", r.allocator_peak_bytes},
        {"capacity_bytes", q.context.capacity_bytes},
        {"fits", e.fits},
        {"host_bytes_per_rank", e.host_bytes},
        {"host_bytes_per_node", host_bytes_per_node(q, e.host_bytes)},
        {"host_capacity_bytes",
         q.context.host_capacity_bytes ? json(*q.context.host_capacity_bytes) : json(nullptr)},
        {"peak_action", r.peak_action},
        {"peak_op", r.peak_op},
        {"breakdown", breakdown_json(b, true)},
        {"reserve",
         {{"cuda_context_bytes", rv.cuda_context_bytes},
          {"workspace_bytes", rv.workspace_bytes},
          {"fragmentation", rv.fragmentation},
          {"fragmentation_bytes", b.reserve_bytes - rv.cuda_context_bytes - rv.workspace_bytes}}},
        {"stages", stages},
        {"schedule", schedule},
        {"timeline", timeline},
        {"forward_flops", r.forward_flops},
        {"recompute_flops", r.recompute_flops},
        {"backward_flops", r.backward_flops},
        {"step_time_s", r.step_time_s},
        {"tokens_per_s", r.tokens_per_s},
        {"communication", communication_json(r)},
        {"offloads_checkpoints", offloads(e.plan.schedule)},
        {"optimal", optimal_json(e.plan)}};
}

json saved_json(const Chain& c) {
    json out = json::array();
    for (std::size_t i = 0; i < c.stages.size(); ++i) {
        const StageGraph& g = c.graph_of(i);
        json tensors = json::array();
        for (TensorId s : g.saved_storages()) {
            const Tensor& t = g.tensor(s);
            tensors.push_back({{"name", t.name},
                               {"shape", t.shape},
                               {"dtype", dtype_name(t.dtype)},
                               {"bytes", t.bytes()}});
        }
        out.push_back(
            {{"stage", c.stages[i].name}, {"tensors", tensors}, {"total_bytes", g.saved_bytes()}});
    }
    return out;
}

std::string plan_text(const Question& q, const Evaluation& e, bool saved, bool schedule,
                      bool timeline) {
    const SimResult& r = e.result;
    const Breakdown& b = r.at_peak;
    std::string out = "remat plan: " + question_header(q);
    out += fmt::format("strategy {}{}\n", e.plan.strategy,
                       offloads(e.plan.schedule) ? " (checkpoints offloaded to host memory)" : "");
    if (const auto& o = e.plan.optimal) {
        out += fmt::format("  optimal within {}: {} ({} frontier points, {}, solved in {})\n",
                           format_bytes(o->budget_bytes),
                           o->fits ? "the fastest schedule of the family"
                                   : "NOTHING FITS, the leanest schedule shown",
                           o->frontier_points,
                           o->slot_bytes
                               ? fmt::format("memory slots of {}", format_bytes(o->slot_bytes))
                               : std::string("exact"),
                           format_seconds(o->solve_s));
        if (!o->incumbent.empty())
            out += fmt::format(
                "  the heuristic {} replayed faster within the budget than the DP's pick (see "
                "docs/optimal.md): its schedule is used\n",
                o->incumbent);
    }
    out += "\n";
    out += fmt::format("peak          {:>12}  of {:>12}  {}\n", format_bytes(r.peak_bytes),
                       format_bytes(q.context.capacity_bytes),
                       r.peak_bytes <= q.context.capacity_bytes ? "FITS" : "DOES NOT FIT");
    if (e.host_bytes || q.context.host_capacity_bytes) {
        const std::uint64_t node = host_bytes_per_node(q, e.host_bytes);
        out += fmt::format(
            "  host        {:>12}  per rank, {} for a node's {} ranks{}\n",
            format_bytes(e.host_bytes), format_bytes(node), ranks_per_node(q),
            q.context.host_capacity_bytes
                ? fmt::format(" of {}: {}", format_bytes(*q.context.host_capacity_bytes),
                              host_fits(q, e.host_bytes) ? "FITS" : "DOES NOT FIT")
                : std::string(" (no --host-memory given: not checked)"));
    }
    // A --memory-budget below the GPU's capacity is a second limit: say how the peak stands to it
    // too, so that "NOTHING FITS" within the budget and "FITS" on the GPU read as two answers.
    if (const auto budget = q.context.budget_bytes; budget && *budget != q.context.capacity_bytes)
        out += fmt::format(
            "  budget      {:>12}  {}\n", format_bytes(*budget),
            r.peak_bytes <= *budget ? "within --memory-budget" : "OVER --memory-budget");
    out += fmt::format(
        "  allocator   {:>12}  (peak minus reserve: what torch.cuda.max_memory_allocated sees)\n",
        format_bytes(r.allocator_peak_bytes));
    // An allocation outside any op (a unit gather, a parameter's gradient) is named by what it
    // holds.
    out += fmt::format(
        "  where       {} {}\n\n", r.peak_action,
        r.peak_op.empty() ? fmt::format("(allocating {})", r.peak_category) : r.peak_op);
    out += "breakdown at the peak\n";
    const std::pair<const char*, std::uint64_t> rows[] = {
        {"parameters", b.parameters_bytes},
        {"gradients", b.gradients_bytes},
        {"optimizer state", b.optimizer_bytes},
        {"unsharded parameters", b.unsharded_parameters_bytes},
        {"activations", b.activations_bytes},
        {"temporaries", b.temporaries_bytes},
        {"reserve", b.reserve_bytes}};
    for (const auto& [name, bytes] : rows)
        out += fmt::format("  {:<22}{:>12}\n", name, format_bytes(bytes));
    const Reserve& rv = q.context.reserve;
    out += fmt::format(
        "  (reserve = CUDA context {} + cuBLAS workspace {} + fragmentation {:.0f}% of the "
        "allocator peak)\n\n",
        format_bytes(rv.cuda_context_bytes), format_bytes(rv.workspace_bytes),
        rv.fragmentation * 100);
    out += fmt::format("compute    forward {}, recompute {}, backward {}\n",
                       format_flops(r.forward_flops), format_flops(r.recompute_flops),
                       format_flops(r.backward_flops));
    out += fmt::format("step time  {} per optimizer step{}  ->  {:.0f} tokens/s per GPU\n\n",
                       format_seconds(r.step_time_s),
                       q.options.grad_accumulation > 1
                           ? fmt::format(" ({} micro-batches)", q.options.grad_accumulation)
                           : std::string(),
                       r.tokens_per_s);
    if (!r.collectives.empty()) {
        std::string kinds;
        for (const CollectiveTotal& t : r.collectives)
            kinds += fmt::format(
                "{}{} {} x {} ({})", kinds.empty() ? "" : ", ", t.count, collective_name(t.kind),
                format_bytes(static_cast<std::uint64_t>(t.bytes / static_cast<double>(t.count))),
                format_seconds(t.seconds));
        out += fmt::format(
            "comm       {} on {} over {} ranks ({} a node): {}, of which {} not hidden by "
            "compute\n\n",
            format_seconds(r.comm_s), r.network, q.options.world_size,
            network_of(q.context.time_model, q.gpu).gpus_per_node, kinds,
            format_seconds(r.exposed_comm_s));
    }
    out += fmt::format("{:<12} {:<10} {:<10} {:>12} {:>12} {:>12}\n", "stage", "kind", "keeps",
                       "input x", "all x̄", "kept");
    // Runs of identical consecutive blocks print as one row.
    for (const StageRun& run : stage_runs(e.chain, e.plan.keeps)) {
        const Stage& s = e.chain.stages[run.first];
        const Keep k = e.plan.keeps[run.first];
        out += fmt::format("{:<12} {:<10} {:<10} {:>12} {:>12} {:>12}\n", run_name(e.chain, run),
                           stage_kind_name(s.kind), keep_name(k), format_bytes(s.input_bytes),
                           format_bytes(s.all_bytes),
                           format_bytes(checked_mul(kept_bytes(s, k), run.size())));
    }
    if (saved) {
        out += "\nsaved for backward (unique storages; every block is identical)\n";
        for (std::size_t gi = 0; gi < e.chain.graphs.size(); ++gi) {
            const StageGraph& g = e.chain.graphs[gi];
            static constexpr const char* names[] = {"embedding", "each block", "final norm",
                                                    "head"};
            out += fmt::format("  {}: {}\n", names[gi], format_bytes(g.saved_bytes()));
            for (TensorId s : g.saved_storages()) {
                const Tensor& t = g.tensor(s);
                out += fmt::format("    {:<36} {:<22} {:<9} {:>12}\n", t.name,
                                   fmt::format("({})", fmt::join(t.shape, ", ")),
                                   dtype_name(t.dtype), format_bytes(t.bytes()));
            }
        }
    }
    if (schedule) {
        out += "\nschedule (* = recomputation during backward)\n ";
        std::size_t col = 1;
        for (const Action& a : e.plan.schedule.actions) {
            const std::string l = fmt::format(" {}", action_label(a));
            if (col + l.size() > 100) {
                out += "\n ";
                col = 1;
            }
            out += l;
            col += l.size();
        }
        out += "\n";
    }
    if (timeline) {
        out += fmt::format("\ntimeline (allocator-visible bytes)\n  {:<14} {:>12} {:>12}\n",
                           "action", "after", "peak during");
        for (const auto& t : r.timeline)
            out += fmt::format("  {:<14} {:>12} {:>12}\n", t.action, format_bytes(t.live_bytes),
                               format_bytes(t.peak_bytes));
    }
    return out;
}

json max_batch_json(const Question& q, const std::vector<MaxBatch>& results) {
    json rows = json::array();
    for (const auto& m : results)
        rows.push_back({{"strategy", m.strategy.name()},
                        {"max_micro_batch", m.max_micro_batch},
                        {"search_limit_reached", m.search_limit_reached},
                        {"peak_bytes", m.peak_bytes},
                        {"tokens_per_s", m.tokens_per_s}});
    json question = question_json(q);
    question.erase("micro_batch");  // the search varies it
    return {{"question", question}, {"results", rows}};
}

std::string max_batch_text(const Question& q, const std::vector<MaxBatch>& results) {
    std::string out = "remat max-batch: " + question_header(q, false) + "\n";
    out += fmt::format("{:<16} {:>15} {:>12} {:>16}\n", "strategy", "max micro-batch", "peak",
                       "tokens/s per GPU");
    bool limited = false;
    for (const auto& m : results) {
        limited = limited || m.search_limit_reached;
        const std::string b = m.search_limit_reached ? fmt::format(">= {}", m.max_micro_batch)
                                                     : std::to_string(m.max_micro_batch);
        out += fmt::format(
            "{:<16} {:>15} {:>12} {:>16}\n", m.strategy.name(), b, format_bytes(m.peak_bytes),
            m.max_micro_batch ? fmt::format("{:.0f}", m.tokens_per_s) : std::string("-"));
    }
    out += "\npeak at the max micro-batch (at 1 when nothing fits), reserve included\n";
    if (limited)
        out += fmt::format(">= {}: the search stops at {} sequences per GPU, and that still fits\n",
                           max_search_micro_batch, max_search_micro_batch);
    return out;
}

json models_json() {
    json models = json::array(), gpus = json::array();
    for (const auto& name : model_preset_names()) {
        const ModelConfig m = load_model(name);
        models.push_back({{"name", name},
                          {"arch", arch_name(m.arch)},
                          {"params", parameter_count(m)},
                          {"layers", m.n_layers},
                          {"hidden", m.hidden},
                          {"heads", m.n_heads},
                          {"kv_heads", m.n_kv_heads},
                          {"ffn", m.ffn},
                          {"vocab", m.vocab},
                          {"context", m.context},
                          {"experts", m.n_experts},
                          {"experts_per_token", m.experts_per_token}});
    }
    for (const auto& name : gpu_preset_names()) {
        const GpuSpec g = load_gpu(name);
        gpus.push_back({{"name", name},
                        {"description", g.description},
                        {"capacity_bytes", g.capacity_bytes},
                        {"bf16_flops", g.bf16_flops},
                        {"fp32_flops", g.fp32_flops},
                        {"memory_bandwidth", g.memory_bandwidth},
                        {"host_link_bandwidth", g.host_link_bandwidth}});
    }
    json networks = json::array();
    for (const auto& name : network_preset_names()) {
        const NetworkSpec n = load_network(name);
        networks.push_back({{"name", name},
                            {"description", n.description},
                            {"gpus_per_node", n.gpus_per_node},
                            {"intra_bus_bytes_per_s", n.intra_bus_bandwidth},
                            {"intra_all_reduce_bus_bytes_per_s", n.intra_all_reduce_bus_bandwidth},
                            {"inter_bus_bytes_per_s", n.inter_bus_bandwidth}});
    }
    return {{"models", models}, {"gpus", gpus}, {"networks", networks}};
}

std::string models_text() {
    std::string out =
        fmt::format("models\n  {:<13} {:<9} {:>16} {:>4} {:>6} {:>8} {:>6} {:>7} {:>8}\n", "name",
                    "arch", "params", "L", "H", "A (KV)", "F", "V", "context");
    for (const auto& name : model_preset_names()) {
        const ModelConfig m = load_model(name);
        out += fmt::format(
            "  {:<13} {:<9} {:>16} {:>4} {:>6} {:>8} {:>6} {:>7} {:>8}{}\n", name,
            arch_name(m.arch), fmt::group_digits(parameter_count(m)), m.n_layers, m.hidden,
            fmt::format("{} ({})", m.n_heads, m.n_kv_heads), m.ffn, m.vocab, m.context,
            m.n_experts ? fmt::format("  {} experts, top-{}", m.n_experts, m.experts_per_token)
                        : std::string());
    }
    out += fmt::format("\ngpus\n  {:<13} {:<30} {:>11} {:>12} {:>12} {:>11}\n", "name",
                       "description", "capacity", "bf16 TFLOP/s", "fp32 TFLOP/s", "HBM GB/s");
    for (const auto& name : gpu_preset_names()) {
        const GpuSpec g = load_gpu(name);
        out += fmt::format("  {:<13} {:<30} {:>11} {:>12.1f} {:>12.1f} {:>11.0f}\n", name,
                           g.description, format_bytes(g.capacity_bytes), g.bf16_flops / 1e12,
                           g.fp32_flops / 1e12, g.memory_bandwidth / 1e9);
    }
    out += fmt::format(
        "\nnetworks (--network; bus bandwidths as nccl-tests reports them)\n  {:<10} {:>5} "
        "{:>16} {:>19} {:>17}  {}\n",
        "name", "GPUs", "node GB/s", "node all-reduce", "between nodes", "what");
    for (const auto& name : network_preset_names()) {
        const NetworkSpec n = load_network(name);
        out +=
            fmt::format("  {:<10} {:>5} {:>16.0f} {:>19.0f} {:>17.0f}  {}\n", name, n.gpus_per_node,
                        n.intra_bus_bandwidth / 1e9, n.intra_all_reduce_bus_bandwidth / 1e9,
                        n.inter_bus_bandwidth / 1e9, n.description);
    }
    out +=
        "\n--model also takes a Hugging Face checkpoint folder, its config.json, or a remat "
        "preset JSON\n";
    return out;
}

json pareto_json(const Question& q, const ParetoFrontier& f) {
    json points = json::array();
    for (const ParetoPoint& p : f.points)
        points.push_back({{"peak_bytes", p.peak_bytes},
                          {"allocator_peak_bytes", p.allocator_peak_bytes},
                          {"step_time_s", p.step_time_s},
                          {"recompute_flops", p.recompute_flops},
                          {"tokens_per_s", p.tokens_per_s},
                          {"fits", p.peak_bytes <= q.context.capacity_bytes},
                          {"source", p.source}});
    return {{"question", question_json(q)}, {"offload_checkpoints", q.context.offload_checkpoints},
            {"slot_bytes", f.slot_bytes},   {"exact", f.slot_bytes == 0},
            {"solve_s", f.solve_s},         {"points", points}};
}

std::string pareto_text(const Question& q, const ParetoFrontier& f, bool all_points) {
    std::string out = "remat pareto: " + question_header(q);
    out += fmt::format(
        "{} non-dominated (peak, step time) points{}, from the leanest schedule to no "
        "recomputation\n",
        f.points.size(), q.context.offload_checkpoints ? " (checkpoint offload allowed)" : "");
    out += fmt::format("DP solved in {} ({})\n\n", format_seconds(f.solve_s),
                       f.slot_bytes ? fmt::format("memory slots of {}", format_bytes(f.slot_bytes))
                                    : std::string("exact"));
    const double none_time = f.points.empty() ? 0 : f.points.back().step_time_s;
    out += fmt::format("{:>12} {:>12} {:>10} {:>16} {:>12}  {}\n", "peak", "step time",
                       "vs fastest", "tokens/s per GPU", "recompute", "point");
    // At most 24 rows unless asked: evenly spaced, the first and the last always shown.
    const std::size_t n = f.points.size(), rows = all_points ? n : std::min<std::size_t>(n, 24);
    std::size_t last = n;
    for (std::size_t r = 0; r < rows; ++r) {
        const std::size_t i = rows == 1 ? 0 : r * (n - 1) / (rows - 1);
        if (i == last) continue;
        last = i;
        const ParetoPoint& p = f.points[i];
        out += fmt::format("{:>12} {:>12} {:>+9.1f}% {:>16.0f} {:>12}  {}{}\n",
                           format_bytes(p.peak_bytes), format_seconds(p.step_time_s),
                           (p.step_time_s / none_time - 1) * 100, p.tokens_per_s,
                           format_flops(p.recompute_flops), p.source,
                           p.peak_bytes > q.context.capacity_bytes ? "  (over capacity)" : "");
    }
    if (rows < n)
        out += fmt::format("({} of {} points shown; --all for every point, --json for data)\n",
                           rows, n);
    out +=
        "\npeak includes the reserve; `remat plan --strategy optimal --memory-budget PEAK` gives a "
        "point's schedule\n";
    return out;
}

std::string variant_name(const Candidate& c) {
    return c.strategy.name() + (c.offload ? " +offload" : "");
}

namespace {

json candidate_json(const Candidate& c, const std::vector<std::string>& args) {
    return {{"strategy", c.strategy.name()},
            {"offload_checkpoints", c.offload},
            {"micro_batch", c.micro_batch},
            {"grad_accumulation", c.grad_accumulation},
            {"tokens_per_s", c.tokens_per_s},
            {"peak_bytes", c.peak_bytes},
            {"step_time_s", c.step_time_s},
            {"recompute_share", c.recompute_share},
            {"offloads", offloads(c.schedule)},
            {"same_schedule_as", c.same_as},
            {"args", args}};
}

}  // namespace

std::vector<const Candidate*> best_per_variant(const Recommendation& r) {
    std::vector<const Candidate*> out;
    std::vector<std::string> shown;
    for (const Candidate& c : r.ranked) {
        if (std::find(shown.begin(), shown.end(), variant_name(c)) != shown.end()) continue;
        out.push_back(&c);
        shown.push_back(variant_name(c));
        shown.insert(shown.end(), c.same_as.begin(), c.same_as.end());
    }
    return out;
}

std::string why(const Candidate& c, const Candidate& best) {
    std::vector<std::string> reasons;
    if (c.micro_batch < best.micro_batch)
        reasons.push_back(
            fmt::format("micro-batch {} < {}: lower GEMM efficiency, launches less amortized",
                        c.micro_batch, best.micro_batch));
    if (c.recompute_share > best.recompute_share + 0.005)
        reasons.push_back(fmt::format("recomputes {:.1f}% of its FLOPs (best: {:.1f}%)",
                                      c.recompute_share * 100, best.recompute_share * 100));
    if (c.micro_batch > best.micro_batch && c.recompute_share > best.recompute_share)
        reasons.push_back("its larger micro-batch fits only with more recomputation");
    if (reasons.empty()) reasons.push_back("a slower schedule at this micro-batch");
    return fmt::format("{}", fmt::join(reasons, "; "));
}

json recommend_json(const Question& q, const Recommendation& r,
                    const std::function<std::vector<std::string>(const Candidate&)>& args) {
    json question = question_json(q);
    question.erase("micro_batch");  // the search varies it
    json candidates = json::array();
    for (const Candidate& c : r.ranked) candidates.push_back(candidate_json(c, args(c)));
    return {{"question", question},
            {"budget_bytes", r.budget_bytes},
            {"evaluated", r.evaluated},
            {"best", r.ranked.empty() ? json(nullptr)
                                      : candidate_json(r.ranked.front(), args(r.ranked.front()))},
            {"candidates", candidates}};
}

namespace {

Question at_size(const Question& q, std::uint64_t W, Sharding s) {
    Question t = q;
    t.options.world_size = W;
    t.options.sharding = s;
    return t;
}

}  // namespace

json gpus_json(const Question& q, const GpuCountSweep& s, const GpuArgs& args) {
    json question = question_json(q);
    for (const char* k : {"micro_batch", "world_size", "sharding"}) question.erase(k);
    json rows = json::array();
    for (const GpuCountRow& row : s.rows) {
        json layouts = json::array();
        for (const ShardingBest& l : row.layouts) {
            const Question t = at_size(q, row.world_size, l.sharding);
            layouts.push_back(
                {{"sharding", sharding_name(l.sharding)},
                 {"best", l.best ? candidate_json(*l.best, args(t, *l.best)) : json(nullptr)}});
        }
        const Candidate* best = row.best_candidate();
        rows.push_back(
            {{"world_size", row.world_size},
             {"fits", best != nullptr},
             {"sharding", best ? json(sharding_name(row.best_sharding())) : json(nullptr)},
             {"tokens_per_s_total",
              best ? best->tokens_per_s * static_cast<double>(row.world_size) : 0.0},
             {"layouts", layouts}});
    }
    return {{"question", question},
            {"evaluated", s.evaluated},
            {"fewest_gpus", s.fewest ? json(*s.fewest) : json(nullptr)},
            {"rows", rows}};
}

std::string gpus_text(const Question& q, const GpuCountSweep& s, std::uint64_t max_gpus,
                      const GpuArgs& args) {
    std::string out = fmt::format("remat recommend --max-gpus {}: {}", max_gpus,
                                  question_header(q, false, false));
    out += fmt::format(
        "{} configurations planned and replayed over {} GPU counts (1, 2, 4, 8, then multiples "
        "of 8); per count the fastest sharding x strategy x micro-batch that fits\n\n",
        s.evaluated, s.rows.size());
    out += fmt::format("{:>5}  {:<13} {:<24} {:>6} {:>6} {:>11} {:>11} {:>14} {:>15}\n", "GPUs",
                       "sharding", "strategy", "micro", "accum", "peak", "step time",
                       "tokens/s/GPU", "tokens/s total");
    for (const GpuCountRow& row : s.rows) {
        const Candidate* c = row.best_candidate();
        if (!c) {
            out +=
                fmt::format("{:>5}  nothing fits ({} tried)\n", row.world_size, row.layouts.size());
            continue;
        }
        out += fmt::format("{:>5}  {:<13} {:<24} {:>6} {:>6} {:>11} {:>11} {:>14.0f} {:>15.0f}\n",
                           row.world_size, sharding_name(row.best_sharding()), variant_name(*c),
                           c->micro_batch, c->grad_accumulation, format_bytes(c->peak_bytes),
                           format_seconds(c->step_time_s), c->tokens_per_s,
                           c->tokens_per_s * static_cast<double>(row.world_size));
    }
    if (!s.fewest) {
        out += fmt::format(
            "\nNOTHING FITS on up to {} GPUs. Raise --max-gpus, shorten --seq, or use a larger "
            "GPU.\n",
            max_gpus);
        return out;
    }
    for (const GpuCountRow& row : s.rows) {
        if (row.world_size != *s.fewest) continue;
        const Candidate& c = *row.best_candidate();
        out += fmt::format(
            "\nfewest GPUs: {} ({} x{}, {}, micro-batch {}); reproduce:\n  remat plan {}\n",
            row.world_size, sharding_name(row.best_sharding()), row.world_size, variant_name(c),
            c.micro_batch,
            fmt::join(args(at_size(q, row.world_size, row.best_sharding()), c), " "));
    }
    const NetworkSpec net = network_of(q.context.time_model, q.gpu);
    out += fmt::format(
        "(collectives costed on {}, {} GPUs a node, and overlapped with compute; --json lists "
        "every sharding's best per count)\n",
        net.name, net.gpus_per_node);
    return out;
}

std::string recommend_text(const Question& q, const Recommendation& r,
                           std::optional<std::uint64_t> global_batch,
                           const std::function<std::vector<std::string>(const Candidate&)>& args) {
    std::string out = "remat recommend: " + question_header(q, false);
    out += fmt::format(
        "{} configurations planned and replayed{}; peak must stay within {}\n\n", r.evaluated,
        global_batch ? fmt::format(" for a global batch of {} sequences", *global_batch)
                     : std::string(),
        format_bytes(r.budget_bytes));
    if (r.ranked.empty()) {
        out +=
            "NOTHING FITS: not even micro-batch 1 with full recomputation and offload.\n"
            "Shard further (--sharding fsdp --world-size N), shorten --seq, or use a larger GPU.\n";
        return out;
    }
    const auto top = best_per_variant(r);
    const Candidate& best = *top.front();
    out += fmt::format("{:<4} {:<26} {:>6} {:>6} {:>11} {:>10} {:>11} {:>10} {:>8}\n", "rank",
                       "strategy", "micro", "accum", "peak", "recompute", "step time", "tokens/s",
                       "vs #1");
    for (std::size_t i = 0; i < std::min<std::size_t>(5, top.size()); ++i) {
        const Candidate& c = *top[i];
        out += fmt::format(
            "{:<4} {:<26} {:>6} {:>6} {:>11} {:>9.1f}% {:>11} {:>10.0f} {:>+7.1f}%\n", i + 1,
            variant_name(c), c.micro_batch, c.grad_accumulation, format_bytes(c.peak_bytes),
            c.recompute_share * 100, format_seconds(c.step_time_s), c.tokens_per_s,
            (c.tokens_per_s / best.tokens_per_s - 1) * 100);
        out += fmt::format(
            "     {}{}\n",
            i == 0 ? std::string("the most tokens/s per GPU that fits") : why(c, best),
            c.same_as.empty() ? std::string()
                              : fmt::format(" (same schedule: {})", fmt::join(c.same_as, ", ")));
    }
    out +=
        fmt::format("\n(best micro-batch of each strategy shown; --json lists all {} that fit)\n",
                    r.ranked.size());
    out += fmt::format("\nreproduce the best:\n  remat plan {}\n", fmt::join(args(best), " "));
    return out;
}

void print_json(const nlohmann::json& j) { std::cout << j.dump(2) << "\n"; }

}  // namespace remat::cli
