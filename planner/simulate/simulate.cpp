#include "planner/simulate/simulate.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cassert>
#include <stdexcept>

#include "planner/config/fsdp_units.hpp"
#include "planner/simulate/graph_facts.hpp"
#include "planner/simulate/ledger.hpp"
#include "planner/simulate/reference.hpp"
#include "planner/simulate/stage_walk.hpp"

namespace remat {
namespace {

std::vector<std::size_t> stage_units(const Chain& c) {
    std::vector<std::size_t> units(c.stages.size());
    for (std::size_t i = 0; i < units.size(); ++i) units[i] = unit_of_stage(c, i);
    return units;
}

class Replay {
    static constexpr std::size_t no_holder = static_cast<std::size_t>(-1);
    struct HeldMask {
        std::size_t holder = no_holder;  // the stage whose backward frees the mask
        bool live = false;
    };

  public:
    Replay(const Chain& c, const Plan& plan, const GpuSpec& gpu, const StepTimeModel& tm)
        : c_(c),
          plan_(plan),
          gpu_(gpu),
          tm_(for_ranks(tm, c.options.world_size)),
          terms_(c),
          rule_(terms_.rule),
          units_(plan.schedule, stage_units(c), terms_.units.size(),
                 {rule_.gather_per_unit, rule_.reshard_after_forward}),
          reference_(reference_forward(c, terms_, gpu, tm_)),
          net_(network_of(tm_, gpu)),
          // remat's own runtime calls each collective on the rank's thread, between its ops.
          overlap_(c.options.profile != Profile::remat &&
                   c.options.profile != Profile::remat_cuda) {
        unit_ready_s_.assign(terms_.units.size(), 0);
        for (const auto& g : c.graphs) facts_.push_back(facts_of(g, gpu, c.options.precision, tm_));
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
        for (std::size_t i = 0; i < n; ++i) boundary_bytes_[i] = facts(i).bytes[facts(i).input];
        boundary_bytes_[n] = facts(n - 1).bytes[facts(n - 1).output];
        unsharded_grad_live_.assign(terms_.units.size(), false);
        shard_grad_live_.assign(terms_.units.size(), false);
        cast_live_.assign(n, false);
        backward_done_.assign(n, false);
        on_host_.assign(n, false);
        rng_live_.assign(n, false);
        // A non-reentrant checkpoint holds the arguments of every block it recomputes, masks
        // included, until its backward: the first checkpoint over a block reading a mask holds it
        // longest (backward runs from the last stage down); without one, the mask goes when the
        // base model's forward returns.
        masks_.assign(terms_.eager_mask_count(), HeldMask{});
        std::size_t head = no_holder;  // the checkpoint whose segment the stage is in
        for (std::size_t i = 0, b = 0; i < n; ++i) {
            const Keep k = plan_.keeps[i];
            head = k == Keep::input ? i : k == Keep::none ? head : no_holder;
            if (c_.stages[i].kind != StageKind::block) continue;
            HeldMask& m = masks_[terms_.eager_mask_of_block(b++)];
            if (m.holder == no_holder) m.holder = head;
        }
    }

