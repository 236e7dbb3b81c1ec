#include "planner/strategy/chain_costs.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <stdexcept>

#include "planner/config/checked.hpp"
#include "planner/simulate/graph_facts.hpp"
#include "planner/simulate/memory.hpp"
#include "planner/simulate/reference.hpp"
#include "planner/simulate/stage_walk.hpp"

namespace remat {
namespace {

// Each pass below is the replay's walk of one stage (planner/simulate/stage_walk.hpp), counting
// bytes relative to where the action starts.

// A forward or R_sel, counted from where it starts: what is live then (the input, what F_sel
// kept) does not count, what it produces does (the output included).
struct ForwardCount {
    const GraphFacts& f;
    std::vector<char> live;
    std::uint64_t cur = 0, peak = 0;

    void reads(const OpStep&) {}
    void produce(TensorId s, const OpStep&) {
        if (s == f.input || live[s]) return;
        live[s] = 1;
        add_to(cur, f.bytes[s]);
    }
    void ran(const OpStep& op) { peak = std::max(peak, checked_add(cur, op.fwd_ws)); }
    void free(TensorId s) {
        if (!live[s]) return;
        live[s] = 0;
        cur -= f.bytes[s];
    }
    void keep(TensorId) {}
};

ForwardCost forward_pass(const GraphFacts& f, Keep kind) {
    const std::vector<char> keep = kept_by(f, kind);
    ForwardCount count{f, std::vector<char>(f.bytes.size(), 0)};
    walk_forward(f, keep, count);
    ForwardCost c;
    c.peak = count.peak;
    c.keep = count.cur - (count.live[f.output] ? f.bytes[f.output] : 0);
    c.holds_input = keep[f.input];
    return c;
}

struct SelectivePass {
    std::uint64_t peak = 0, added = 0;
};

SelectivePass recompute_core_pass(const GraphFacts& f) {
    // What F_sel kept is live at the start, and not counted.
    ForwardCount count{f, std::vector<char>(f.bytes.size(), 0)};
    for (TensorId s = 0; s < f.bytes.size(); ++s) count.live[s] = f.sel_kept[s];
    walk_recompute_core(f, count);
    return {count.peak, count.cur};
}

// B after F_all (selective = false) or after F_sel + R_sel. `dx_out`: the output gradient
// live at the start (freed by the op that consumes it).
struct BackwardCount {
    const GraphFacts& f;
    std::vector<char> live, grad;
    bool input_live = false, dx_in = false, dout_live = false;
    std::uint64_t dx_out = 0;
    // Frees can come before allocations: count signed, relative to the start. Sizes are below
    // 2^63; what is live at once must be too.
    std::int64_t cur = 0, peak = 0;

