#include "planner/optimal.hpp"

#include <algorithm>
#include <cassert>
#include <limits>

namespace remat {
namespace {

using Point = OptimalPlanner::Point;
using Frontier = OptimalPlanner::Frontier;

enum Option : std::uint32_t { opt_all = 0, opt_sel = 1, opt_ck = 2, opt_off = 3 };

std::uint32_t choice_of(Option o, std::size_t split_offset) {
    return static_cast<std::uint32_t>(o) | static_cast<std::uint32_t>(split_offset << 2);
}

// Appends p to a need-ascending list, keeping it a Pareto frontier (time strictly falling).
void push(Frontier& out, const Point& p) {
    if (!out.empty()) {
        if (p.time >= out.back().time) return;
        if (p.need == out.back().need) {
            out.back() = p;
            return;
        }
    }
    out.push_back(p);
}

// Merges two frontiers into one.
void merge_into(Frontier& cur, const Frontier& add, Frontier& scratch) {
    if (add.empty()) return;
    scratch.clear();
    std::size_t i = 0, j = 0;
    while (i < cur.size() || j < add.size()) {
        const bool take_cur = j == add.size() ||
                              (i < cur.size() && (cur[i].need < add[j].need ||
                                                  (cur[i].need == add[j].need && cur[i].time <= add[j].time)));
        push(scratch, take_cur ? cur[i++] : add[j++]);
    }
    cur.swap(scratch);
}

struct Adds {
    std::uint64_t floor;  // need of the actions outside the sub-schedules
    double time, rflops;
    std::uint32_t choice;
};

// One sub-schedule run with `add` bytes resident beside it.
template <class Emit>
void shift_clamp(const Frontier& f, std::uint64_t add, const Adds& a, std::uint64_t cap, Emit&& emit) {
    for (std::uint32_t i = 0; i < f.size(); ++i) {
        const std::uint64_t need = std::max(a.floor, f[i].need + add);
        if (need > cap) break;
        emit({need, a.time + f[i].time, a.rflops + f[i].rflops, a.choice, i, 0});
    }
}

// Two sub-schedules run one after the other: the need is the larger of the two (each with what
// stays resident beside it), the time the sum.
template <class Emit>
void combine(const Frontier& f1, std::uint64_t add1, const Frontier& f2, std::uint64_t add2, const Adds& a,
             std::uint64_t cap, Emit&& emit) {
    std::size_t p = 0, q = 0;
    long i1 = -1, i2 = -1;
    while (p < f1.size() || q < f2.size()) {
        std::uint64_t T = std::numeric_limits<std::uint64_t>::max();
        if (p < f1.size()) T = std::min(T, f1[p].need + add1);
        if (q < f2.size()) T = std::min(T, f2[q].need + add2);
        while (p < f1.size() && f1[p].need + add1 <= T) i1 = static_cast<long>(p++);
        while (q < f2.size() && f2[q].need + add2 <= T) i2 = static_cast<long>(q++);
        if (i1 < 0 || i2 < 0) continue;
        const std::uint64_t need = std::max(a.floor, T);
        if (need > cap) break;
        const Point& x = f1[static_cast<std::size_t>(i1)];
        const Point& y = f2[static_cast<std::size_t>(i2)];
        emit({need, a.time + x.time + y.time, a.rflops + x.rflops + y.rflops, a.choice,
              static_cast<std::uint32_t>(i1), static_cast<std::uint32_t>(i2)});
    }
}

// Whether the frontier already has a point at least as lean and as fast as (need, time): then
// no point of a candidate whose best corner is (need, time) can enter it.
bool dominated(const Frontier& f, std::uint64_t need, double time) {
    auto it = std::upper_bound(f.begin(), f.end(), need, [](std::uint64_t v, const Point& p) { return v < p.need; });
    return it != f.begin() && std::prev(it)->time <= time;
}

// Split offsets tried for option C. On chains of up to long_chain stages, every one. Beyond,
// where trying every split is what costs, offsets 1..32 and then a geometric progression
// (x1.15): long segments differ little from their neighbours.
constexpr std::size_t long_chain = 128;
std::vector<char> tried_splits(std::size_t n) {
    std::vector<char> ok(n + 1, n <= long_chain ? 1 : 0);
    double e = 1;
    while (e <= static_cast<double>(n)) {
        ok[static_cast<std::size_t>(e)] = 1;
        e = e < 32 ? e + 1 : std::floor(e * 1.15);
    }
    return ok;
}

bool same_stage(const StageCosts& a, const StageCosts& b) {
    auto fwd_eq = [](const ForwardCost& x, const ForwardCost& y) {
        return x.peak == y.peak && x.keep == y.keep && x.holds_input == y.holds_input;
    };
    for (int kind = 0; kind < 4; ++kind)
        if (!fwd_eq(a.fwd[kind], b.fwd[kind])) return false;
    return a.x == b.x && a.dx == b.dx && a.has_core == b.has_core && a.rsel_peak == b.rsel_peak &&
           a.rsel_keep == b.rsel_keep && a.bwd_peak == b.bwd_peak && a.t_fwd == b.t_fwd &&
           a.t_core == b.t_core && a.t_bwd == b.t_bwd && a.f_fwd == b.f_fwd && a.f_core == b.f_core &&
           a.block == b.block && a.b_start == b.b_start && a.b_spike == b.b_spike;
}

std::int64_t diff(std::uint64_t a, std::uint64_t b) { return static_cast<std::int64_t>(a) - static_cast<std::int64_t>(b); }

}  // namespace

// A subproblem's candidates: exact, a Pareto frontier merged option by option; slotted, the
// fastest candidate of each memory slot, inserted in O(1) and made a frontier at the end.
class OptimalPlanner::Collector {
public:
    Collector(std::uint64_t slot, std::uint64_t cap) : slot_(slot) {
        if (slot_) best_.assign(cap / slot_ + 1, Point{0, -1, 0, 0, 0, 0});
    }
    void begin(Frontier& out) {
        out_ = &out;
        out.clear();
        for (std::size_t i : touched_) best_[i].time = -1;
        touched_.clear();
    }
    void add(const Point& p) {
        if (!slot_) {
            push(list_, p);
            return;
        }
        Point& b = best_[p.need / slot_];
        if (b.time < 0) touched_.push_back(p.need / slot_);
        if (b.time < 0 || p.time < b.time || (p.time == b.time && p.need < b.need)) b = p;
    }
    void end_option() {
        if (slot_) return;
        merge_into(*out_, list_, scratch_);
        list_.clear();
    }
    void end() {
        if (!slot_) return;
        std::sort(touched_.begin(), touched_.end());
        for (std::size_t i : touched_) push(*out_, best_[i]);
    }

private:
    std::uint64_t slot_;
    std::vector<Point> best_;  // time < 0: empty
    std::vector<std::size_t> touched_;
    Frontier list_, scratch_, *out_ = nullptr;
};

OptimalPlanner::OptimalPlanner(const ChainCosts& k, std::uint64_t cap_bytes, OptimalOptions options)
    : k_(k), opt_(options), cap_(cap_bytes), n_(k.size()) {
    assert(n_ >= 1);
    const std::uint32_t slots = opt_.memory_slots == auto_memory_slots
                                    ? (n_ <= long_chain ? 1024 : 256)
                                    : opt_.memory_slots;
    const std::uint64_t span = opt_.slot_span ? opt_.slot_span : cap_;
    slot_ = slots ? std::max<std::uint64_t>(1, span / slots) : 0;

    // The longest run of identical stages whose progress terms move by one slope per position.
    std::size_t best_len = 0;
    for (std::size_t i = 0; i + 1 < n_;) {
        std::size_t j = i;
        std::int64_t g = 0;
        while (j + 1 < n_ - 1 && same_stage(k.stages[j], k.stages[j + 1])) {
            const StageCosts &u = k.stages[j], &v = k.stages[j + 1];
            const std::int64_t d = diff(v.env_rec, u.env_rec);
            if (j > i && d != g) break;
            if (diff(v.env_rsel, u.env_rsel) != d || diff(v.env_b, u.env_b) != d ||
                diff(v.env_after_b, u.env_after_b) != d)
                break;
            g = d;
            ++j;
        }
        if (j - i + 1 > best_len && j > i) {
            best_len = j - i + 1;
            b0_ = i;
            b1_ = j;
            slope_ = g;
        }
        i = j + 1;
    }
    uniform_ = best_len >= 2;

    // Backward subproblems by length; then the first pass from the head down.
    split_ok_ = opt_.memory_slots ? tried_splits(n_) : std::vector<char>(n_ + 1, 1);
    Frontier f;
    Collector col(slot_, cap_);
    if (uniform_) seq_run_.assign(b1_ - b0_ + 2, {});
    for (std::size_t len = 1; len + 1 <= n_; ++len) {
        bool run_done = false;
        for (std::size_t s = 0; s + len <= n_ - 1; ++s) {
            const std::size_t t = s + len - 1;
            const bool in_run = uniform_ && s >= b0_ && t <= b1_;
            if (in_run) {
                if (run_done) continue;
                run_done = true;
                const std::size_t sc = slope_ >= 0 ? b0_ : b1_ + 1 - len;
                build_seq(sc, sc + len - 1, f, col);
                seq_run_[len] = std::move(f);
            } else {
                build_seq(s, t, f, col);
                seq_[s * n_ + t] = std::move(f);
            }
            f = {};
            ++subproblems_;
        }
    }
    top_.assign(n_, {});
    for (std::size_t s = n_; s-- > 0;) {
        build_top(s, top_[s], col);
        ++subproblems_;
    }
    // The step: the optimizer's own peak may exceed the backward's.
    Frontier finals;
    for (std::uint32_t i = 0; i < top_[0].size(); ++i) {
        const Point& p = top_[0][i];
        push(finals, {std::max(p.need, k.optimizer_need), k.step_time_s(p.time), p.rflops * k.micro_steps, 0, i, 0});
    }
    for (const Point& p : finals) points_.push_back({k.base + p.need, p.time, p.rflops});
    top_index_.clear();
    for (const Point& p : finals) top_index_.push_back(p.a);
}

OptimalPlanner::SeqRef OptimalPlanner::seq(std::size_t s, std::size_t t) const {
    if (uniform_ && s >= b0_ && t <= b1_) {
        const std::size_t len = t - s + 1;
        const std::size_t sc = slope_ >= 0 ? b0_ : b1_ + 1 - len;
        const auto steps = static_cast<std::uint64_t>(s >= sc ? s - sc : sc - s);
        const auto g = static_cast<std::uint64_t>(slope_ >= 0 ? slope_ : -slope_);
        return {&seq_run_[len], steps * g};
    }
    return {&seq_.at(s * n_ + t), 0};
}


void OptimalPlanner::build_seq(std::size_t s, std::size_t t, Frontier& out, Collector& col) {
    const StageCosts& st = k_.stages[s];
    col.begin(out);
    auto emit = [&](const Point& p) { col.add(p); };
    // A and S: keep stage s (whole, or all but its attention core).
    for (int sel = 0; sel <= (st.has_core ? 1 : 0); ++sel) {
        const ForwardCost& fc = st.fwd[sel ? 1 : 0];
        const std::uint64_t cf = k_.env_rec_of(s, t) + st.x + fc.peak;
        const std::uint64_t r = fc.keep + (fc.holds_input ? st.x : 0);
        std::uint64_t floor = cf, r2 = r;
        if (sel) {
            floor = std::max(floor, st.env_rsel + r + st.rsel_peak);
            r2 += st.rsel_keep;
        }
        floor = std::max({floor, st.env_b + r2 + st.b_start + st.bwd_peak[sel], st.env_after_b + st.b_spike});
        const Adds a{floor, st.t_fwd + st.t_bwd + (sel ? st.t_core : 0), st.f_fwd + (sel ? st.f_core : 0),
                     choice_of(sel ? opt_sel : opt_all, 0)};
        if (s == t) {
            if (floor <= cap_) emit({floor, a.time, a.rflops, a.choice, 0, 0});
        } else {
            const SeqRef sub = seq(s + 1, t);
            shift_clamp(*sub.f, r + sub.shift, a, cap_, emit);
        }
        col.end_option();
    }
    // C (and C^): checkpoint x_s, sweep forward to s', recurse on both sides.
    const std::uint64_t c0 = k_.env_rec_of(s, t) + st.x + st.fwd[static_cast<int>(Keep::input)].peak;
    std::uint64_t sweep_keep = c0, sweep_off = c0;
    double t_sweep = 0, f_sweep = 0;
    for (std::size_t sp = s + 1; sp <= t; ++sp) {
        const StageCosts& prev = k_.stages[sp - 1];
        t_sweep += prev.t_fwd;
        f_sweep += prev.f_fwd;
        if (sp - 1 > s) {
            const std::uint64_t body = k_.env_rec_of(sp - 1, t) + prev.x + prev.fwd[static_cast<int>(Keep::none)].peak;
            sweep_keep = std::max(sweep_keep, body + st.x);
            sweep_off = std::max(sweep_off, body);
        }
        const bool keep_fits = sweep_keep <= cap_, off_fits = opt_.offload && st.x > 0 && sweep_off <= cap_;
        if (!keep_fits && !off_fits) break;  // the sweeps only grow with s'
        if (!split_ok_[sp - s]) continue;
        const SeqRef s1 = seq(sp, t), s2 = seq(s, sp - 1);
        if (s1.f->empty() || s2.f->empty()) continue;
        const double best_time = t_sweep + s1.f->back().time + s2.f->back().time;
        const std::uint64_t lean2 = s2.f->front().need + s2.shift, lean1 = s1.f->front().need + s1.shift;
        if (!slot_ && keep_fits && dominated(out, std::max({sweep_keep, lean1 + st.x, lean2}), best_time) &&
            (!off_fits || dominated(out, std::max({sweep_off, lean1, lean2}), best_time)))
            continue;
        if (keep_fits) {
            combine(*s1.f, st.x + s1.shift, *s2.f, s2.shift,
                    {sweep_keep, t_sweep, f_sweep, choice_of(opt_ck, sp - s)}, cap_, emit);
            col.end_option();
        }
        if (off_fits) {
            const double copies = k_.copy_excess_s(s, st.t_fwd) + k_.copy_excess_s(s, k_.stages[sp].t_bwd);
            combine(*s1.f, s1.shift, *s2.f, s2.shift, {sweep_off, t_sweep + copies, f_sweep, choice_of(opt_off, sp - s)},
                    cap_, emit);
            col.end_option();
        }
    }
    col.end();
}

void OptimalPlanner::build_top(std::size_t s, Frontier& out, Collector& col) {
    const StageCosts& st = k_.stages[s];
    col.begin(out);
    auto emit = [&](const Point& p) { col.add(p); };
    for (int sel = 0; sel <= (st.has_core ? 1 : 0); ++sel) {
        const ForwardCost& fc = st.fwd[sel ? 1 : 0];
        const std::uint64_t cf = st.env_first + st.x + fc.peak;
        const std::uint64_t r = fc.keep + (fc.holds_input ? st.x : 0);
        std::uint64_t floor = cf, r2 = r;
        if (sel) {
            floor = std::max(floor, st.env_rsel + r + st.rsel_peak);
            r2 += st.rsel_keep;
        }
        floor = std::max({floor, st.env_b + r2 + st.b_start + st.bwd_peak[sel], st.env_after_b + st.b_spike});
        const Adds a{floor, st.t_fwd + st.t_bwd + (sel ? st.t_core : 0), sel ? st.f_core : 0,
                     choice_of(sel ? opt_sel : opt_all, 0)};
        if (s + 1 == n_) {
            if (floor <= cap_) emit({floor, a.time, a.rflops, a.choice, 0, 0});
        } else {
            shift_clamp(top_[s + 1], r, a, cap_, emit);
        }
        col.end_option();
    }
    const std::uint64_t c0 = st.env_first + st.x + st.fwd[static_cast<int>(Keep::input)].peak;
    std::uint64_t sweep_keep = c0, sweep_off = c0;
    double t_sweep = 0;
    for (std::size_t sp = s + 1; sp < n_; ++sp) {
        const StageCosts& prev = k_.stages[sp - 1];
        t_sweep += prev.t_fwd;
        if (sp - 1 > s) {
            const std::uint64_t body = prev.env_first + prev.x + prev.fwd[static_cast<int>(Keep::none)].peak;
            sweep_keep = std::max(sweep_keep, body + st.x);
            sweep_off = std::max(sweep_off, body);
        }
        const bool keep_fits = sweep_keep <= cap_, off_fits = opt_.offload && st.x > 0 && sweep_off <= cap_;
        if (!keep_fits && !off_fits) break;
        if (!split_ok_[sp - s]) continue;
        const SeqRef s2 = seq(s, sp - 1);
        if (top_[sp].empty() || s2.f->empty()) continue;
        const double best_time = t_sweep + top_[sp].back().time + s2.f->back().time;
        const std::uint64_t lean2 = s2.f->front().need + s2.shift, lean1 = top_[sp].front().need;
        if (!slot_ && keep_fits && dominated(out, std::max({sweep_keep, lean1 + st.x, lean2}), best_time) &&
            (!off_fits || dominated(out, std::max({sweep_off, lean1, lean2}), best_time)))
            continue;
        if (keep_fits) {
            combine(top_[sp], st.x, *s2.f, s2.shift, {sweep_keep, t_sweep, 0, choice_of(opt_ck, sp - s)}, cap_, emit);
            col.end_option();
        }
        if (off_fits) {
            const double copies = k_.copy_excess_s(s, st.t_fwd) + k_.copy_excess_s(s, k_.stages[sp].t_bwd);
            combine(top_[sp], 0, *s2.f, s2.shift, {sweep_off, t_sweep + copies, 0, choice_of(opt_off, sp - s)},
                    cap_, emit);
            col.end_option();
        }
    }
    col.end();
}

std::optional<std::size_t> OptimalPlanner::fastest_within(std::uint64_t budget) const {
    std::optional<std::size_t> best;
    for (std::size_t i = 0; i < points_.size() && points_[i].allocator_peak_bytes <= budget; ++i) best = i;
    return best;
}

Schedule OptimalPlanner::schedule_of(std::size_t point) const {
    Schedule s;
    emit_top(0, top_index_[point], s);
    return s;
}

namespace {
void act(Schedule& out, ActionKind k, std::size_t i, bool recompute, bool offload = false) {
    out.actions.push_back({k, static_cast<std::uint32_t>(i), recompute, offload});
}
}  // namespace

void OptimalPlanner::emit_seq(std::size_t s, std::size_t t, std::uint32_t idx, Schedule& out) const {
    const Point& p = (*seq(s, t).f)[idx];
    const auto option = static_cast<Option>(p.choice & 3);
    if (option == opt_all || option == opt_sel) {
        act(out, option == opt_sel ? ActionKind::F_sel : ActionKind::F_all, s, true);
        if (s < t) emit_seq(s + 1, t, p.a, out);
        if (option == opt_sel) act(out, ActionKind::R_sel, s, true);
        act(out, ActionKind::B, s, false);
        return;
    }
    const std::size_t sp = s + (p.choice >> 2);
    act(out, ActionKind::F_ck, s, true, option == opt_off);
    for (std::size_t j = s + 1; j < sp; ++j) act(out, ActionKind::F_none, j, true);
    emit_seq(sp, t, p.a, out);
    emit_seq(s, sp - 1, p.b, out);
}

void OptimalPlanner::emit_top(std::size_t s, std::uint32_t idx, Schedule& out) const {
    const Point& p = top_[s][idx];
    const auto option = static_cast<Option>(p.choice & 3);
    if (option == opt_all || option == opt_sel) {
        act(out, option == opt_sel ? ActionKind::F_sel : ActionKind::F_all, s, false);
        if (s + 1 < n_) emit_top(s + 1, p.a, out);
        if (option == opt_sel) act(out, ActionKind::R_sel, s, true);
        act(out, ActionKind::B, s, false);
        return;
    }
    const std::size_t sp = s + (p.choice >> 2);
    act(out, ActionKind::F_ck, s, false, option == opt_off);
    for (std::size_t j = s + 1; j < sp; ++j) act(out, ActionKind::F_none, j, false);
    emit_top(sp, p.a, out);
    emit_seq(s, sp - 1, p.b, out);
}

}  // namespace remat