    SimResult run(const Reserve& reserve, bool trace) {
        if (trace) ledger_.record();
        const ModelStates states = model_states(c_);
        ledger_.alloc(Category::parameters, states.parameters_bytes,
                      state_tag(Category::parameters));
        ledger_.alloc(Category::optimizer, states.optimizer_bytes, state_tag(Category::optimizer));
        if (!rule_.grads_allocated_in_backward)
            ledger_.alloc(Category::gradients, states.gradients_bytes,
                          state_tag(Category::gradients));
        if (const std::uint64_t acc = terms_.accumulated_grad_bytes()) {
            ledger_.alloc(Category::gradients, acc, {BlockKind::accumulated});
            shard_grad_live_.assign(terms_.units.size(), rule_.gradients_sharded);
        }
        // The step's input: token ids (x_0) exist before forward.
        frontier_[0] = true;
        boundary_alloc(0);
        bool forward_phase = true;
        const bool forward_only = c_.options.train == Training::frozen;
        for (std::size_t a = 0; a < plan_.schedule.actions.size(); ++a) {
            const Action& act = plan_.schedule.actions[a];
            // --train frozen: the forwards alone, under no_grad (nothing is kept).
            if (forward_only && act.kind == ActionKind::B) break;
            if (act.kind == ActionKind::B && forward_phase) {
                forward_phase = false;
                end_of_forward();
            }
            ledger_.begin_action(action_label(act));
            // The compute an offload copy can overlap (waits for collectives are not counted, as
            // the optimal planner's costs do not count them).
            const double start_s = busy_s_;
            run_action(a, act);
            units_.finish(a);
            previous_action_s_ = busy_s_ - start_s;
            ledger_.end_action();
        }
        flush_bucket();
        // A micro-step ends when its last collective has (the optimizer reads the gradients).
        time_s_ = std::max(time_s_, comm_free_s_);
        // The earlier micro-steps of the optimizer step take as long as the replayed one.
        const double k = static_cast<double>(terms_.micro_steps);
        time_s_ *= k;
        busy_s_ *= k;
        comm_s_ *= k;
        for (CollectiveTotal& t : result_.collectives) {
            t.count *= terms_.micro_steps;
            t.bytes *= k;
            t.seconds *= k;
        }
        result_.forward_flops *= k;
        result_.recompute_flops *= k;
        result_.backward_flops *= k;
        if (!forward_only) optimizer_step();
        const LedgerPeak& peak = ledger_.peak();
        result_.allocator_peak_bytes = peak.bytes;
        result_.peak_action = peak.action;
        result_.peak_op = peak.op;
        result_.peak_category = peak.category;
        result_.at_peak = peak.at;
        result_.at_peak.reserve_bytes = reserve_bytes(reserve, peak.bytes);
        result_.peak_bytes = checked_add(peak.bytes, result_.at_peak.reserve_bytes);
        result_.timeline = ledger_.take_timeline();
        result_.trace = ledger_.take_trace();
        const double tokens = flop_product(c_.options.sequences(), c_.options.seq) * k;
        result_.step_time_s = time_s_;
        result_.comm_s = comm_s_;
        result_.exposed_comm_s = std::max(0.0, time_s_ - busy_s_);
        result_.compute_step_time_s = busy_s_;
        result_.network = net_.name;
        result_.tokens_per_s = time_s_ > 0 ? tokens / time_s_ : 0;
        return result_;
    }

  private:
    const GraphFacts& facts(std::size_t stage) const { return facts_[c_.stages[stage].graph]; }

    // ---- the ledger's tags (BlockTag): one per thing allocated, the same on its release.
    static BlockTag tag(BlockKind k, std::size_t a, std::size_t b = 0) {
        return {k, static_cast<std::uint32_t>(a), static_cast<std::uint32_t>(b)};
    }
    static BlockTag state_tag(Category k) {
        return tag(BlockKind::states, static_cast<std::size_t>(k));
    }
    BlockTag grad_tag(std::size_t i, TensorId s) const {
        if (is_input(i, s)) return tag(BlockKind::boundary_grad, i);
        if (is_output(i, s)) return tag(BlockKind::boundary_grad, i + 1);
        return tag(BlockKind::grad, i, s);
    }

    // An op's workspace: allocated for the op alone.
    void workspace(std::uint64_t bytes, const std::string* op) {
        if (!bytes) return;
        ledger_.alloc(Category::temporaries, bytes, {BlockKind::workspace}, op);
        ledger_.release(Category::temporaries, bytes, {BlockKind::workspace});
    }

    // ---- storages: stage-internal ones live in live_[i]; the input and output are boundaries.
    bool is_input(std::size_t i, TensorId s) const { return s == facts(i).input; }
    bool is_output(std::size_t i, TensorId s) const { return s == facts(i).output; }

