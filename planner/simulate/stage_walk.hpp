// One liveness walk over one stage's ops, for the two that count its bytes: the replay
// (simulate.cpp), which keeps every storage's state across the actions of a step, and the
// optimal planner's cost extraction (planner/strategy/chain_costs.cpp), which counts one action
// relative to where it starts. The walk decides what happens when: allocate on produce, free
// when the last consumer ran unless the action keeps it, what is kept for backward, the order of
// a backward's gradients and releases. The visitor decides what each event costs, and where the
// stage's boundaries (its input x and output) live: the walk frees only the stage's own storages.
//
//   struct Count {
//       void reads(const OpStep&);                // before the op: what it consumes must be live
//       void produce(TensorId s, const OpStep&);  // the op allocates storage s
//       void ran(const OpStep&);                  // it ran: workspace, time, FLOPs
//       void free(TensorId s);                    // no reader left (never x or the output)
//       void keep(TensorId s);                    // after the walk: s stays for backward
//   } count;
//   walk_forward(facts, kept_by(facts, Keep::input), count);
//   walk_recompute_core(facts, count);         // R_sel
//   walk_backward(facts, grads);               // grad_in, ran, grad_out, release
#pragma once
#include <cstddef>
#include <vector>

#include "planner/config/schedule.hpp"
#include "planner/simulate/graph_facts.hpp"

namespace remat {

using OpStep = GraphFacts::OpStep;

// What a first forward keeping `k` keeps, per storage.
inline std::vector<char> kept_by(const GraphFacts& f, Keep k) {
    std::vector<char> keep(f.bytes.size(), 0);
    for (TensorId s = 0; s < keep.size(); ++s) {
        switch (k) {
            case Keep::all:
                keep[s] = f.saved[s];
                break;
            case Keep::selective:
                keep[s] = f.sel_kept[s];
                break;
            case Keep::input:
                keep[s] = s == f.input;
                break;
            case Keep::none:
                break;
        }
    }
    return keep;
}

// What a forward action keeps: F_all all, F_sel selective, F_ck its input, F_none nothing.
inline Keep keep_of(ActionKind forward) {
    switch (forward) {
        case ActionKind::F_all:
            return Keep::all;
        case ActionKind::F_sel:
            return Keep::selective;
        case ActionKind::F_ck:
            return Keep::input;
        default:
            return Keep::none;
    }
}

inline bool is_internal(const GraphFacts& f, TensorId s) { return s != f.input && s != f.output; }

// A forward (first or recompute) keeping `keep`.
template <class Visitor>
void walk_forward(const GraphFacts& f, const std::vector<char>& keep, Visitor& v) {
    std::vector<int> uses = f.uses_all;
    for (const OpStep& op : f.steps) {
        v.reads(op);
        for (TensorId s : op.produce) v.produce(s, op);
        v.ran(op);
        for (TensorId s : op.consume)
            if (--uses[s] == 0 && !keep[s] && is_internal(f, s)) v.free(s);
        for (TensorId s : op.produce)
            if (uses[s] == 0 && !keep[s] && is_internal(f, s)) v.free(s);
    }
    for (TensorId s = 0; s < keep.size(); ++s)
        if (keep[s]) v.keep(s);
}

// R_sel: the attention core again, from what F_sel kept. What F_sel kept stays; what the core
// saves is restored; the rest is transient.
template <class Visitor>
void walk_recompute_core(const GraphFacts& f, Visitor& v) {
    std::vector<int> uses = f.uses_core;
    for (const OpStep& op : f.steps) {
        if (!op.core) continue;
        v.reads(op);
        for (TensorId s : op.produce) v.produce(s, op);
        v.ran(op);
        for (TensorId s : op.consume)
            if (--uses[s] == 0 && f.sel_dropped[s] && !f.saved[s] && is_internal(f, s)) v.free(s);
        for (TensorId s : op.produce)
            if (uses[s] == 0 && !f.sel_kept[s] && !(f.sel_dropped[s] && f.saved[s]) &&
                is_internal(f, s))
                v.free(s);
    }
    for (TensorId s = 0; s < f.bytes.size(); ++s)
        if (f.sel_dropped[s] && f.saved[s]) v.keep(s);
}

// B: the ops in reverse. Each op's input gradients appear, it runs, the gradients of its
// outputs go, and the saved storages whose last backward use it was are released.
//
//   struct Grads {
//       void grad_in(TensorId s, const OpStep&);  // the gradient of storage s is allocated
//       void ran(const OpStep&);                  // workspace, time, FLOPs
//       void grad_out(TensorId s);                // the gradient of s was consumed
//       void release(TensorId s);                 // s (x included) has no backward reader left
//   };
template <class Visitor>
void walk_backward(const GraphFacts& f, Visitor& v) {
    for (std::size_t k = f.steps.size(); k-- > 0;) {
        const OpStep& op = f.steps[k];
        for (TensorId s : op.grad_in) v.grad_in(s, op);
        v.ran(op);
        for (TensorId s : op.grad_out) v.grad_out(s);
        for (TensorId s : op.release) v.release(s);
    }
}

}  // namespace remat
