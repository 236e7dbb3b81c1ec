#include "planner/strategy/optimal.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstddef>
#include <cstdlib>
#include <limits>
#include <stdexcept>

#include "planner/config/checked.hpp"
#include "planner/config/error.hpp"

#ifdef __linux__
#include <sys/mman.h>
#endif

namespace remat {
namespace {

enum Option : std::uint64_t { opt_all = 0, opt_sel = 1, opt_ck = 2, opt_off = 3 };

// A back-pointer, packed: option (2 bits) | split offset s' - s (20) | a (21) | b (21), a and b
// the points taken from the two sub-frontiers (a alone for A and S).
constexpr unsigned offset_shift = 2, a_shift = 22, b_shift = 43;
constexpr std::uint64_t max_offset = (std::uint64_t{1} << 20) - 1,
                        max_index = (std::uint64_t{1} << 21) - 1;

std::uint64_t choice_of(Option o, std::size_t split_offset) {
    return o | split_offset << offset_shift;
}
Option option_of(std::uint64_t back) { return static_cast<Option>(back & 3); }
std::size_t offset_of(std::uint64_t back) { return (back >> offset_shift) & max_offset; }
std::uint32_t a_of(std::uint64_t back) {
    return static_cast<std::uint32_t>((back >> a_shift) & max_index);
}
std::uint32_t b_of(std::uint64_t back) { return static_cast<std::uint32_t>(back >> b_shift); }
std::uint64_t with_points(std::uint64_t choice, std::uint64_t a, std::uint64_t b) {
    return choice | a << a_shift | b << b_shift;
}

// A candidate point of the subproblem being built.
struct Cand {
    std::uint64_t need;  // bytes above base, residents outside the subproblem excluded
    double time;
    std::uint64_t back;
};

// Appends p to a need-ascending list, keeping it a Pareto frontier (time strictly falling).
void push(std::vector<Cand>& out, const Cand& p) {
    if (!out.empty()) {
        if (p.time >= out.back().time) return;
        if (p.need == out.back().need) {
            out.back() = p;
            return;
        }
    }
    out.push_back(p);
}

void merge_into(std::vector<Cand>& cur, const std::vector<Cand>& add, std::vector<Cand>& scratch) {
    if (add.empty()) return;
    scratch.clear();
    std::size_t i = 0, j = 0;
    while (i < cur.size() || j < add.size()) {
        const bool take_cur =
            j == add.size() ||
            (i < cur.size() && (cur[i].need < add[j].need ||
                                (cur[i].need == add[j].need && cur[i].time <= add[j].time)));
        push(scratch, take_cur ? cur[i++] : add[j++]);
    }
    cur.swap(scratch);
}

// What an option adds to its sub-schedules: the need of its own actions, their seconds.
struct Adds {
    std::uint64_t floor;
    double time;
    std::uint64_t choice;
};

// Split offsets tried for option C. On chains of up to long_chain stages, every one. Beyond,
// where trying every split is what costs, offsets 1..32 and then a geometric progression
// (x1.15): long segments differ little from their neighbours. Past very_long_chain stages the
// progression is x1.3 (63 offsets at 100,000 stages instead of 82; docs/optimal.md): on 10,000
// llama2-70b blocks the step time picked at 200 budgets moves by -0.08% to +0.13%, +0.001% on
// average, and the solve takes a quarter less.
constexpr std::size_t long_chain = 128, very_long_chain = 8192;
std::vector<char> tried_splits(std::size_t n) {
    std::vector<char> ok(n + 1, n <= long_chain ? 1 : 0);
    const double ratio = n > very_long_chain ? 1.3 : 1.15;
    double e = 1;
    while (e <= static_cast<double>(n)) {
        ok[static_cast<std::size_t>(e)] = 1;
        e = e < 32 ? e + 1 : std::floor(e * ratio);
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
           a.t_core == b.t_core && a.t_bwd == b.t_bwd && a.f_fwd == b.f_fwd &&
           a.f_core == b.f_core && a.block == b.block && a.b_start == b.b_start &&
           a.b_spike == b.b_spike;
}

std::int64_t diff(std::uint64_t a, std::uint64_t b) {
    return static_cast<std::int64_t>(a) - static_cast<std::int64_t>(b);
}

// The largest value over a range of positions, in O(1) after O(n log n): the sweeps of option C
// (the F_none forwards between a checkpoint and its split), without walking every stage.
class RangeMax {
  public:
    explicit RangeMax(std::vector<std::uint64_t> v) {
        levels_.push_back(std::move(v));
        for (std::size_t w = 1; 2 * w <= levels_[0].size(); w *= 2) {
            const std::vector<std::uint64_t>& prev = levels_.back();
            std::vector<std::uint64_t> next(prev.size() - w);
            for (std::size_t i = 0; i < next.size(); ++i) next[i] = std::max(prev[i], prev[i + w]);
            levels_.push_back(std::move(next));
        }
    }
    std::uint64_t of(std::size_t lo, std::size_t hi) const {  // lo..hi inclusive, lo <= hi
        std::size_t level = 0;
        while (std::size_t{2} << level <= hi - lo + 1) ++level;
        const std::size_t w = std::size_t{1} << level;
        return std::max(levels_[level][lo], levels_[level][hi + 1 - w]);
    }

  private:
    std::vector<std::vector<std::uint64_t>> levels_;
};

}  // namespace

// Every frontier, stored once and never moved: chunks of need, time and back-pointers, each
// frontier contiguous in one chunk. The DP's merges read need and time only. Recomputed FLOPs
// are not stored: only the answer's points need them (rflops_of).
struct OptimalPlanner::Store {
    // One allocation per chunk, in 2 MiB pages where Linux grants them: a long chain stores
    // tens of millions of points, and faulting them in 4 KiB pages costs more than writing them.
    struct Chunk {
        static constexpr std::size_t page = std::size_t{2} << 20;
        struct Free {
            void operator()(void* p) const { std::free(p); }
        };
        explicit Chunk(std::size_t cap) : capacity(cap) {
            const std::size_t align = cap * 3 * sizeof(std::uint64_t) >= page ? page : 64;
            const std::size_t bytes = (cap * 3 * sizeof(std::uint64_t) + align - 1) / align * align;
            memory.reset(std::aligned_alloc(align, bytes));
            if (!memory) throw std::bad_alloc();
#ifdef __linux__
            if (align == page)
                madvise(memory.get(), bytes, MADV_HUGEPAGE);  // advice: no error to handle
#endif
            auto* base = static_cast<std::byte*>(memory.get());
            need = reinterpret_cast<std::uint64_t*>(base);
            time = reinterpret_cast<double*>(base + cap * sizeof(std::uint64_t));
            back = reinterpret_cast<std::uint64_t*>(base + 2 * cap * sizeof(std::uint64_t));
        }
        std::size_t capacity, size = 0;
        std::unique_ptr<void, Free> memory;
        std::uint64_t* need;
        double* time;
        std::uint64_t* back;
    };
    struct Span {
        std::uint32_t chunk, offset, size;
    };
    // Chunks double from 4096 points (96 KiB) to 262144 (6 MiB): short chains stay small.
    static constexpr std::size_t first_chunk = 4096,
                                 last_chunk = Chunk::page / sizeof(std::uint64_t);
    std::vector<std::unique_ptr<Chunk>> chunks;
    std::vector<Span> spans;
    RangeMax seq_body, top_body;