    void boundary_alloc(std::size_t b, const std::string* op = nullptr) {
        if (boundary_live_[b]) return;
        boundary_live_[b] = 1;
        ledger_.alloc(Category::activations, boundary_bytes_[b], tag(BlockKind::boundary, b), op);
    }
    void boundary_maybe_free(std::size_t b) {
        if (boundary_live_[b] && !frontier_[b] && !held_prev_[b] && !held_next_[b]) {
            boundary_live_[b] = 0;
            ledger_.release(Category::activations, boundary_bytes_[b], tag(BlockKind::boundary, b));
        }
    }
    bool storage_live(std::size_t i, TensorId s) const {
        if (is_input(i, s)) return boundary_live_[i];
        if (is_output(i, s)) return boundary_live_[i + 1];
        return live_[i][s] != 0;
    }
    void storage_alloc(std::size_t i, TensorId s, const std::string* op) {
        if (is_input(i, s)) return boundary_alloc(i);
        if (is_output(i, s)) return boundary_alloc(i + 1, op);
        if (live_[i][s]) return;
        live_[i][s] = 1;  // 1: temporary, 2: kept activation
        ledger_.alloc(Category::temporaries, facts(i).bytes[s], tag(BlockKind::storage, i, s), op);
    }
    void storage_free(std::size_t i, TensorId s) {
        if (is_input(i, s) || is_output(i, s)) return;  // boundaries go by their holders
        if (!live_[i][s]) return;
        ledger_.release(live_[i][s] == 2 ? Category::activations : Category::temporaries,
                        facts(i).bytes[s], tag(BlockKind::storage, i, s));
        live_[i][s] = 0;
    }
    void storage_keep(std::size_t i, TensorId s) {
        if (is_input(i, s)) {
            held_next_[i] = true;
        } else if (is_output(i, s)) {
            held_prev_[i + 1] = true;
        } else if (live_[i][s] == 1) {
            live_[i][s] = 2;
            ledger_.recategorize(Category::temporaries, Category::activations, facts(i).bytes[s],
                                 tag(BlockKind::storage, i, s));
        }
    }

    // ---- units: gathered parameters for FSDP / ZeRO-3 (which ones: planner/config/fsdp_units),
    // and autocast's weight copies.
    std::uint64_t stage_cast_bytes(std::size_t i) const { return terms_.cast_bytes(i); }
    // Frees come before gathers; the gathers' order does not change the peak or its breakdown
    // (each only adds, so the last one that raises the peak sees the final state).
    void gather_for(std::size_t a) {
        const UnitChanges& changes = units_.start(a);
        for (std::size_t u : changes.freed)
            ledger_.release(Category::unsharded, terms_.unit_bytes(u), tag(BlockKind::unit, u));
        for (std::size_t u : changes.gathered)
            ledger_.alloc(Category::unsharded, terms_.unit_bytes(u), tag(BlockKind::unit, u));
        // The action's own unit first, then the prefetched one: each all-gather runs on the
        // communication stream, and an action waits for its own unit.
        const std::size_t own = units_.unit_of(plan_.schedule.actions[a].stage);
        std::vector<std::size_t> order = changes.gathered;
        std::stable_partition(order.begin(), order.end(), [&](std::size_t u) { return u == own; });
        for (std::size_t u : order)
            unit_ready_s_[u] =
                collective(Collective::all_gather, static_cast<double>(terms_.unit_bytes(u)));
        time_s_ = std::max(time_s_, unit_ready_s_[own]);
    }