    void grow(std::uint64_t bytes) {
        if (__builtin_add_overflow(cur, static_cast<std::int64_t>(bytes), &cur))
            throw_size_overflow();
    }
    void shrink(std::uint64_t bytes) { cur -= static_cast<std::int64_t>(bytes); }
    void grad_in(TensorId s, const OpStep&) {
        if (s == f.input) {
            if (!dx_in) grow(f.bytes[s]);
            dx_in = true;
        } else if (!grad[s]) {
            grad[s] = 1;
            grow(f.bytes[s]);
        }
    }
    void ran(const OpStep& op) {
        std::int64_t with_ws = 0;
        if (__builtin_add_overflow(cur, static_cast<std::int64_t>(op.bwd_ws), &with_ws))
            throw_size_overflow();
        peak = std::max(peak, with_ws);
    }
    void grad_out(TensorId s) {
        if (s == f.output) {
            if (dout_live) shrink(dx_out);
            dout_live = false;
        } else if (grad[s]) {
            grad[s] = 0;
            shrink(f.bytes[s]);
        }
    }
    void release(TensorId s) {
        if (s == f.input) {
            if (input_live) shrink(f.bytes[s]);
            input_live = false;
        } else if (live[s]) {
            live[s] = 0;
            shrink(f.bytes[s]);
        }
    }
};

std::uint64_t backward_pass(const GraphFacts& f, bool selective, bool holds_input,
                            std::uint64_t dx_out) {
    const std::size_t n = f.bytes.size();
    BackwardCount count{.f = f,
                        .live = std::vector<char>(n, 0),
                        .grad = std::vector<char>(n, 0),
                        .input_live = holds_input,
                        .dout_live = dx_out > 0,
                        .dx_out = dx_out};
    for (TensorId s = 0; s < n; ++s) {
        const bool kept =
            selective ? f.sel_kept[s] || (f.sel_dropped[s] && f.saved[s]) : f.saved[s];
        count.live[s] = kept && s != f.input && s != f.output;
    }
    walk_backward(f, count);
    return static_cast<std::uint64_t>(count.peak);
}

}  // namespace

bool ChainCosts::casts_over_counted() const {
    return std::any_of(stages.begin(), stages.end(),
                       [](const StageCosts& s) { return s.cast > 0; });
}

ChainCosts chain_costs(const Chain& c, const GpuSpec& gpu, const StepTimeModel& model) {
    const StepTimeModel tm = for_ranks(model, c.options.world_size);
    const StepTerms T(c);
    const ShardingRule& rule = T.rule;
    const std::size_t n = c.stages.size();
    std::vector<GraphFacts> facts;
    for (const auto& g : c.graphs) facts.push_back(facts_of(g, gpu, c.options.precision, tm));
    auto F = [&](std::size_t i) -> const GraphFacts& { return facts[c.stages[i].graph]; };

    ChainCosts k;
    k.stages.resize(n);
    // A frozen embedding's output is a leaf that autograd's AccumulateGrad holds until backward
    // ends (--train lora; planner/graph/outer_stages.cpp): the embedding keeps its own output,
    // x of stage 1, from its forward to its backward, the first and the last actions. It is
    // counted once, as a progress term of every action in between, not as stage 1's input.
    const std::uint64_t pinned = F(0).saved[F(0).output] ? F(0).bytes[F(0).output] : 0;
    for (std::size_t i = 0; i < n; ++i) {
        const GraphFacts& f = F(i);
        if (f.saved[f.output] && i != 0)
            throw std::logic_error(
                fmt::format("chain costs: stage {} keeps its own output, which the "
                            "optimal planner does not model",
                            c.stages[i].name));
        StageCosts& s = k.stages[i];
        s.x = f.bytes[f.input];
        s.dx = c.graph_of(i).tensor(f.input).needs_grad ? s.x : 0;
        if (i == 1 && pinned) s.x = 0;
        s.block = c.stages[i].kind == StageKind::block;
        for (Keep kind : {Keep::all, Keep::selective, Keep::input, Keep::none})
            s.fwd[static_cast<int>(kind)] = forward_pass(f, kind);
        for (const auto& st : f.steps) {
            s.t_fwd += st.fwd_s;
            s.t_bwd += st.bwd_s;
            s.f_fwd += st.fwd_flops;
            if (st.core) {
                // Selective needs torch's selective activation checkpointing (torch >= 2.4),
                // which torch 1.13 lacks: optimal does not choose it there.
                s.has_core = c.options.torch != TorchFlavor::cpu_1_13;
                s.t_core += st.fwd_s;
                s.f_core += st.fwd_flops;
            }
        }
        const SelectivePass sel = recompute_core_pass(f);
        s.rsel_peak = sel.peak;
        s.rsel_keep = sel.added;
    }
    // DPO: the reference's no_grad forward runs once the head's forward is done (simulate.cpp):
    // above what the head keeps and its loss, less its input when it does not keep it.
    if (const ReferenceForward ref = reference_forward(c, T, gpu, tm); ref.peak_bytes) {
        StageCosts& h = k.stages[n - 1];
        const GraphFacts& f = F(n - 1);
        for (ForwardCost& fc : h.fwd) {
            const std::uint64_t end = checked_add(fc.keep, f.bytes[f.output], ref.peak_bytes);
            const std::uint64_t freed = fc.holds_input ? 0 : f.bytes[f.input];
            fc.peak = std::max(fc.peak, end > freed ? end - freed : 0);
        }
        h.t_fwd += ref.time_s;
        h.f_fwd += ref.flops;
    }
    const std::uint64_t loss = F(n - 1).bytes[F(n - 1).output];
    for (std::size_t i = 0; i < n; ++i) {
        const std::uint64_t dx_out = i + 1 < n ? k.stages[i + 1].dx : 0;
        for (int path = 0; path < 2; ++path)
            k.stages[i].bwd_peak[path] =
                backward_pass(F(i), path == 1, k.stages[i].fwd[path].holds_input, dx_out);
    }

    // Progress-dependent terms, as the replay's gather_for, backward and parameter_gradients
    // produce them for the schedules of the planner's family.
    const bool per_unit = rule.gather_per_unit;
    const bool grad_op = per_unit && !rule.reshard_after_forward;
    auto block = [&](std::size_t i) { return i < n && k.stages[i].block; };
    auto ub = [&](std::size_t i) {
        return per_unit && block(i) ? T.unit_bytes(unit_of_stage(c, i)) : 0;
    };
    const std::uint64_t root = per_unit ? T.unit_bytes(0) : 0;
    std::vector<std::uint64_t> blocks_upto(n, 0), casts_upto(n, 0), made_after(n + 1, 0);
    for (std::size_t i = 0; i < n; ++i) {
        blocks_upto[i] =
            checked_add(i ? blocks_upto[i - 1] : 0, per_unit && block(i) ? T.unit_bytes(i) : 0);
        casts_upto[i] = checked_add(i ? casts_upto[i - 1] : 0, T.cast_bytes(i));
    }
    // Gradients this backward creates and keeps (not accumulated into ones that exist).
    const bool ddp_grads = T.grads_made_in_backward() && !rule.gradients_sharded;
    const bool shard_grads = T.grads_made_in_backward() && rule.gradients_sharded;
    // made_after[t + 1]: gradients made by the backwards of stages t+1 .. n-1.
    for (std::size_t i = n; i-- > 0;) {
        std::uint64_t g = 0;
        if (ddp_grads) g = T.ddp_grad_bytes(i);
        if (shard_grads && block(i)) g = T.shard_grad_bytes(i);
        made_after[i] = checked_add(made_after[i + 1], g);
    }
    const std::uint64_t root_grads = rule.gradients_sharded ? T.unit_grad_bytes(0) : 0;
    for (std::size_t i = 0; i < n; ++i) {
        StageCosts& s = k.stages[i];
        const std::uint64_t dx_out = i + 1 < n ? k.stages[i + 1].dx : 0;
        // After the head's backward (the first), the root unit's unsharded gradients stay
        // until the embedding's backward reduces them.
        const std::uint64_t progress =
            checked_add(made_after[i + 1], i + 1 < n ? root_grads : 0, loss, dx_out);
        const std::uint64_t gather_b =
            checked_add(root, grad_op ? blocks_upto[i] : checked_add(ub(i), i > 0 ? ub(i - 1) : 0));
        s.env_first = checked_add(
            root, grad_op ? blocks_upto[std::min(i + 1, n - 1)] : checked_add(ub(i), ub(i + 1)),
            casts_upto[i]);
        s.env_rec = checked_add(root, grad_op ? blocks_upto[i] : 0, casts_upto[i], progress);
        s.env_rsel = checked_add(root, grad_op ? blocks_upto[i] : ub(i), casts_upto[i], progress);
        s.env_b = checked_add(gather_b, casts_upto[i], progress);
        s.b_start = rule.gradients_sharded && (block(i) || i == n - 1)
                        ? T.unit_grad_bytes(unit_of_stage(c, i))
                        : 0;
        s.env_after_b = checked_add(
            gather_b, i ? casts_upto[i - 1] : 0, made_after[i + 1], loss, s.dx,
            rule.gradients_sharded ? checked_add(root_grads, block(i) ? T.unit_grad_bytes(i) : 0)
                                   : 0);
        s.cast = T.cast_bytes(i);
        if (pinned) {
            // Stage 0 makes it with its first op: its forwards count it from their start here,
            // not in their peaks (so that a recompute of stage 0 does not count it twice).
            if (i == 0)
                for (ForwardCost& fc : s.fwd) fc.peak -= pinned;
            s.env_first = checked_add(s.env_first, pinned);
            s.env_rec = checked_add(s.env_rec, pinned);
            s.env_rsel = checked_add(s.env_rsel, pinned);
            s.env_b = checked_add(s.env_b, pinned);
            if (i > 0) s.env_after_b = checked_add(s.env_after_b, pinned);
        }
        if (rule.grads_allocated_in_backward && !rule.gradients_sharded) {
            s.b_spike = T.ddp_grad_bytes(i);
            // The tied embedding's own gradient, summed into the head's (simulate.cpp).
            if (const std::uint64_t tied = T.tied_embedding_grad_bytes();
                tied && c.stages[i].kind == StageKind::embedding)
                s.b_spike = T.grads_made_in_backward() ? checked_add(s.b_spike, tied)
                                                       : std::max(s.b_spike, tied);
        }
        if (rule.gradients_sharded && (block(i) || i == 0)) {
            const std::size_t u = unit_of_stage(c, i);
            s.b_spike =
                checked_add(T.reduce_scatter_bytes(u), shard_grads ? T.shard_grad_bytes(u) : 0);
        }
    }
    k.pair_gather = per_unit && !grad_op ? ub(1) : 0;

    const ModelStates states = model_states(c);
    k.base = checked_add(states.parameters_bytes, states.optimizer_bytes,
                         rule.grads_allocated_in_backward ? 0 : states.gradients_bytes,
                         T.accumulated_grad_bytes());
    const std::uint64_t final_grads =
        checked_add(made_after[0], shard_grads ? T.shard_grad_bytes(0) : 0);
    k.optimizer_need = checked_add(final_grads, k.stages[0].dx, T.optimizer_temp_bytes());
    // Every need the optimal planner forms is a sum of these terms (a progress term, what
    // stages keep, one transient); checked once here, so that its sums cannot wrap.
    std::uint64_t env = 0, transient = 0, kept = 0;
    for (const StageCosts& s : k.stages) {
        env = std::max({env, s.env_first, checked_add(s.env_rec, k.pair_gather, k.pair_gather),
                        s.env_rsel, checked_add(s.env_b, s.b_start),
                        checked_add(s.env_after_b, s.b_spike)});
        for (const ForwardCost& f : s.fwd) transient = std::max(transient, f.peak);
        transient = std::max({transient, s.rsel_peak, s.bwd_peak[0], s.bwd_peak[1]});
        kept = checked_add(kept, s.x,
                           std::max(s.fwd[0].keep, checked_add(s.fwd[1].keep, s.rsel_keep)));
    }
    checked_add(k.base, env, kept, transient, k.optimizer_need);
    k.t_optimizer = T.optimizer_step_s(gpu, tm);
    k.micro_steps = static_cast<double>(T.micro_steps);
    k.host_bandwidth = gpu.host_link_bandwidth;
    return k;
}

namespace {

// Sums over stage prefixes that change one stage at a time (autocast copies freed at the end of
// forward): a Fenwick tree.
class PrefixSums {
  public:
    explicit PrefixSums(std::size_t n) : tree_(n + 1, 0) {}
    void add(std::size_t i, std::int64_t v) {
        for (std::size_t j = i + 1; j < tree_.size(); j += j & (~j + 1)) tree_[j] += v;
    }
    std::int64_t upto(std::size_t i) const {  // stages 0..i
        std::int64_t r = 0;
        for (std::size_t j = i + 1; j > 0; j -= j & (~j + 1)) r += tree_[j];
        return r;
    }

