#include "planner/simulate/simulate.hpp"

#include "planner/simulate/graph_facts.hpp"

#include <algorithm>
#include <array>
#include <cassert>
#include <cmath>
#include <fmt/format.h>
#include <stdexcept>

namespace remat {
namespace {

enum Category { k_params, k_grads, k_optimizer, k_unsharded, k_activations, k_temporaries, k_count };

class Replay {
public:
    Replay(const Chain& c, const Plan& plan, const GpuSpec& gpu, const StepTimeModel& tm)
        : c_(c), plan_(plan), gpu_(gpu), tm_(tm), terms_(c), rule_(terms_.rule), units_(terms_.units) {
        for (const auto& g : c.graphs) facts_.push_back(facts_of(g, gpu, c.options.precision, tm));
        const std::size_t n = c.stages.size();
        live_.resize(n);
        grad_live_.resize(n);
        for (std::size_t i = 0; i < n; ++i) {
            live_[i].assign(facts(i).bytes.size(), 0);
            grad_live_[i].assign(facts(i).bytes.size(), 0);
        }
        boundary_live_.assign(n + 1, 0);
        boundary_bytes_.assign(n + 1, 0);
        frontier_.assign(n + 1, false);
        held_prev_.assign(n + 1, false);
        held_next_.assign(n + 1, false);
        bgrad_live_.assign(n + 1, 0);
        for (std::size_t i = 0; i < n; ++i)
            boundary_bytes_[i] = facts(i).bytes[facts(i).input];
        boundary_bytes_[n] = facts(n - 1).bytes[facts(n - 1).output];
        gathered_.assign(units_.size(), false);
        unsharded_grad_live_.assign(units_.size(), false);
        shard_grad_live_.assign(units_.size(), false);
        cast_live_.assign(n, false);
        first_forward_done_.assign(n, false);
        backward_done_.assign(n, false);
        on_host_.assign(n, false);
        open_in_unit_.assign(units_.size(), 0);
        // The stage of the first backward after each action (n: none), in one sweep from the end.
        const auto& acts = plan_.schedule.actions;
        next_backward_.resize(acts.size());
        std::size_t nb = n;
        for (std::size_t a = acts.size(); a-- > 0;) {
            next_backward_[a] = nb;
            if (acts[a].kind == ActionKind::B) nb = acts[a].stage;
        }
    }

    SimResult run(const Reserve& reserve) {
        const ModelStates states = model_states(c_);
        alloc(k_params, states.parameters_bytes);
        alloc(k_optimizer, states.optimizer_bytes);
        if (!rule_.grads_allocated_in_backward) alloc(k_grads, states.gradients_bytes);
        if (const std::uint64_t acc = terms_.accumulated_grad_bytes()) {
            alloc(k_grads, acc);
            shard_grad_live_.assign(units_.size(), rule_.gradients_sharded);
        }
        // The step's input: token ids (x_0) exist before forward.
        frontier_[0] = true;
        boundary_alloc(0);
        bool forward_phase = true;
        for (std::size_t a = 0; a < plan_.schedule.actions.size(); ++a) {
            const Action& act = plan_.schedule.actions[a];
            if (act.kind == ActionKind::B && forward_phase) {
                forward_phase = false;
                end_of_forward();
            }
            action_label_ = action_label(act);
            action_peak_ = used_;
            const double start_s = time_s_;
            run_action(a, act);
            previous_action_s_ = time_s_ - start_s;
            result_.timeline.push_back({action_label_, used_, action_peak_});
        }
        // The earlier micro-steps of the optimizer step take as long as the replayed one.
        const double k = static_cast<double>(terms_.micro_steps);
        time_s_ *= k;
        result_.forward_flops *= k;
        result_.recompute_flops *= k;
        result_.backward_flops *= k;
        optimizer_step();
        result_.allocator_peak_bytes = peak_;
        result_.at_peak.reserve_bytes = reserve_bytes(reserve, peak_);
        result_.peak_bytes = checked_add(peak_, result_.at_peak.reserve_bytes);
        const double tokens = flop_product(c_.options.micro_batch, c_.options.seq) * k;
        result_.step_time_s = time_s_;
        result_.tokens_per_s = time_s_ > 0 ? tokens / time_s_ : 0;
        return result_;
    }

private:
    const GraphFacts& facts(std::size_t stage) const { return facts_[c_.stages[stage].graph]; }