    // ---- communication: one collective over the world, on the communication stream (issued
    // when the compute stream reaches it, after the collectives issued before it) or, in remat's
    // own runtime, on the compute stream itself. Returns when it ends.
    double collective(Collective kind, double bytes) {
        const double s = collective_time_s(kind, bytes, c_.options.world_size, net_, tm_);
        if (s <= 0) return time_s_;
        auto it = std::find_if(result_.collectives.begin(), result_.collectives.end(),
                               [&](const CollectiveTotal& t) { return t.kind == kind; });
        if (it == result_.collectives.end())
            it = result_.collectives.insert(result_.collectives.end(), CollectiveTotal{kind});
        ++it->count;
        it->bytes += bytes;
        it->seconds += s;
        comm_s_ += s;
        if (!overlap_) return time_s_ += s;
        comm_free_s_ = std::max(time_s_, comm_free_s_) + s;
        return comm_free_s_;
    }
    void compute(double s) {
        time_s_ += s;
        busy_s_ += s;
    }
    // Gradients of unit u are complete: FSDP and ZeRO-2/3 reduce-scatter the unit's; DDP, ZeRO-1
    // and Megatron fill buckets, all-reduced (DDP, Megatron) or reduce-scattered (ZeRO-1,
    // Megatron's distributed optimizer) when full.
    void gradients_ready(std::size_t u) {
        if (rule_.gather_per_unit || rule_.gradients_sharded) {
            collective(Collective::reduce_scatter, static_cast<double>(terms_.unit_grad_bytes(u)));
            return;
        }
        bucket_bytes_ += static_cast<double>(terms_.units[u].trainable) * terms_.bpp.gradients;
        const double cap = buckets_sent_ == 0 ? tm_.first_bucket_bytes : tm_.bucket_bytes;
        if (bucket_bytes_ >= cap) flush_bucket();
    }
    void flush_bucket() {
        if (bucket_bytes_ <= 0) return;
        collective(rule_.optimizer_sharded ? Collective::reduce_scatter : Collective::all_reduce,
                   bucket_bytes_);
        bucket_bytes_ = 0;
        ++buckets_sent_;
    }
    // ZeRO-1/2 and Megatron's distributed optimizer: each rank updated its shard; every rank
    // gathers the updated parameters before the next forward.
    void after_optimizer() {
        if (rule_.optimizer_sharded && !rule_.gather_per_unit && !rule_.parameters_sharded) {
            double bytes = 0;
            for (const Unit& u : terms_.units)
                bytes += static_cast<double>(u.params) * terms_.bpp.compute;
            time_s_ = std::max(time_s_, collective(Collective::all_gather, bytes));
        }
    }

    void release_mask(HeldMask& m) {
        if (!m.live) return;
        m.live = false;
        ledger_.release(Category::activations, terms_.eager_mask_bytes(),
                        tag(BlockKind::mask, static_cast<std::size_t>(&m - masks_.data())));
    }

    void end_of_forward() {
        for (HeldMask& m : masks_)
            if (m.holder == no_holder) release_mask(m);
        // Leaving autocast clears its cache: copies that no saved tensor holds are freed.
        for (std::size_t i = 0; i < c_.stages.size(); ++i) {
            const Keep k = plan_.keeps[i];
            if (cast_live_[i] && k != Keep::all && k != Keep::selective) {
                cast_live_[i] = false;
                ledger_.release(Category::unsharded, stage_cast_bytes(i), tag(BlockKind::cast, i));
            }
        }
    }

    void run_action(std::size_t a, const Action& act) {
        gather_for(a);
        const std::size_t i = act.stage;
        if (act.kind == ActionKind::B) return backward(i);
        if (rule_.autocast_weight_cache && !cast_live_[i]) {
            cast_live_[i] = true;
            ledger_.alloc(Category::unsharded, stage_cast_bytes(i), tag(BlockKind::cast, i));
        }
        if (act.kind == ActionKind::R_sel) return recompute_core(i);
        forward(i, act);
    }

    // A schedule that reads what is gone is a planner bug, not a user error: stop loudly.
    void require_live(std::size_t i, TensorId s, const std::string& what) const {
        if (facts(i).external[s] || storage_live(i, s)) return;
        throw std::logic_error(
            fmt::format("schedule replay: {} of {} needs '{}' of stage {}, which is not live", what,
                        ledger_.action(), c_.graph_of(i).tensor(s).name, i));
    }

    // Offload: stage i's checkpoint to host or back, beyond the compute it overlaps.
    double offload_copy_excess_s(std::size_t i, double overlap_s) const {
        return copy_excess_s(boundary_bytes_[i], gpu_.host_link_bandwidth, overlap_s);
    }

    // The walk of a forward or R_sel of stage i (planner/simulate/stage_walk.hpp), on the ledger.
    struct ForwardOps {
        Replay& r;
        std::size_t i;
        bool recompute;
        void reads(const OpStep& op) {
            for (TensorId s : op.consume) r.require_live(i, s, *op.name);
        }
        void produce(TensorId s, const OpStep& op) { r.storage_alloc(i, s, op.name); }
        void ran(const OpStep& op) {
            r.workspace(op.fwd_ws, op.name);
            r.compute(op.fwd_s);
            (recompute ? r.result_.recompute_flops : r.result_.forward_flops) += op.fwd_flops;
        }
        void free(TensorId s) { r.storage_free(i, s); }
        void keep(TensorId s) { r.storage_keep(i, s); }
    };