    Store(RangeMax seq, RangeMax top) : seq_body(std::move(seq)), top_body(std::move(top)) {}

    Chunk& room_for(std::size_t points) {
        if (chunks.empty() || chunks.back()->size + points > chunks.back()->capacity) {
            const std::size_t next =
                chunks.empty() ? first_chunk : std::min(2 * chunks.back()->capacity, last_chunk);
            chunks.push_back(std::make_unique<Chunk>(std::max(next, points)));
        }
        return *chunks.back();
    }
};

// A subproblem's candidates: exact, a Pareto frontier merged option by option; slotted, the
// fastest candidate of each memory slot, kept in O(1) and made a frontier at the end.
class OptimalPlanner::Collector {
  public:
    Collector(std::uint64_t slot, std::uint64_t cap) : slot_(slot) {
        if (!slot_) return;
        const std::size_t slots = static_cast<std::size_t>(cap / slot_) + 1;
        need_.assign(slots, 0);
        time_.assign(slots, empty);
        back_.assign(slots, 0);
        inverse_ = 1.0 / static_cast<double>(slot_);
    }
    void begin() {
        out_.clear();
        lo_ = std::numeric_limits<std::size_t>::max();
        hi_ = 0;
    }
    void add(std::uint64_t need, double time, std::uint64_t back) {
        if (!slot_) {
            push(list_, {need, time, back});
            return;
        }
        Slots s = slots();
        s(need, time, back);
        take(s);
    }
    void end_option() {
        if (slot_) return;
        merge_into(out_, list_, scratch_);
        list_.clear();
    }
    // The subproblem's frontier, in out().
    void end() {
        if (!slot_) return;
        for (std::size_t i = lo_; i <= hi_ && lo_ <= hi_; ++i) {
            if (time_[i] == empty) continue;
            push(out_, {need_[i], time_[i], back_[i]});
            time_[i] = empty;
        }
    }
    // Slotted mode: the slots as a plain sink that a merge's loop keeps in registers (the
    // collector's members would be reloaded after every store), and its filled range back.
    struct Slots {
        std::uint64_t* __restrict need;
        double* __restrict time;
        std::uint64_t* __restrict back;
        std::uint64_t slot;
        double inverse;
        std::size_t lo, hi;
        void operator()(std::uint64_t n, double t, std::uint64_t b) {
            const std::size_t i = slot_of(n, slot, inverse);
            if (t < time[i] || (t == time[i] && n < need[i])) {
                need[i] = n;
                time[i] = t;
                back[i] = b;
                lo = std::min(lo, i);
                hi = std::max(hi, i);
            }
        }
    };
    Slots slots() { return {need_.data(), time_.data(), back_.data(), slot_, inverse_, lo_, hi_}; }
    void take(const Slots& s) {
        lo_ = s.lo;
        hi_ = s.hi;
    }
    const std::vector<Cand>& out() const { return out_; }
    // Exact mode: whether the frontier so far has a point at least as lean and as fast as
    // (need, time), so that no point of a candidate whose best corner that is can enter it.
    bool dominated(std::uint64_t need, double time) const {
        auto it = std::upper_bound(out_.begin(), out_.end(), need,
                                   [](std::uint64_t v, const Cand& p) { return v < p.need; });
        return it != out_.begin() && std::prev(it)->time <= time;
    }