    void alloc(Category k, std::uint64_t bytes, const std::string* op = nullptr) {
        add_to(cat_[k], bytes);
        add_to(used_, bytes);
        action_peak_ = std::max(action_peak_, used_);
        if (used_ > peak_) {
            peak_ = used_;
            result_.peak_action = action_label_;
            result_.peak_op = op ? *op : std::string();
            static constexpr const char* category_names[k_count] = {
                "parameters", "gradients", "optimizer state", "unsharded parameters", "activations", "temporaries"};
            result_.peak_category = category_names[k];
            Breakdown& b = result_.at_peak;
            b.parameters_bytes = cat_[k_params];
            b.gradients_bytes = cat_[k_grads];
            b.optimizer_bytes = cat_[k_optimizer];
            b.unsharded_parameters_bytes = cat_[k_unsharded];
            b.activations_bytes = cat_[k_activations];
            b.temporaries_bytes = cat_[k_temporaries];
        }
    }
    void release(Category k, std::uint64_t bytes) {
        assert(cat_[k] >= bytes && used_ >= bytes && "freeing more than is live");
        cat_[k] -= bytes;
        used_ -= bytes;
    }
    void recategorize(Category from, Category to, std::uint64_t bytes) {
        cat_[from] -= bytes;
        cat_[to] += bytes;
    }

    // ---- storages: stage-internal ones live in live_[i]; the input and output are boundaries.
    bool is_input(std::size_t i, TensorId s) const { return s == facts(i).input; }
    bool is_output(std::size_t i, TensorId s) const { return s == facts(i).output; }

    void boundary_alloc(std::size_t b) {
        if (boundary_live_[b]) return;
        boundary_live_[b] = 1;
        alloc(k_activations, boundary_bytes_[b]);
    }
    void boundary_maybe_free(std::size_t b) {
        if (boundary_live_[b] && !frontier_[b] && !held_prev_[b] && !held_next_[b]) {
            boundary_live_[b] = 0;
            release(k_activations, boundary_bytes_[b]);
        }
    }
    bool storage_live(std::size_t i, TensorId s) const {
        if (is_input(i, s)) return boundary_live_[i];
        if (is_output(i, s)) return boundary_live_[i + 1];
        return live_[i][s] != 0;
    }
    void storage_alloc(std::size_t i, TensorId s, const std::string* op) {
        if (is_input(i, s)) return boundary_alloc(i);
        if (is_output(i, s)) {
            if (!boundary_live_[i + 1]) {
                boundary_live_[i + 1] = 1;
                alloc(k_activations, boundary_bytes_[i + 1], op);
            }
            return;
        }
        if (live_[i][s]) return;
        live_[i][s] = 1;  // 1: temporary, 2: kept activation
        alloc(k_temporaries, facts(i).bytes[s], op);
    }
    void storage_free(std::size_t i, TensorId s) {
        if (is_input(i, s) || is_output(i, s)) return;  // boundaries go by their holders
        if (!live_[i][s]) return;
        release(live_[i][s] == 2 ? k_activations : k_temporaries, facts(i).bytes[s]);
        live_[i][s] = 0;
    }
    void storage_keep(std::size_t i, TensorId s) {
        if (is_input(i, s)) {
            held_next_[i] = true;
        } else if (is_output(i, s)) {
            held_prev_[i + 1] = true;
        } else if (live_[i][s] == 1) {
            live_[i][s] = 2;
            recategorize(k_temporaries, k_activations, facts(i).bytes[s]);
        }
    }