    // The base model's forward returns after the final norm, before the head runs: its locals
    // go (the held embedding, and the masks no checkpoint holds).
    void base_model_returns() {
        if (terms_.embedding_output_held() && held_prev_[1]) {
            held_prev_[1] = false;
            boundary_maybe_free(1);
        }
        // No backward to read them: the rotary tables go with the base model's locals.
        if (c_.options.train == Training::frozen && rotary_live_) {
            rotary_live_ = false;
            ledger_.release(Category::activations, terms_.rotary_bytes(), {BlockKind::rotary});
        }
        if (norm_input_held_) {
            norm_input_held_ = false;
            frontier_[c_.stages.size() - 2] = false;
            boundary_maybe_free(c_.stages.size() - 2);
        }
        if (embedding_held_) {
            embedding_held_ = false;
            ledger_.release(Category::activations, terms_.forward_held_embedding_bytes(),
                            {BlockKind::held_embedding});
        }
        for (HeldMask& m : masks_)
            if (m.holder == no_holder) release_mask(m);
    }

    void forward(std::size_t i, const Action& act) {
        const GraphFacts& f = facts(i);
        if (!act.recompute && c_.stages[i].kind == StageKind::head) base_model_returns();
        if (on_host_[i]) {
            on_host_[i] = false;
            boundary_alloc(i);
            compute(offload_copy_excess_s(i, previous_action_s_));
        }
        require_live(i, f.input, "the forward");
        const double start_s = busy_s_;
        frontier_[i] = false;
        held_next_[i] = false;  // this forward decides anew whether stage i holds its input
        ForwardOps ops{*this, i, act.recompute};
        walk_forward(f, kept_by(f, keep_of(act.kind)), ops);
        // A frozen embedding's output, autograd's leaf: AccumulateGrad holds it until backward
        // ends, whatever the checkpointing (planner/graph/outer_stages.cpp).
        if (i == 0 && f.saved[f.output]) storage_keep(i, f.output);
        // The final norm's input is the base model's local (`hidden_states`, which it passes to
        // its norm and returns the result of): alive until the base model returns.
        if (!act.recompute && c_.stages[i].kind == StageKind::norm) {
            frontier_[i] = true;
            norm_input_held_ = true;
        }
        if (act.offload) {
            held_next_[i] = false;
            on_host_[i] = true;
            compute(offload_copy_excess_s(i, busy_s_ - start_s));
        }
        if (!act.recompute && c_.stages[i].kind == StageKind::embedding &&
            c_.options.train == Training::frozen) {
            // Without a backward nothing else ends these holds: the caller's batch keeps the
            // token ids through the step; the base model's local, its input embeddings.
            held_next_[i] = true;
            if (terms_.embedding_output_held()) held_prev_[i + 1] = true;
        }
        if (!held_next_[i]) boundary_maybe_free(i);
        if (!act.recompute && c_.stages[i].kind == StageKind::head && reference_.peak_bytes) {
            // DPO: the reference's no_grad forward, after the policy's
            // (planner/simulate/reference).
            static const std::string op = "reference.forward";
            ledger_.alloc(Category::temporaries, reference_.peak_bytes, {BlockKind::reference},
                          &op);
            ledger_.release(Category::temporaries, reference_.peak_bytes, {BlockKind::reference});
            compute(reference_.time_s);
            result_.forward_flops += reference_.flops;
        }
        if (!act.recompute && c_.stages[i].kind == StageKind::embedding) {
            if (const std::uint64_t bytes = terms_.eager_mask_bytes())
                for (std::size_t k = 0; k < masks_.size(); ++k) {
                    masks_[k].live = true;
                    ledger_.alloc(Category::activations, bytes, tag(BlockKind::mask, k));
                }
            if (const std::uint64_t bytes = terms_.forward_held_embedding_bytes()) {
                embedding_held_ = true;
                ledger_.alloc(Category::activations, bytes, {BlockKind::held_embedding});
            }
            if (const std::uint64_t bytes = terms_.rotary_bytes()) {
                rotary_live_ = true;
                ledger_.alloc(Category::activations, bytes, {BlockKind::rotary});
            }
        }

        if (!act.recompute && act.kind == ActionKind::F_ck)
            if (const std::uint64_t rng = terms_.checkpoint_rng_bytes()) {
                rng_live_[i] = true;
                ledger_.alloc(Category::activations, rng, tag(BlockKind::rng, i));
            }
        // The output feeds the next forward, unless this recomputes the last stage of a
        // segment whose successor has already run backward: then nothing reads it.
        if (i + 1 < frontier_.size()) {
            const bool last = i + 1 == backward_done_.size();
            frontier_[i + 1] = last || !(act.recompute && backward_done_[i + 1]);
            boundary_maybe_free(i + 1);
        }
    }