  private:
    std::vector<std::int64_t> tree_;
};

}  // namespace

CostsResult simulate_costs(const ChainCosts& k, const Schedule& sched, CastModel casts) {
    const std::size_t n = k.size();
    std::vector<std::uint64_t> kept(n, 0);
    std::vector<char> holds(n, 0), frontier(n, 0), on_host(n, 0), done(n, 0), path(n, 0),
        forwarded(n, 0);
    std::vector<char> first_keeps(n, 0), cast_freed(n, 0);
    // What the stages keep and the inputs they hold, summed as they change (resident(i) of each).
    std::uint64_t resident = 0;
    std::vector<std::uint64_t> own(n, 0);
    auto update = [&](std::size_t i) {
        const std::uint64_t now = kept[i] + (holds[i] || frontier[i] ? k.stages[i].x : 0);
        resident = resident - own[i] + now;
        own[i] = now;
    };
    frontier[0] = 1;
    update(0);
    // Autocast's copies freed at the end of forward and not yet made again: subtracted from the
    // env terms, which count every copy of the stages up to the one they name.
    PrefixSums freed(n);
    bool forward_phase = true;
    auto freed_upto = [&](std::size_t i) { return static_cast<std::uint64_t>(freed.upto(i)); };
    auto remake_cast = [&](std::size_t i) {
        if (!cast_freed[i]) return;
        cast_freed[i] = 0;
        freed.add(i, -static_cast<std::int64_t>(k.stages[i].cast));
    };
    const auto& acts = sched.actions;
    std::vector<std::size_t> next_b(acts.size(), n);
    for (std::size_t a = acts.size(), nb = n; a-- > 0;) {
        if (acts[a].kind == ActionKind::B) nb = acts[a].stage;
        next_b[a] = nb;
    }
    auto fail = [&](const Action& a, const char* what) {
        throw std::logic_error(fmt::format("stage-level replay: {} {}", action_label(a), what));
    };
    std::uint64_t peak = k.optimizer_need;
    double time = 0, rflops = 0, prev_s = 0;
    for (std::size_t a = 0; a < acts.size(); ++a) {
        const Action& act = acts[a];
        const std::size_t i = act.stage;
        const StageCosts& s = k.stages[i];
        const double start = time;
        if (act.kind == ActionKind::B && forward_phase) {
            forward_phase = false;
            // Leaving autocast: the copies of stages that keep no saved tensor go.
            if (casts == CastModel::as_replayed)
                for (std::size_t j = 0; j < n; ++j)
                    if (forwarded[j] && !first_keeps[j] && k.stages[j].cast > 0) {
                        cast_freed[j] = 1;
                        freed.add(j, static_cast<std::int64_t>(k.stages[j].cast));
                    }
        }
        switch (act.kind) {
            case ActionKind::F_all:
            case ActionKind::F_sel:
            case ActionKind::F_ck:
            case ActionKind::F_none: {
                static constexpr Keep keep_of[] = {Keep::all, Keep::input, Keep::none,
                                                   Keep::selective};
                const Keep kind = keep_of[static_cast<int>(act.kind)];
                if (on_host[i]) {
                    on_host[i] = 0;
                    frontier[i] = 1;  // fetched: live while this forward reads it
                    update(i);
                    time += k.copy_excess_s(i, prev_s);
                }
                if (!holds[i] && !frontier[i]) fail(act, "reads an input that is gone");
                remake_cast(i);
                const ForwardCost& f = s.fwd[static_cast<int>(kind)];
                const std::uint64_t env = act.recompute
                                              ? k.env_rec_of(i, next_b[a]) - freed_upto(next_b[a])
                                              : s.env_first;
                peak = std::max(peak, env + resident + f.peak);
                time += s.t_fwd;
                if (act.recompute) rflops += s.f_fwd;
                if (!act.recompute) first_keeps[i] = kind == Keep::all || kind == Keep::selective;
                frontier[i] = 0;
                holds[i] = f.holds_input;
                kept[i] = f.keep;
                path[i] = kind == Keep::all         ? 0
                          : kind == Keep::selective ? 1
                                                    : 3;  // 3: nothing for B
                forwarded[i] = 1;
                if (act.offload) {
                    holds[i] = 0;
                    on_host[i] = 1;
                    time += k.copy_excess_s(i, s.t_fwd);
                }
                update(i);
                if (i + 1 < n) {
                    frontier[i + 1] = !(act.recompute && done[i + 1]);
                    update(i + 1);
                }
                break;
            }
            case ActionKind::R_sel:
                if (!forwarded[i] || path[i] != 1) fail(act, "follows no F_sel");
                remake_cast(i);
                peak = std::max(peak, s.env_rsel - freed_upto(i) + resident + s.rsel_peak);
                kept[i] += s.rsel_keep;
                update(i);
                path[i] = 2;  // the core is back
                time += s.t_core;
                rflops += s.f_core;
                break;
            case ActionKind::B: {
                if (!forwarded[i] || path[i] == 1 || path[i] == 3)
                    fail(act, "finds what backward needs gone");
                peak = std::max(peak, s.env_b - freed_upto(i) + resident + s.b_start +
                                          s.bwd_peak[path[i] == 2 ? 1 : 0]);
                const std::uint64_t mine = kept[i] + (holds[i] ? s.x : 0);
                const std::uint64_t before = i > 0 ? freed_upto(i - 1) : 0;
                peak = std::max(peak, s.env_after_b - before + (resident - mine) + s.b_spike);
                kept[i] = 0;
                holds[i] = 0;
                forwarded[i] = 0;
                done[i] = 1;
                update(i);
                time += s.t_bwd;
                break;
            }
        }
        prev_s = time - start;
    }
    return {k.base + peak, k.step_time_s(time), rflops * k.micro_steps};
}

std::uint64_t keep_all_need(const ChainCosts& k) {
    return simulate_costs(k, schedule_from_keeps(std::vector<Keep>(k.size(), Keep::all)))
               .allocator_peak_bytes -
           k.base;
}

}  // namespace remat