    // ---- units: gathered parameters for FSDP / ZeRO-3, and autocast's weight copies.
    std::uint64_t unit_bytes(std::size_t u) const { return terms_.unit_bytes(u); }
    std::uint64_t stage_cast_bytes(std::size_t i) const { return terms_.cast_bytes(i); }
    // The gathered set changes by a few units per action: the wanted set is at most three units
    // (root, this one, the prefetch) plus, without resharding after forward, every unit with a
    // stage forwarded and not yet backwarded. Only units in the last wanted few or whose open
    // count crossed zero since the last action can change, so each action touches only those.
    // Frees come before gathers, as before; the gathers' order does not change the peak or its
    // breakdown (each only adds, so the last one that raises the peak sees the final state).
    void ungather(std::size_t u) {
        if (!gathered_[u]) return;
        gathered_[u] = false;
        release(k_unsharded, unit_bytes(u));
    }
    void gather(std::size_t u) {
        if (gathered_[u]) return;
        gathered_[u] = true;
        alloc(k_unsharded, unit_bytes(u));
    }
    void ungather_all() {
        for (std::size_t u = 0; u < units_.size(); ++u) ungather(u);
        wanted_small_n_ = 0;
        crossed_.clear();
    }
    // A stage's forward has run and its backward not yet: its unit stays gathered when FSDP
    // does not reshard after forward.
    void set_open(std::size_t stage, bool forward_done, bool backward_done) {
        const bool was = first_forward_done_[stage] && !backward_done_[stage];
        first_forward_done_[stage] = forward_done;
        backward_done_[stage] = backward_done;
        const bool now = forward_done && !backward_done;
        if (was == now || !rule_.gather_per_unit || rule_.reshard_after_forward) return;
        const std::size_t u = unit_of_stage(c_, stage);
        const bool before = open_in_unit_[u] > 0;
        if (now) ++open_in_unit_[u];
        else --open_in_unit_[u];
        if (before != (open_in_unit_[u] > 0)) crossed_.push_back(u);
    }
    void gather_for(std::size_t a, const Action& act) {
        if (!rule_.gather_per_unit) return;
        std::array<std::size_t, 3> small{};
        std::size_t small_n = 0;
        small[small_n++] = 0;  // the root unit: unsharded from the start of forward to the end of backward
        const std::size_t i = act.stage, n = c_.stages.size();
        small[small_n++] = unit_of_stage(c_, i);
        if (act.kind == ActionKind::B) {
            if (i > 0) small[small_n++] = unit_of_stage(c_, i - 1);  // prefetch the previous unit
        } else if (!act.recompute) {
            if (i + 1 < n) small[small_n++] = unit_of_stage(c_, i + 1);  // prefetch the next unit
        } else {
            const std::size_t nb = next_backward_[a];
            if (nb < n) small[small_n++] = unit_of_stage(c_, nb);
        }
        auto wanted = [&](std::size_t u) {
            for (std::size_t k = 0; k < small_n; ++k)
                if (small[k] == u) return true;
            return !rule_.reshard_after_forward && open_in_unit_[u] > 0;
        };
        for (std::size_t k = 0; k < wanted_small_n_; ++k)
            if (!wanted(wanted_small_[k])) ungather(wanted_small_[k]);
        for (std::size_t u : crossed_)
            if (!wanted(u)) ungather(u);
        for (std::size_t k = 0; k < small_n; ++k) gather(small[k]);
        for (std::size_t u : crossed_)
            if (wanted(u)) gather(u);
        crossed_.clear();
        wanted_small_ = small;
        wanted_small_n_ = small_n;
    }

    void end_of_forward() {
        // Leaving autocast clears its cache: copies that no saved tensor holds are freed.
        for (std::size_t i = 0; i < c_.stages.size(); ++i) {
            const Keep k = plan_.keeps[i];
            if (cast_live_[i] && k != Keep::all && k != Keep::selective) {
                cast_live_[i] = false;
                release(k_unsharded, stage_cast_bytes(i));
            }
        }
    }

