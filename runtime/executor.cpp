#include "runtime/executor.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cassert>
#include <chrono>
#include <stdexcept>

namespace remat::rt {

SelectiveSets selective_sets(const StageProgram& p) {
    auto storages = [](const std::vector<int>& ts) {
        return std::vector<std::size_t>(ts.begin(), ts.end());
    };
    std::vector<SelectiveOp> ops;
    for (const ProgramOp& op : p.ops)
        ops.push_back(
            {op.attention_core, storages(op.inputs), storages(op.outputs), storages(op.saved)});
    return remat::selective_sets(p.tensors.size(), ops);
}

namespace {
std::vector<int> unique(const std::vector<int>& ts) {
    std::vector<int> out;
    for (int t : ts)
        if (std::find(out.begin(), out.end(), t) == out.end()) out.push_back(t);
    return out;
}

template <class T>
std::vector<std::size_t> stage_units(const Model<T>& model) {
    std::vector<std::size_t> units;
    for (const StageProgram& p : model.stages) units.push_back(p.unit);
    return units;
}
}  // namespace

template <class T>
template <class F>
void RankExecutor<T>::timed(const std::string& what, F&& f) {
    if (!options_.time_work) return f();
    model_.backend->synchronize();
    const auto t0 = std::chrono::steady_clock::now();
    f();
    model_.backend->synchronize();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    auto it =
        std::find_if(work_.begin(), work_.end(), [&](const WorkTime& w) { return w.what == what; });
    if (it == work_.end()) it = work_.insert(work_.end(), WorkTime{what, 0, 0});
    it->seconds += s;
    ++it->calls;
}

template <class T>
RankExecutor<T>::RankExecutor(const Model<T>& model, const Schedule& schedule, std::size_t rank,
                              Collectives<T>& coll, CountingAllocator& alloc, std::uint64_t seed,
                              const ExecutorOptions& options)
    : model_(model),
      schedule_(schedule),
      unit_policy_(schedule, stage_units(model), model.units.size(), UnitFlags{}),
      rank_(rank),
      coll_(coll),
      alloc_(alloc),
      seed_(seed),
      options_(options) {
    const std::size_t W = coll.world_size(), n = model.stages.size();
    alloc_.set_context("", "start-up");
    units_.resize(model.units.size());
    for (std::size_t u = 0; u < units_.size(); ++u) {
        UnitState& s = units_[u];
        const std::uint64_t numel = model.units[u].numel;
        s.shard_n = (numel + W - 1) / W;
        s.master = allocate_zeroed(4 * s.shard_n);  // the last shard's padding stays 0
        const std::uint64_t begin = std::min<std::uint64_t>(numel, rank * s.shard_n);
        const std::uint64_t end = std::min<std::uint64_t>(numel, begin + s.shard_n);
        std::vector<float> init(end - begin);
        initial_parameters(model.units[u], seed_, u, begin, end, init.data());
        model.backend->upload(s.master->template as<float>(), init.data(), 4 * init.size());
        s.m = allocate_zeroed(4 * s.shard_n);
        s.v = allocate_zeroed(4 * s.shard_n);
    }
    stages_.resize(n);
    boundary_.resize(n + 1);
    boundary_grad_.resize(n + 1);
    saved_report_.resize(n);
    for (const StageProgram& p : model.stages) {
        const std::size_t nt = p.tensors.size();
        std::vector<int> uses(nt, 0), core(nt, 0);
        std::vector<bool> saved(nt, false), released(nt, false);
        std::vector<std::vector<int>> release(p.ops.size());
        for (std::size_t k = 0; k < p.ops.size(); ++k) {
            const ProgramOp& op = p.ops[k];
            for (int t : unique(op.inputs)) {
                ++uses[t];
                if (op.attention_core) ++core[t];
            }
            // A saved tensor's last backward use is its earliest saver's backward.
            for (int t : unique(op.saved)) {
                saved[t] = true;
                if (!released[t]) {
                    released[t] = true;
                    release[k].push_back(t);
                }
            }
        }
        uses_.push_back(std::move(uses));
        core_uses_.push_back(std::move(core));
        release_.push_back(std::move(release));
        saved_any_.push_back(saved);
        SelectiveSets sel = selective_sets(p);
        sel_kept_.push_back(std::move(sel.kept));
        sel_dropped_.push_back(std::move(sel.dropped));
    }
}

template <class T>
StepRecord RankExecutor<T>::step(std::uint64_t step, const std::vector<std::int32_t>& ids,
                                 const std::vector<std::int32_t>& targets, std::uint64_t row0) {
    step_ = step;
    row0_ = row0;
    targets_ = &targets;
    StepRecord record;
    alloc_.set_context(schedule_.actions.empty() ? "" : action_label(schedule_.actions.front()),
                       "input_ids");
    boundary_[0] = allocate(4 * ids.size());
    model_.backend->upload(boundary_[0]->template as<void>(), ids.data(), 4 * ids.size());
    for (StageState& s : stages_) s.backward_done = false;
    alloc_.take_window_peak();
    for (std::size_t a = 0; a < schedule_.actions.size(); ++a) {
        run_action(a);
        record.timeline.push_back(
            {action_label(schedule_.actions[a]), alloc_.live_bytes(), alloc_.take_window_peak()});
    }
    optimizer_step(record);
    return record;
}

template <class T>
void RankExecutor<T>::run_action(std::size_t a) {
    const Action& act = schedule_.actions[a];
    alloc_.set_context(action_label(act), "");
    apply(unit_policy_.start(a));
    switch (act.kind) {
        case ActionKind::B:
            backward(act.stage);
            break;
        case ActionKind::R_sel:
            recompute_core(act.stage);
            break;
        default:
            forward(act.stage, act);
            break;
    }
    unit_policy_.finish(a);
}

// FSDP's gathering, as planner/config/fsdp_units decides it for every action: the root unit
// from the first forward to the last backward, the action's own unit and one prefetched.
template <class T>
void RankExecutor<T>::apply(const UnitChanges& changes) {
    for (std::size_t u : changes.freed) units_[u].gathered.reset();
    for (std::size_t u : changes.gathered) {
        UnitState& s = units_[u];
        const std::uint64_t numel = model_.units[u].numel;
        s.gathered = allocate(sizeof(T) * numel);
        timed("all_gather", [&] {
            coll_.all_gather(rank_, s.gathered->template as<T>(), s.master->template as<float>(),
                             s.shard_n, numel);
        });
    }
}

template <class T>
void RankExecutor<T>::run_op(const ProgramOp& op, bool backward_pass,
                             std::vector<BufferRef>& values, std::vector<BufferRef>* grads,
                             std::size_t stage) {
    const StageProgram& p = model_.stages[stage];
    alloc_.set_op(op.name);
    if (!backward_pass)
        for (int t : op.outputs)
            if (!values[t]) values[t] = allocate(p.tensors[t].bytes());
    const std::uint64_t ws_bytes = backward_pass ? op.bwd_workspace_bytes : op.fwd_workspace_bytes;
    BufferRef ws = ws_bytes ? allocate(ws_bytes) : nullptr;
    UnitState& u = units_[p.unit];
    assert(u.gathered && "an op runs with its unit gathered");
    OpArgs a;
    a.values = &values;
    a.grads = grads;
    a.workspace = ws ? ws->template as<void>() : nullptr;
    a.params = u.gathered->template as<T>();
    a.dparams = backward_pass ? u.grad->template as<T>() : nullptr;
    a.step = step_;
    a.row0 = row0_;
    a.targets = targets_->data();
    if (!options_.time_work) return (backward_pass ? op.backward : op.forward)(a);
    timed(fmt::format("{} {}", backward_pass ? "B" : "F", op.name),
          [&] { (backward_pass ? op.backward : op.forward)(a); });
}

template <class T>
void RankExecutor<T>::forward(std::size_t i, const Action& act) {
    const StageProgram& p = model_.stages[i];
    StageState& s = stages_[i];
    const std::size_t nt = p.tensors.size();
    std::vector<BufferRef> values(nt);
    // A recomputation starts from the checkpoint the stage kept, else from the previous output.
    values[p.input] = !s.saved.empty() && s.saved[p.input] ? s.saved[p.input] : boundary_[i];
    if (!values[p.input])
        throw std::logic_error(
            fmt::format("executor: {} has no input (a schedule bug)", action_label(act)));
    std::vector<bool> keep(nt, false);
    switch (act.kind) {
        case ActionKind::F_all:
            keep = saved_any_[i];
            break;
        case ActionKind::F_sel:
            keep = sel_kept_[i];
            break;
        case ActionKind::F_ck:
            keep[p.input] = true;
            break;
        default:
            break;
    }
    std::vector<int> uses = uses_[i];
    for (const ProgramOp& op : p.ops) {
        run_op(op, false, values, nullptr, i);
        for (int t : unique(op.inputs))
            if (--uses[t] == 0 && !keep[t]) values[t].reset();
        for (int t : op.outputs)
            if (uses[t] == 0 && !keep[t] && t != p.output) values[t].reset();
    }
    s.saved.assign(nt, nullptr);
    for (std::size_t t = 0; t < nt; ++t)
        if (keep[t]) s.saved[t] = values[t];
    BufferRef out = std::move(values[p.output]);
    values.clear();
    boundary_[i].reset();
    // Nothing reads the output of a recomputed stage whose successor has run backward.
    const bool last = i + 1 == stages_.size();
    if (last || !(act.recompute && stages_[i + 1].backward_done)) boundary_[i + 1] = std::move(out);
    if (!act.recompute) {
        saved_report_[i].clear();
        for (std::size_t t = 0; t < nt; ++t)
            if (s.saved[t])
                saved_report_[i].push_back({p.tensors[t].name, p.tensors[t].shape,
                                            p.tensors[t].dtype, s.saved[t]->bytes()});
    }
}

template <class T>
void RankExecutor<T>::recompute_core(std::size_t i) {
    const StageProgram& p = model_.stages[i];
    StageState& s = stages_[i];
    if (s.saved.empty()) throw std::logic_error("executor: R_sel without F_sel (a schedule bug)");
    std::vector<BufferRef> values = s.saved;
    std::vector<int> uses = core_uses_[i];
    const auto& kept = sel_kept_[i];
    const auto& dropped = sel_dropped_[i];
    const auto& saved = saved_any_[i];
    for (const ProgramOp& op : p.ops) {
        if (!op.attention_core) continue;
        run_op(op, false, values, nullptr, i);
        for (int t : unique(op.inputs))
            if (--uses[t] == 0 && dropped[t] && !saved[t]) values[t].reset();
        for (int t : op.outputs)
            if (uses[t] == 0 && !kept[t] && !(dropped[t] && saved[t])) values[t].reset();
    }
    for (std::size_t t = 0; t < values.size(); ++t)
        if (dropped[t] && saved[t]) s.saved[t] = values[t];
}

template <class T>
void RankExecutor<T>::backward(std::size_t i) {
    const StageProgram& p = model_.stages[i];
    StageState& s = stages_[i];
    UnitState& unit = units_[p.unit];
    if (!unit.grad) unit.grad = allocate_zeroed(sizeof(T) * model_.units[p.unit].numel);
    const std::size_t nt = p.tensors.size();
    if (s.saved.empty())
        throw std::logic_error(
            fmt::format("executor: B({}) before any forward (a schedule bug)", i));
    for (std::size_t t = 0; t < nt; ++t)
        if (saved_any_[i][t] && !s.saved[t])
            throw std::logic_error(
                fmt::format("executor: B({}) needs '{}', which is not kept (a schedule bug)", i,
                            p.tensors[t].name));
    std::vector<BufferRef> values = s.saved;
    std::vector<BufferRef> grads(nt);
    grads[p.output] = boundary_grad_[i + 1];
    for (std::size_t k = p.ops.size(); k-- > 0;) {
        const ProgramOp& op = p.ops[k];
        alloc_.set_op(op.name);
        for (int t : unique(op.inputs))
            if (p.tensors[t].needs_grad && !grads[t])
                grads[t] = allocate_zeroed(p.tensors[t].bytes());
        run_op(op, true, values, &grads, i);
        for (int t : op.outputs)
            if (p.tensors[t].needs_grad) {
                grads[t].reset();
                if (t == p.output) boundary_grad_[i + 1].reset();
            }
        for (int t : release_[i][k]) {
            values[t].reset();
            s.saved[t].reset();
        }
    }
    s.saved.clear();
    values.clear();
    boundary_grad_[i] = std::move(grads[p.input]);
    grads.clear();
    boundary_grad_[i + 1].reset();
    s.backward_done = true;
    // A block's unit is complete after its backward; the root unit after the embedding's.
    if (unit_policy_.completes_gradients(i)) reduce_unit_gradients(p.unit);
}

template <class T>
void RankExecutor<T>::reduce_unit_gradients(std::size_t u) {
    UnitState& s = units_[u];
    alloc_.set_op("reduce_scatter");
    BufferRef out = allocate(sizeof(T) * s.shard_n);
    timed("reduce_scatter", [&] {
        coll_.reduce_scatter(rank_, out->template as<T>(), s.grad->template as<T>(), s.shard_n,
                             model_.units[u].numel);
    });
    if (!s.grad_shard) s.grad_shard = allocate_zeroed(4 * s.shard_n);
    timed("add_to_fp32", [&] {
        model_.backend->add_to_fp32(s.grad_shard->template as<float>(), out->template as<T>(),
                                    s.shard_n);
    });
    out.reset();
    s.grad.reset();
}

template <class T>
void RankExecutor<T>::optimizer_step(StepRecord& record) {
    alloc_.set_context("optimizer", "optimizer.step");
    apply(unit_policy_.finish_step());
    const BufferRef& loss = boundary_.back();
    float local = 0;
    if (loss) model_.backend->download(&local, loss->template as<float>(), sizeof local);
    for (BufferRef& b : boundary_) b.reset();
    record.loss = coll_.all_reduce_sum(rank_, static_cast<double>(local));
    std::uint64_t total = 0;
    for (const UnitState& s : units_) total += s.shard_n;
    if (options_.keep_gradients)
        for (const UnitState& s : units_) {
            record.grads.emplace_back(s.shard_n);
            model_.backend->download(record.grads.back().data(), s.grad_shard->template as<float>(),
                                     4 * s.shard_n);
        }
    // torch's foreach AdamW makes one parameter-sized temporary (the denominators).
    BufferRef denom = allocate(4 * total);
    ++optimizer_steps_;
    std::uint64_t offset = 0;
    timed("optimizer", [&] {
        for (UnitState& s : units_) {
            model_.backend->adamw_step(
                s.master->template as<float>(), s.grad_shard->template as<float>(),
                s.m->template as<float>(), s.v->template as<float>(),
                denom->template as<float>() + offset, s.shard_n, options_.adamw, optimizer_steps_);
            offset += s.shard_n;
        }
    });
    denom.reset();
    record.timeline.push_back({"optimizer", alloc_.live_bytes(), alloc_.take_window_peak()});
    for (UnitState& s : units_) s.grad_shard.reset();  // zero_grad(set_to_none=True)
    model_.backend->synchronize();
    record.work = std::move(work_);
    work_.clear();
}

template class RankExecutor<float>;
template class RankExecutor<bf16>;

}  // namespace remat::rt