    void recompute_core(std::size_t i) {
        ForwardOps ops{*this, i, true};
        walk_recompute_core(facts(i), ops);
    }

    std::uint64_t grad_bytes(std::size_t i, TensorId s) const {
        if (is_input(i, s)) return boundary_bytes_[i];
        if (is_output(i, s)) return boundary_bytes_[i + 1];
        return facts(i).bytes[s];
    }
    char& grad_flag(std::size_t i, TensorId s) {
        if (is_input(i, s)) return bgrad_live_[i];
        if (is_output(i, s)) return bgrad_live_[i + 1];
        return grad_live_[i][s];
    }

    // The walk of B(i), on the ledger.
    struct BackwardOps {
        Replay& r;
        std::size_t i;
        void grad_in(TensorId s, const OpStep& op) {
            char& flag = r.grad_flag(i, s);
            if (flag) return;
            flag = 1;
            r.ledger_.alloc(Category::temporaries, r.grad_bytes(i, s), r.grad_tag(i, s), op.name);
        }
        void ran(const OpStep& op) {
            r.workspace(op.bwd_ws, op.name);
            r.compute(op.bwd_s);
            r.result_.backward_flops += op.bwd_flops;
        }
        void grad_out(TensorId s) {
            char& flag = r.grad_flag(i, s);
            if (!flag) return;
            flag = 0;
            r.ledger_.release(Category::temporaries, r.grad_bytes(i, s), r.grad_tag(i, s));
        }
        void release(TensorId s) {
            if (r.is_input(i, s)) {
                r.held_next_[i] = false;
                r.boundary_maybe_free(i);
            } else if (r.is_output(i, s)) {
                r.held_prev_[i + 1] = false;
                r.boundary_maybe_free(i + 1);
            } else {
                r.storage_free(i, s);
            }
        }
    };

    void backward(std::size_t i) {
        const GraphFacts& f = facts(i);
        const std::size_t u = units_.unit_of(i);
        // FSDP and ZeRO-2/3 produce a unit's gradients unsharded (the size of its gathered
        // parameters), then reduce-scatter them.
        if (rule_.gradients_sharded && !unsharded_grad_live_[u]) {
            unsharded_grad_live_[u] = true;
            ledger_.alloc(Category::temporaries, terms_.unit_grad_bytes(u),
                          tag(BlockKind::unit_grad, u));
        }
        for (TensorId s = 0; s < f.bytes.size(); ++s)
            if (f.saved[s]) require_live(i, s, "the backward");
        BackwardOps ops{*this, i};
        walk_backward(f, ops);
        // Everything of stage i is gone; the input gradient stays for B(i-1).
        for (TensorId s = 0; s < f.bytes.size(); ++s) storage_free(i, s);
        held_next_[i] = false;
        boundary_maybe_free(i);
        if (i + 1 < bgrad_live_.size() && bgrad_live_[i + 1]) {
            bgrad_live_[i + 1] = 0;
            ledger_.release(Category::temporaries, boundary_bytes_[i + 1],
                            tag(BlockKind::boundary_grad, i + 1));
        }
        if (cast_live_[i]) {
            cast_live_[i] = false;
            ledger_.release(Category::unsharded, stage_cast_bytes(i), tag(BlockKind::cast, i));
        }
        if (rng_live_[i]) {
            rng_live_[i] = false;
            ledger_.release(Category::activations, terms_.checkpoint_rng_bytes(),
                            tag(BlockKind::rng, i));
        }
        for (HeldMask& m : masks_)
            if (i == m.holder) release_mask(m);
        if (rotary_live_ && c_.stages[i].kind == StageKind::block && i == 1) {
            rotary_live_ = false;
            ledger_.release(Category::activations, terms_.rotary_bytes(), {BlockKind::rotary});
        }
        parameter_gradients(i, u);
        if (units_.completes_gradients(i) && c_.options.train != Training::frozen &&
            terms_.units[u].trainable > 0)
            gradients_ready(u);
        backward_done_[i] = true;
    }