    void run_action(std::size_t a, const Action& act) {
        gather_for(a, act);
        const std::size_t i = act.stage;
        if (act.kind == ActionKind::B) return backward(i);
        if (rule_.autocast_weight_cache && !cast_live_[i]) {
            cast_live_[i] = true;
            alloc(k_unsharded, stage_cast_bytes(i));
        }
        if (act.kind == ActionKind::R_sel) return recompute_core(i);
        forward(i, act);
    }

    // A schedule that reads what is gone is a planner bug, not a user error: stop loudly.
    void require_live(std::size_t i, TensorId s, const std::string& what) const {
        if (facts(i).external[s] || storage_live(i, s)) return;
        throw std::logic_error(fmt::format("schedule replay: {} of {} needs '{}' of stage {}, which is not live",
                                           what, action_label_, c_.graph_of(i).tensor(s).name, i));
    }

    // Offload: the copy to host runs beside the forward that offloads, the copy back beside the
    // action before the forward that reads it; only a copy's excess over that compute adds time.
    double copy_excess_s(std::size_t i, double overlap_s) const {
        const double copy_s = static_cast<double>(boundary_bytes_[i]) / gpu_.host_link_bandwidth;
        return std::max(0.0, copy_s - overlap_s);
    }

    void forward(std::size_t i, const Action& act) {
        const GraphFacts& f = facts(i);
        if (on_host_[i]) {
            on_host_[i] = false;
            boundary_alloc(i);
            time_s_ += copy_excess_s(i, previous_action_s_);
        }
        require_live(i, f.input, "the forward");
        const double start_s = time_s_;
        std::vector<char> keep(f.bytes.size(), 0);
        for (TensorId s = 0; s < keep.size(); ++s) {
            switch (act.kind) {
                case ActionKind::F_all: keep[s] = f.saved[s]; break;
                case ActionKind::F_sel: keep[s] = f.sel_kept[s]; break;
                case ActionKind::F_ck: keep[s] = s == f.input; break;
                default: break;
            }
        }
        std::vector<int> uses = f.uses_all;
        frontier_[i] = false;
        held_next_[i] = false;  // this forward decides anew whether stage i holds its input
        for (const auto& st : f.steps) {
            for (TensorId s : st.consume) require_live(i, s, *st.name);
            for (TensorId s : st.produce) storage_alloc(i, s, st.name);
            if (st.fwd_ws) {
                alloc(k_temporaries, st.fwd_ws, st.name);
                release(k_temporaries, st.fwd_ws);
            }
            time_s_ += st.fwd_s;
            (act.recompute ? result_.recompute_flops : result_.forward_flops) += st.fwd_flops;
            for (TensorId s : st.consume)
                if (--uses[s] == 0 && !keep[s]) storage_free(i, s);  // the input goes by its holders
            for (TensorId s : st.produce)
                if (uses[s] == 0 && !keep[s] && !is_output(i, s)) storage_free(i, s);
        }
        for (TensorId s = 0; s < keep.size(); ++s)
            if (keep[s]) storage_keep(i, s);
        if (act.offload) {
            held_next_[i] = false;
            on_host_[i] = true;
            time_s_ += copy_excess_s(i, time_s_ - start_s);
        }
        if (!held_next_[i]) boundary_maybe_free(i);
        // The output feeds the next forward, unless this recomputes the last stage of a
        // segment whose successor has already run backward: then nothing reads it.
        if (i + 1 < frontier_.size()) {
            const bool last = i + 1 == backward_done_.size();
            frontier_[i + 1] = last || !(act.recompute && backward_done_[i + 1]);
            boundary_maybe_free(i + 1);
        }
        set_open(i, true, backward_done_[i]);
    }