  private:
    static constexpr double empty = std::numeric_limits<double>::infinity();
    // need / slot_ without a 64-bit division: a double estimate (exact to one slot while the
    // quotient is below 2^52), corrected. Needs stay below 2^63 (sizes are checked), so the
    // conversions are the signed ones, one instruction each.
    static std::size_t slot_of(std::uint64_t need, std::uint64_t slot, double inverse) {
        auto q = static_cast<std::uint64_t>(static_cast<std::int64_t>(
            static_cast<double>(static_cast<std::int64_t>(need)) * inverse));
        while (q > 0 && q * slot > need) --q;
        while ((q + 1) * slot <= need) ++q;
        return static_cast<std::size_t>(q);
    }

    std::uint64_t slot_;
    double inverse_ = 0;
    std::vector<std::uint64_t> need_, back_;  // by slot
    std::vector<double> time_;                // by slot; empty: no candidate
    std::size_t lo_ = 0, hi_ = 0;             // the slots filled
    std::vector<Cand> out_, list_, scratch_;
};

namespace {

// One sub-schedule run with `add` bytes resident beside it.
template <class F, class Emit>
void shift_clamp(const F& f, std::uint64_t add, const Adds& a, std::uint64_t cap, Emit&& emit) {
    add += f.shift;
    for (std::uint32_t i = 0; i < f.size; ++i) {
        const std::uint64_t need = std::max(a.floor, f.need[i] + add);
        if (need > cap) break;
        emit(need, a.time + f.time[i], with_points(a.choice, i, 0));
    }
}

// Two sub-schedules run one after the other: the need is the larger of the two (each with what
// stays resident beside it), the time the sum. A merge over the needs at which either side
// gains a point; needs strictly rise along a frontier, so each step consumes one point of one
// side or of both. Once one side has no point left, the rest is the other side's tail, which
// is where most of the work is (the short side of a split runs out first).
template <class F, class Emit>
void combine(const F& f1, std::uint64_t add1, const F& f2, std::uint64_t add2, const Adds& a,
             std::uint64_t cap, Emit&& emit) {
    const std::uint32_t n1 = f1.size, n2 = f2.size;
    if (n1 == 0 || n2 == 0) return;
    add1 += f1.shift;
    add2 += f2.shift;
    const std::uint64_t *N1 = f1.need, *N2 = f2.need;
    const double *T1 = f1.time, *T2 = f2.time;
    std::uint64_t T = std::max(N1[0] + add1, N2[0] + add2);
    std::uint32_t p = 0, q = 0;  // points consumed on each side
    while (p < n1 && N1[p] + add1 <= T) ++p;
    while (q < n2 && N2[q] + add2 <= T) ++q;
    for (;;) {
        const std::uint64_t need = std::max(a.floor, T);
        if (need > cap) return;
        emit(need, a.time + T1[p - 1] + T2[q - 1], with_points(a.choice, p - 1, q - 1));
        if (p == n1 || q == n2) break;
        const std::uint64_t u = N1[p] + add1, v = N2[q] + add2;
        T = std::min(u, v);
        p += u == T;
        q += v == T;
    }
    if (p == n1) {
        const double t = a.time + T1[n1 - 1];
        for (; q < n2; ++q) {
            const std::uint64_t need = std::max(a.floor, N2[q] + add2);
            if (need > cap) return;
            emit(need, t + T2[q], with_points(a.choice, n1 - 1, q));
        }
    } else {
        const double t = T2[n2 - 1];
        for (; p < n1; ++p) {
            const std::uint64_t need = std::max(a.floor, N1[p] + add1);
            if (need > cap) return;
            emit(need, a.time + T1[p] + t, with_points(a.choice, p, n2 - 1));
        }
    }
}

std::uint64_t saturating_add(std::uint64_t a, std::uint64_t b) {
    return a > std::numeric_limits<std::uint64_t>::max() - b
               ? std::numeric_limits<std::uint64_t>::max()
               : a + b;
}

}  // namespace

OptimalPlanner::~OptimalPlanner() = default;

OptimalPlanner::OptimalPlanner(const ChainCosts& k, std::uint64_t cap_bytes, OptimalOptions options,
                               const OptimalProgress& progress)
    : k_(k), opt_(options), progress_(progress), cap_(cap_bytes), n_(k.size()) {
    assert(n_ >= 1);
    if (n_ > max_offset)
        throw std::length_error(
            fmt::format("optimal planner: {} stages, at most {}", n_, max_offset));
    const std::uint32_t slots = opt_.memory_slots == auto_memory_slots
                                    ? (n_ <= long_chain ? 1024 : 256)
                                    : opt_.memory_slots;
    const std::uint64_t span = opt_.slot_span ? opt_.slot_span : cap_;
    slot_ = slots ? std::max<std::uint64_t>(1, span / slots) : 0;
    // No schedule is worth more memory than keeping everything, the fastest. Under DDP with
    // autocast the DP counts weight copies that the replay frees: it searches up to the cap plus
    // every copy, and each answer's peak is then its replayed one.
    const std::uint64_t cap = std::min(cap_, keep_all_need(k));
    const bool over_counted = k.casts_over_counted();
    std::uint64_t casts = 0;
    for (const StageCosts& s : k.stages) casts = saturating_add(casts, s.cast);
    cap_ = std::min(over_counted ? saturating_add(cap, casts) : cap, max_count);

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
    if (best_len < 2) {  // no run: every range is a prefix row
        b0_ = n_ - 1;
        b1_ = b0_;
        slope_ = 0;
    }
    const bool run = best_len >= 2;

    split_ok_ = opt_.memory_slots ? tried_splits(n_) : std::vector<char>(n_ + 1, 1);
    for (std::size_t o = 1; o <= n_; ++o)
        if (split_ok_[o]) offsets_.push_back(static_cast<std::uint32_t>(o));
    // The sweeps of option C: F_none(j) of a recompute needs env_rec(t) plus what depends on j
    // alone (env_rec_of's pair_gather term for j, x_j, the forward's peak); of the first pass,
    // env_first(j), x_j and the peak.
    std::vector<std::uint64_t> seq_body(n_), top_body(n_);
    f_prefix_.assign(n_ + 1, 0);
    t_prefix_.assign(n_ + 1, 0);
    for (std::size_t j = 0; j < n_; ++j) {
        const StageCosts& st = k.stages[j];
        const std::uint64_t own = st.x + st.fwd[static_cast<int>(Keep::none)].peak;
        seq_body[j] = own + (st.block ? k.pair_gather : 0);
        top_body[j] = own + st.env_first;
        f_prefix_[j + 1] = f_prefix_[j] + st.f_fwd;
        t_prefix_[j + 1] = t_prefix_[j] + st.t_fwd;
    }
    store_ = std::make_unique<Store>(RangeMax(std::move(seq_body)), RangeMax(std::move(top_body)));

    pre_.resize(b0_);
    for (std::size_t s = 0; s < b0_; ++s) pre_[s].assign(n_ - 1 - s, none);
    mark_needed_prefix();
    if (run) {
        seq_run_.assign(b1_ - b0_ + 2, none);
        suf_.resize(n_ - 2 - b1_);
        for (std::size_t t = b1_ + 1; t + 1 < n_; ++t) suf_[t - b1_ - 1].assign(t - b0_ + 1, none);
    }

    for (const std::vector<Id>& row : pre_)
        total_ += static_cast<std::size_t>(std::count(row.begin(), row.end(), Id{0}));
    for (const std::vector<Id>& column : suf_) total_ += column.size();
    total_ += (run ? b1_ - b0_ + 1 : 0) + n_;

    // Backward subproblems by length (each reads only shorter ones); then the first pass from
    // the head down.
    Collector col(slot_, cap_);
    for (std::size_t len = 1; len + 1 <= n_; ++len) {
        for (std::size_t s = 0; s < b0_ && s + len <= n_ - 1; ++s) {
            if (pre_[s][len - 1] == none) continue;  // read by no subproblem
            pre_[s][len - 1] = build_seq(s, s + len - 1, col);
        }
        if (!run) continue;
        if (len <= b1_ - b0_ + 1) {
            const std::size_t sc = slope_ >= 0 ? b0_ : b1_ + 1 - len;
            seq_run_[len] = build_seq(sc, sc + len - 1, col);
        }
        for (std::size_t t = b1_ + 1; t + 1 < n_; ++t) {
            if (t + 1 < b0_ + len) continue;  // s = t - len + 1 would be a prefix row
            const std::size_t s = t + 1 - len;
            suf_[t - b1_ - 1][s - b0_] = build_seq(s, t, col);
        }
    }
    top_.assign(n_, none);
    for (std::size_t s = n_; s-- > 0;) top_[s] = build_top(s, col);

    // The step: the optimizer's own peak may exceed the backward's.
    const View top0 = view(top_[0]);
    std::vector<Cand> finals;
    for (std::uint32_t i = 0; i < top0.size; ++i)
        push(finals, {std::max(top0.need[i], k.optimizer_need), k.step_time_s(top0.time[i]), i});
    struct Final {
        std::uint64_t peak;
        double time, rflops;
        std::uint32_t index;
    };
    std::vector<std::uint32_t> indices;
    for (const Cand& c : finals) indices.push_back(static_cast<std::uint32_t>(c.back));
    const std::vector<double> rflops = rflops_of(indices);
    std::vector<Final> out;
    for (std::size_t i = 0; i < finals.size(); ++i)
        out.push_back(
            {k.base + finals[i].need, finals[i].time, rflops[i] * k.micro_steps, indices[i]});
    if (over_counted) {
        // Each point's peak as replayed; then the points within the cap that no other beats.
        for (Final& f : out) {
            Schedule s;
            emit(f.index, s);
            f.peak = simulate_costs(k, s).allocator_peak_bytes;
        }
        std::stable_sort(out.begin(), out.end(), [](const Final& a, const Final& b) {
            return a.peak != b.peak ? a.peak < b.peak : a.time < b.time;
        });
        std::vector<Final> kept;
        for (const Final& f : out)
            if (f.peak - k.base <= cap && (kept.empty() || f.time < kept.back().time))
                kept.push_back(f);
        out = std::move(kept);
        cap_ = cap;
    }
    top_index_.clear();
    for (const Final& f : out) {
        points_.push_back({f.peak, f.time, f.rflops});
        top_index_.push_back(f.index);
    }
}

// Which prefix rows (s < b0) some subproblem reads: the first pass's splits, then, row by row
// and from the longest range down, what each read range reads in turn. Outside the rows every
// range is built (the run's lengths and the suffix columns are all read). Marked ranges hold
// any value but none until built.
void OptimalPlanner::mark_needed_prefix() {
    auto mark = [&](std::size_t s, std::size_t t) {
        if (s < b0_) pre_[s][t - s] = 0;
    };
    for (std::size_t s = 0; s < b0_; ++s)
        for (std::uint32_t o : offsets_) {
            if (s + o >= n_) break;
            mark(s, s + o - 1);
        }
    for (std::size_t s = 0; s < b0_; ++s)
        for (std::size_t t = n_ - 1; t-- > s;) {
            if (pre_[s][t - s] == none) continue;
            if (s < t) mark(s + 1, t);
            for (std::uint32_t o : offsets_) {
                if (s + o > t) break;
                mark(s + o, t);
                mark(s, s + o - 1);
            }
        }
}

OptimalPlanner::View OptimalPlanner::view(Id id, std::uint64_t shift) const {
    const Store::Span& sp = store_->spans[id];
    const Store::Chunk& c = *store_->chunks[sp.chunk];
    return {c.need + sp.offset, c.time + sp.offset, sp.size, shift};
}

OptimalPlanner::Id OptimalPlanner::seq_id(std::size_t s, std::size_t t) const {
    if (s < b0_) return pre_[s][t - s];
    if (t > b1_) return suf_[t - b1_ - 1][s - b0_];
    return seq_run_[t - s + 1];
}

OptimalPlanner::View OptimalPlanner::seq(std::size_t s, std::size_t t) const {
    if (s < b0_ || t > b1_) return view(seq_id(s, t));
    const std::size_t len = t - s + 1;
    const std::size_t sc = slope_ >= 0 ? b0_ : b1_ + 1 - len;
    const auto steps = static_cast<std::uint64_t>(s >= sc ? s - sc : sc - s);
    const auto g = static_cast<std::uint64_t>(slope_ >= 0 ? slope_ : -slope_);
    return view(seq_run_[len], steps * g);
}

// Stores the collector's frontier as a new subproblem's.
OptimalPlanner::Id OptimalPlanner::store(Collector& col) {
    const std::vector<Cand>& f = col.out();
    if (f.size() > max_index)
        throw InputError(
            fmt::format("optimal planner: a frontier of {} points, more than it can index ({}); "
                        "use fewer {} (0, exact, keeps every point)",
                        f.size(), max_index, named(Input::memory_slots)));
    Store::Chunk& c = store_->room_for(f.size());
    const auto offset = static_cast<std::uint32_t>(c.size);
    for (const Cand& p : f) {
        c.need[c.size] = p.need;
        c.time[c.size] = p.time;
        c.back[c.size] = p.back;
        ++c.size;
    }
    store_->spans.push_back({static_cast<std::uint32_t>(store_->chunks.size() - 1), offset,
                             static_cast<std::uint32_t>(f.size())});
    ++subproblems_;
    stored_ += f.size();
    if (progress_ &&
        (subproblems_ % std::max<std::size_t>(1, total_ / 100) == 0 || subproblems_ == total_))
        progress_(subproblems_, total_);
    return static_cast<Id>(store_->spans.size() - 1);
}

// The recomputed FLOPs of some of top_[0]'s points: the FLOPs of every recompute in their
// schedules, summed over the back-pointers with each sub-point's sum kept (sub-points are
// shared widely: the run's frontiers serve every position).
std::vector<double> OptimalPlanner::rflops_of(const std::vector<std::uint32_t>& top_points) const {
    std::vector<std::vector<double>> memo(store_->spans.size());
    constexpr double unknown = -1;
    struct Node {
        bool top;
        std::uint32_t s, t, index;
    };
    auto id_of = [&](const Node& v) { return v.top ? top_[v.s] : seq_id(v.s, v.t); };
    auto memo_of = [&](const Node& v) -> double& {
        std::vector<double>& m = memo[id_of(v)];
        if (m.empty()) m.assign(store_->spans[id_of(v)].size, unknown);
        return m[v.index];
    };
    auto back_of = [&](const Node& v) {
        const Store::Span& sp = store_->spans[id_of(v)];
        return store_->chunks[sp.chunk]->back[sp.offset + v.index];
    };
    // The sub-points a point is made of (0, 1 or 2), and the FLOPs of its own actions.
    auto parts = [&](const Node& v, Node* sub) {
        const std::uint64_t back = back_of(v);
        const Option o = option_of(back);
        const StageCosts& st = k_.stages[v.s];
        double own = 0;
        int n_sub = 0;
        if (o == opt_all || o == opt_sel) {
            if (!v.top) own = st.f_fwd;
            if (o == opt_sel) own += st.f_core;
            if (v.top ? v.s + 1 < n_ : v.s < v.t) sub[n_sub++] = {v.top, v.s + 1, v.t, a_of(back)};
        } else {
            const auto sp = static_cast<std::uint32_t>(v.s + offset_of(back));
            if (!v.top) own = static_cast<double>(f_prefix_[sp] - f_prefix_[v.s]);
            sub[n_sub++] = {v.top, sp, v.t, a_of(back)};
            sub[n_sub++] = {false, v.s, sp - 1, b_of(back)};
        }
        return std::pair{own, n_sub};
    };
    std::vector<double> out;
    std::vector<Node> stack;
    for (std::uint32_t i : top_points) {
        stack.push_back({true, 0, 0, i});
        while (!stack.empty()) {
            const Node v = stack.back();
            if (memo_of(v) != unknown) {
                stack.pop_back();
                continue;
            }
            Node sub[2];
            const auto [own, n_sub] = parts(v, sub);
            bool ready = true;
            for (int j = 0; j < n_sub; ++j)
                if (memo_of(sub[j]) == unknown) {
                    stack.push_back(sub[j]);
                    ready = false;
                }
            if (!ready) continue;
            double r = own;
            for (int j = 0; j < n_sub; ++j) r += memo_of(sub[j]);
            memo_of(v) = r;
            stack.pop_back();
        }
        out.push_back(memo_of({true, 0, 0, i}));
    }
    return out;
}

// The subproblem a stage's options are built for: stages s..last, every stage before s counted
// in `env` (the model states and checkpoints outside it), `rest(i)` the frontier of stages
// i..last, `body(a, b)` the peak of sweeping stages a..b forward without keeping them. A chain
// suffix (build_seq) and the top level (build_top, the whole step from s on) differ only there.
namespace {
template <class Rest, class Body>
struct Subproblem {
    std::size_t last;
    std::uint64_t env;
    Rest rest;
    Body body;
};
// Spelled out for clang 14, which does not deduce an aggregate's arguments (C++20's P1816).
template <class Rest, class Body>
Subproblem(std::size_t, std::uint64_t, Rest, Body) -> Subproblem<Rest, Body>;
}  // namespace

OptimalPlanner::Id OptimalPlanner::build_seq(std::size_t s, std::size_t t, Collector& col) {
    const std::uint64_t env_t = k_.stages[t].env_rec + (k_.stages[t].block ? k_.pair_gather : 0);
    return build(s,
                 Subproblem{t, k_.env_rec_of(s, t), [this, t](std::size_t i) { return seq(i, t); },
                            [this, env_t](std::size_t a, std::size_t b) {
                                return env_t + store_->seq_body.of(a, b);
                            }},
                 col);
}

OptimalPlanner::Id OptimalPlanner::build_top(std::size_t s, Collector& col) {
    return build(
        s,
        Subproblem{n_ - 1, k_.stages[s].env_first, [this](std::size_t i) { return view(top_[i]); },
                   [this](std::size_t a, std::size_t b) { return store_->top_body.of(a, b); }},
        col);
}

template <class Sub>
OptimalPlanner::Id OptimalPlanner::build(std::size_t s, const Sub& sub, Collector& col) {
    col.begin();
    if (slot_) {
        Collector::Slots sink = col.slots();
        options(s, sub, col, sink);
        col.take(sink);
    } else {
        auto emit = [&](std::uint64_t need, double time, std::uint64_t back) {
            col.add(need, time, back);
        };
        options(s, sub, col, emit);
    }
    col.end();
    return store(col);
}

template <class Sub, class Emit>
void OptimalPlanner::options(std::size_t s, const Sub& sub, Collector& col, Emit& emit) {
    const StageCosts& st = k_.stages[s];
    // A and S: keep stage s (whole, or all but its attention core).
    for (int sel = 0; sel <= (st.has_core ? 1 : 0); ++sel) {
        const ForwardCost& fc = st.fwd[sel ? 1 : 0];
        const std::uint64_t cf = sub.env + st.x + fc.peak;
        const std::uint64_t r = fc.keep + (fc.holds_input ? st.x : 0);
        std::uint64_t floor = cf, r2 = r;
        if (sel) {
            floor = std::max(floor, st.env_rsel + r + st.rsel_peak);
            r2 += st.rsel_keep;
        }
        floor = std::max(
            {floor, st.env_b + r2 + st.b_start + st.bwd_peak[sel], st.env_after_b + st.b_spike});
        const Adds a{floor, st.t_fwd + st.t_bwd + (sel ? st.t_core : 0),
                     choice_of(sel ? opt_sel : opt_all, 0)};
        if (s == sub.last) {
            if (floor <= cap_) emit(floor, a.time, a.choice);
        } else {
            shift_clamp(sub.rest(s + 1), r, a, cap_, emit);
        }
        col.end_option();
    }
    // C (and C^): checkpoint x_s, sweep forward to s', recurse on both sides.
    const std::uint64_t c0 = sub.env + st.x + st.fwd[static_cast<int>(Keep::input)].peak;
    for (std::uint32_t o : offsets_) {
        const std::size_t sp = s + o;
        if (sp > sub.last) break;
        std::uint64_t sweep_keep = c0, sweep_off = c0;
        if (sp - 1 > s) {
            const std::uint64_t body = sub.body(s + 1, sp - 1);
            sweep_keep = std::max(sweep_keep, body + st.x);
            sweep_off = std::max(sweep_off, body);
        }
        const bool keep_fits = sweep_keep <= cap_,
                   off_fits = opt_.offload && st.x > 0 && sweep_off <= cap_;
        if (!keep_fits && !off_fits) break;  // the sweeps only grow with s'
        const auto t_sweep = static_cast<double>(t_prefix_[sp] - t_prefix_[s]);
        const View s1 = sub.rest(sp), s2 = seq(s, sp - 1);
        if (s1.size == 0 || s2.size == 0) continue;
        if (!slot_) {
            const double best_time = t_sweep + s1.time[s1.size - 1] + s2.time[s2.size - 1];
            const std::uint64_t lean2 = s2.need[0] + s2.shift, lean1 = s1.need[0] + s1.shift;
            if (keep_fits &&
                col.dominated(std::max({sweep_keep, lean1 + st.x, lean2}), best_time) &&
                (!off_fits || col.dominated(std::max({sweep_off, lean1, lean2}), best_time)))
                continue;
        }
        if (keep_fits) {
            combine(s1, st.x, s2, 0, {sweep_keep, t_sweep, choice_of(opt_ck, o)}, cap_, emit);
            col.end_option();
        }
        if (off_fits) {
            const double copies =
                k_.copy_excess_s(s, st.t_fwd) + k_.copy_excess_s(s, k_.stages[sp].t_bwd);
            combine(s1, 0, s2, 0, {sweep_off, t_sweep + copies, choice_of(opt_off, o)}, cap_, emit);
            col.end_option();
        }
    }
}

std::optional<std::size_t> OptimalPlanner::fastest_within(std::uint64_t budget) const {
    std::optional<std::size_t> best;
    for (std::size_t i = 0; i < points_.size() && points_[i].allocator_peak_bytes <= budget; ++i)
        best = i;
    return best;
}

Schedule OptimalPlanner::schedule_of(std::size_t point) const {
    Schedule s;
    emit(top_index_[point], s);
    return s;
}

// The schedule from back-pointers, with an explicit stack: a chain that keeps every stage nests
// as deep as it is long.
void OptimalPlanner::emit(std::uint32_t top_point, Schedule& out) const {
    struct Item {
        enum Kind : std::uint8_t { top, seq, action } kind;
        ActionKind act = ActionKind::B;
        bool recompute = false;
        std::uint32_t s = 0, t = 0, index = 0;
    };
    auto act = [&](ActionKind k, std::size_t i, bool recompute, bool offload = false) {
        out.actions.push_back({k, static_cast<std::uint32_t>(i), recompute, offload});
    };
    std::vector<Item> stack{{Item::top, ActionKind::B, false, 0, 0, top_point}};
    while (!stack.empty()) {
        const Item it = stack.back();
        stack.pop_back();
        if (it.kind == Item::action) {
            act(it.act, it.s, it.recompute);
            continue;
        }
        const bool top = it.kind == Item::top;
        const std::size_t s = it.s, t = it.t;
        const Id id = top ? top_[s] : seq_id(s, t);
        const Store::Span& sp = store_->spans[id];
        const std::uint64_t back = store_->chunks[sp.chunk]->back[sp.offset + it.index];
        const Option option = option_of(back);
        const auto u32 = [](std::size_t v) { return static_cast<std::uint32_t>(v); };
        if (option == opt_all || option == opt_sel) {
            act(option == opt_sel ? ActionKind::F_sel : ActionKind::F_all, s, !top);
            stack.push_back({Item::action, ActionKind::B, false, u32(s), 0, 0});
            if (option == opt_sel)
                stack.push_back({Item::action, ActionKind::R_sel, true, u32(s), 0, 0});
            if (top && s + 1 < n_)
                stack.push_back({Item::top, ActionKind::B, false, u32(s + 1), 0, a_of(back)});
            if (!top && s < t)
                stack.push_back({Item::seq, ActionKind::B, false, u32(s + 1), u32(t), a_of(back)});
            continue;
        }
        const std::size_t split = s + offset_of(back);
        act(ActionKind::F_ck, s, !top, option == opt_off);
        for (std::size_t j = s + 1; j < split; ++j) act(ActionKind::F_none, j, !top);
        stack.push_back({Item::seq, ActionKind::B, false, u32(s), u32(split - 1), b_of(back)});
        stack.push_back(
            {top ? Item::top : Item::seq, ActionKind::B, false, u32(split), u32(t), a_of(back)});
    }
}

}  // namespace remat