    void parameter_gradients(std::size_t i, std::size_t u) {
        if (rule_.grads_allocated_in_backward && !rule_.gradients_sharded) {
            // DDP: p.grad appears as backward reaches it (set_to_none zero_grad); when
            // accumulating, the new gradient is added into it and freed.
            const bool made = terms_.grads_made_in_backward();
            ledger_.alloc(made ? Category::gradients : Category::temporaries,
                          terms_.ddp_grad_bytes(i), tag(BlockKind::ddp_grad, i));
            if (!made)
                ledger_.release(Category::temporaries, terms_.ddp_grad_bytes(i),
                                tag(BlockKind::ddp_grad, i));
            if (c_.stages[i].kind == StageKind::embedding)
                if (const std::uint64_t tied = terms_.tied_embedding_grad_bytes()) {
                    ledger_.alloc(Category::temporaries, tied, {BlockKind::tied_grad});
                    ledger_.release(Category::temporaries, tied, {BlockKind::tied_grad});
                }
            return;
        }
        if (!rule_.gradients_sharded) return;
        if (!units_.completes_gradients(i) || !unsharded_grad_live_[u]) return;
        const std::uint64_t rs = terms_.reduce_scatter_bytes(u);
        ledger_.alloc(Category::temporaries, rs, tag(BlockKind::reduce_scatter, u));  // its output
        if (rule_.grads_allocated_in_backward && !shard_grad_live_[u]) {
            shard_grad_live_[u] = true;
            ledger_.alloc(Category::gradients, terms_.shard_grad_bytes(u),
                          tag(BlockKind::shard_grad, u));
        }
        ledger_.release(Category::temporaries, rs, tag(BlockKind::reduce_scatter, u));
        unsharded_grad_live_[u] = false;
        ledger_.release(Category::temporaries, terms_.unit_grad_bytes(u),
                        tag(BlockKind::unit_grad, u));
    }

    void optimizer_step() {
        ledger_.begin_action("optimizer");
        time_s_ = std::max(time_s_, comm_free_s_);
        for (std::size_t u : units_.finish_step().freed)
            ledger_.release(Category::unsharded, terms_.unit_bytes(u), tag(BlockKind::unit, u));
        for (std::size_t b = 0; b < boundary_live_.size(); ++b) {
            frontier_[b] = held_prev_[b] = held_next_[b] = false;
            boundary_maybe_free(b);
        }
        static const std::string op = "optimizer.step";
        // torch.optim.AdamW(foreach=True): _foreach_sqrt(exp_avg_sq) makes one
        // parameter-sized temporary of the state dtype.
        if (const std::uint64_t tmp = terms_.optimizer_temp_bytes()) {
            ledger_.alloc(Category::temporaries, tmp, {BlockKind::optimizer_temp}, &op);
            ledger_.release(Category::temporaries, tmp, {BlockKind::optimizer_temp});
        }
        compute(terms_.optimizer_step_s(gpu_, tm_));
        after_optimizer();
        ledger_.end_action();
    }