    void recompute_core(std::size_t i) {
        const GraphFacts& f = facts(i);
        std::vector<int> uses = f.uses_core;
        for (const auto& st : f.steps) {
            if (!st.core) continue;
            for (TensorId s : st.consume) require_live(i, s, *st.name);
            for (TensorId s : st.produce) storage_alloc(i, s, st.name);
            if (st.fwd_ws) {
                alloc(k_temporaries, st.fwd_ws, st.name);
                release(k_temporaries, st.fwd_ws);
            }
            time_s_ += st.fwd_s;
            result_.recompute_flops += st.fwd_flops;
            for (TensorId s : st.consume)
                if (--uses[s] == 0 && f.sel_dropped[s] && !f.saved[s]) storage_free(i, s);
            // What F_sel kept stays; what the core saves is restored; the rest is transient.
            for (TensorId s : st.produce)
                if (uses[s] == 0 && !f.sel_kept[s] && !(f.sel_dropped[s] && f.saved[s])) storage_free(i, s);
        }
        for (TensorId s = 0; s < f.bytes.size(); ++s)
            if (f.sel_dropped[s] && f.saved[s]) storage_keep(i, s);
    }

    std::uint64_t grad_bytes(std::size_t i, TensorId s) const {
        if (is_input(i, s)) return boundary_bytes_[i];
        if (is_output(i, s)) return boundary_bytes_[i + 1];
        return facts(i).bytes[s];
    }
    void grad_alloc(std::size_t i, TensorId s, const std::string* op) {
        auto& flag = is_input(i, s) ? bgrad_live_[i] : is_output(i, s) ? bgrad_live_[i + 1] : grad_live_[i][s];
        if (flag) return;
        flag = 1;
        alloc(k_temporaries, grad_bytes(i, s), op);
    }
    void grad_free(std::size_t i, TensorId s) {
        auto& flag = is_input(i, s) ? bgrad_live_[i] : is_output(i, s) ? bgrad_live_[i + 1] : grad_live_[i][s];
        if (!flag) return;
        flag = 0;
        release(k_temporaries, grad_bytes(i, s));
    }

    void backward(std::size_t i) {
        const GraphFacts& f = facts(i);
        const std::size_t u = unit_of_stage(c_, i);
        // FSDP and ZeRO-2/3 produce a unit's gradients unsharded (the size of its gathered
        // parameters), then reduce-scatter them.
        if (rule_.gradients_sharded && !unsharded_grad_live_[u]) {
            unsharded_grad_live_[u] = true;
            alloc(k_temporaries, unit_bytes(u));
        }
        for (TensorId s = 0; s < f.bytes.size(); ++s)
            if (f.saved[s]) require_live(i, s, "the backward");
        for (std::size_t k = f.steps.size(); k-- > 0;) {
            const auto& st = f.steps[k];
            for (TensorId s : st.grad_in) grad_alloc(i, s, st.name);
            if (st.bwd_ws) {
                alloc(k_temporaries, st.bwd_ws, st.name);
                release(k_temporaries, st.bwd_ws);
            }
            time_s_ += st.bwd_s;
            result_.backward_flops += st.bwd_flops;
            for (TensorId s : st.grad_out) grad_free(i, s);
            for (TensorId s : st.release) {
                if (is_input(i, s)) {
                    held_next_[i] = false;
                    boundary_maybe_free(i);
                } else if (is_output(i, s)) {
                    held_prev_[i + 1] = false;
                    boundary_maybe_free(i + 1);
                } else {
                    storage_free(i, s);
                }
            }
        }
        // Everything of stage i is gone; the input gradient stays for B(i-1).
        for (TensorId s = 0; s < f.bytes.size(); ++s) storage_free(i, s);
        held_next_[i] = false;
        boundary_maybe_free(i);
        if (i + 1 < bgrad_live_.size() && bgrad_live_[i + 1]) {
            bgrad_live_[i + 1] = 0;
            release(k_temporaries, boundary_bytes_[i + 1]);
        }
        if (cast_live_[i]) {
            cast_live_[i] = false;
            release(k_unsharded, stage_cast_bytes(i));
        }
        parameter_gradients(i, u);
        set_open(i, first_forward_done_[i], true);
    }