    const Chain& c_;
    const Plan& plan_;
    const GpuSpec& gpu_;
    const StepTimeModel tm_;
    StepTerms terms_;
    const ShardingRule& rule_;
    UnitPolicy units_;
    ReferenceForward reference_;
    Ledger ledger_;
    std::vector<GraphFacts> facts_;
    std::vector<std::vector<char>> live_, grad_live_;
    std::vector<char> boundary_live_, bgrad_live_;
    std::vector<std::uint64_t> boundary_bytes_;
    std::vector<bool> frontier_, held_prev_, held_next_;
    std::vector<bool> unsharded_grad_live_, shard_grad_live_, cast_live_;
    std::vector<bool> backward_done_, on_host_, rng_live_;
    std::vector<HeldMask> masks_;   // the eager masks (StepTerms::eager_mask_count)
    bool embedding_held_ = false;   // StepTerms::forward_held_embedding_bytes is live
    bool norm_input_held_ = false;  // the final norm's input, until the base model returns
    bool rotary_live_ = false;      // StepTerms::rotary_bytes is live
    double previous_action_s_ = 0;
    double time_s_ = 0;
    NetworkSpec net_;
    bool overlap_ = true;
    std::vector<double> unit_ready_s_;  // when each unit's last all-gather ends
    double comm_free_s_ = 0;            // when the communication stream is next free
    double busy_s_ = 0;                 // compute time alone
    double comm_s_ = 0;                 // every collective's time
    double bucket_bytes_ = 0;           // gradients waiting for a full bucket
    std::uint64_t buckets_sent_ = 0;
    SimResult result_;
};

}  // namespace

SimResult simulate(const Chain& chain, const Plan& plan, const GpuSpec& gpu, const Reserve& reserve,
                   const StepTimeModel& time_model) {
    assert(plan.keeps.size() == chain.stages.size());
    return Replay(chain, plan, gpu, time_model).run(reserve, false);
}

SimResult simulate_traced(const Chain& chain, const Plan& plan, const GpuSpec& gpu,
                          const Reserve& reserve, const StepTimeModel& time_model) {
    assert(plan.keeps.size() == chain.stages.size());
    return Replay(chain, plan, gpu, time_model).run(reserve, true);
}

std::string block_name(const Chain& c, const BlockTag& t) {
    const auto stage = [&](std::size_t i) {
        return i < c.stages.size() ? c.stages[i].name : fmt::format("stage {}", i);
    };
    const auto tensor = [&](std::size_t i, std::size_t s) {
        if (i >= c.stages.size()) return fmt::format("storage {}", s);
        const StageGraph& g = c.graph_of(i);
        return s < g.tensors().size() ? g.tensor(static_cast<TensorId>(s)).name
                                      : fmt::format("storage {}", s);
    };
    const auto input = [&](std::size_t i) {
        return i < c.stages.size() ? fmt::format("input of {}", stage(i))
                                   : fmt::format("output of {}", stage(i - 1));
    };
    switch (t.kind) {
        case BlockKind::states:
            return fmt::format("{} (this rank's)", category_name(static_cast<Category>(t.a)));
        case BlockKind::accumulated:
            return "gradients of the earlier micro-steps";
        case BlockKind::boundary:
            return input(t.a);
        case BlockKind::storage:
            return fmt::format("{}: {}", stage(t.a), tensor(t.a, t.b));
        case BlockKind::workspace:
            return "workspace";
        case BlockKind::unit:
            return t.a == 0 ? "root unit's parameters, gathered"
                            : fmt::format("unit {} parameters, gathered", t.a);
        case BlockKind::cast:
            return fmt::format("{}: autocast weight copies", stage(t.a));
        case BlockKind::mask:
            return fmt::format("eager causal mask {}", t.a);
        case BlockKind::held_embedding:
            return "inputs_embeds (the base model's local)";
        case BlockKind::rotary:
            return "rotary cos and sin";
        case BlockKind::rng:
            return fmt::format("{}: checkpoint's saved RNG state", stage(t.a));
        case BlockKind::grad:
            return fmt::format("{}: gradient of {}", stage(t.a), tensor(t.a, t.b));
        case BlockKind::boundary_grad:
            return fmt::format("gradient of the {}", input(t.a));
        case BlockKind::unit_grad:
            return fmt::format("unit {} gradients, unsharded", t.a);
        case BlockKind::reduce_scatter:
            return fmt::format("unit {} reduce-scatter output", t.a);
        case BlockKind::shard_grad:
            return fmt::format("unit {} gradient shard (p.grad)", t.a);
        case BlockKind::ddp_grad:
            return fmt::format("{}: parameter gradients (p.grad)", stage(t.a));
        case BlockKind::tied_grad:
            return "tied embedding's own gradient";
        case BlockKind::optimizer_temp:
            return "optimizer step temporary";
        case BlockKind::reference:
            return "reference model's forward (DPO)";
    }
    return "unknown";
}

}  // namespace remat