    void parameter_gradients(std::size_t i, std::size_t u) {
        if (rule_.grads_allocated_in_backward && !rule_.gradients_sharded) {
            // DDP: p.grad appears as backward reaches it (set_to_none zero_grad); when
            // accumulating, the new gradient is added into it and freed.
            alloc(terms_.grads_made_in_backward() ? k_grads : k_temporaries, terms_.ddp_grad_bytes(i));
            if (!terms_.grads_made_in_backward()) release(k_temporaries, terms_.ddp_grad_bytes(i));
            return;
        }
        if (!rule_.gradients_sharded) return;
        const bool unit_done = u != 0 || i == 0;  // the root unit reduces after the embedding
        if (!unit_done || !unsharded_grad_live_[u]) return;
        const std::uint64_t rs = terms_.reduce_scatter_bytes(u);
        alloc(k_temporaries, rs);  // reduce-scatter output
        if (rule_.grads_allocated_in_backward && !shard_grad_live_[u]) {
            shard_grad_live_[u] = true;
            alloc(k_grads, terms_.shard_grad_bytes(u));
        }
        release(k_temporaries, rs);
        unsharded_grad_live_[u] = false;
        release(k_temporaries, unit_bytes(u));
    }

    void optimizer_step() {
        action_label_ = "optimizer";
        action_peak_ = used_;
        ungather_all();
        for (std::size_t b = 0; b < boundary_live_.size(); ++b) {
            frontier_[b] = held_prev_[b] = held_next_[b] = false;
            boundary_maybe_free(b);
        }
        static const std::string op = "optimizer.step";
        // torch.optim.AdamW(foreach=True): _foreach_sqrt(exp_avg_sq) makes one
        // parameter-sized temporary of the state dtype.
        if (const std::uint64_t tmp = terms_.optimizer_temp_bytes()) {
            alloc(k_temporaries, tmp, &op);
            release(k_temporaries, tmp);
        }
        time_s_ += optimizer_time_s(terms_.local_params, c_.options.optimizer, gpu_, tm_);
        result_.timeline.push_back({action_label_, used_, action_peak_});
    }

    const Chain& c_;
    const Plan& plan_;
    const GpuSpec& gpu_;
    const StepTimeModel& tm_;
    StepTerms terms_;
    const ShardingRule& rule_;
    const std::vector<Unit>& units_;
    std::vector<GraphFacts> facts_;
    std::vector<std::vector<char>> live_, grad_live_;
    std::vector<char> boundary_live_, bgrad_live_;
    std::vector<std::uint64_t> boundary_bytes_;
    std::vector<bool> frontier_, held_prev_, held_next_;
    std::vector<bool> gathered_, unsharded_grad_live_, shard_grad_live_, cast_live_;
    std::vector<bool> first_forward_done_, backward_done_, on_host_;
    std::vector<std::size_t> next_backward_;        // per action: the stage of the next B (n: none)
    std::vector<std::uint32_t> open_in_unit_;       // per unit: stages forwarded, not yet backwarded
    std::vector<std::size_t> crossed_;              // units whose open count crossed zero since the last action
    std::array<std::size_t, 3> wanted_small_{};     // the last action's root, own and prefetched units
    std::size_t wanted_small_n_ = 0;
    double previous_action_s_ = 0;
    std::array<std::uint64_t, k_count> cat_{};
    std::uint64_t used_ = 0, peak_ = 0, action_peak_ = 0;
    std::string action_label_;
    double time_s_ = 0;
    SimResult result_;
};

}  // namespace

SimResult simulate(const Chain& chain, const Plan& plan, const GpuSpec& gpu, const Reserve& reserve,
                   const StepTimeModel& time_model) {
    assert(plan.keeps.size() == chain.stages.size());
    return Replay(chain, plan, gpu, time_model).run(reserve);
}

}  // namespace remat
