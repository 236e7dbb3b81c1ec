// Numeric properties over 400 random valid questions (issue 12): whatever the model, profile,
// precision, sharding, world size and strategy, the replay's peak and FLOPs grow with the
// micro-batch and the sequence, the peak never falls below the model states, and the peak's
// breakdown sums to the peak exactly. Seeded, so a failure names a question that reproduces.
#include <doctest/doctest.h>
#include <fmt/format.h>

#include <array>
#include <random>
#include <string>

#include "planner/config/error.hpp"
#include "planner/simulate/simulate.hpp"
#include "planner/strategy/strategy.hpp"

using namespace remat;

namespace {

struct Question {
    std::string model;
    RunOptions options;
    StrategySpec strategy;
    std::string describe() const {
        return fmt::format("{} B {} S {} {} {} {} x{} {} {}", model, options.micro_batch,
                           options.seq, profile_name(options.profile),
                           precision_name(options.precision), sharding_name(options.sharding),
                           options.world_size, optimizer_name(options.optimizer), strategy.name());
    }
};

template <class T, std::size_t N>
T pick(std::mt19937_64& rng, const std::array<T, N>& from) {
    return from[std::uniform_int_distribution<std::size_t>(0, N - 1)(rng)];
}

// Strategies whose keeps do not depend on the memory left: their peak is monotone in B and S.
// greedy-budget and optimal trade memory for recomputation as the budget tightens, so only
// the forward and backward FLOPs (not the recomputation) are monotone for them.
bool fixed_keeps(const StrategySpec& s) {
    return s.kind != StrategyKind::greedy_budget && s.kind != StrategyKind::optimal;
}

struct Outcome {
    SimResult result;
    std::uint64_t states = 0;
};

Outcome replay(const Question& q, const GpuSpec& gpu) {
    const Chain c = build_chain(load_model(q.model), q.options);
    PlanContext ctx;
    ctx.gpu = &gpu;
    ctx.reserve = default_reserve(gpu);
    ctx.capacity_bytes = gpu.capacity_bytes;
    ctx.memory_slots = 256;  // optimal's resolution: coarse keeps the suite quick
    const Plan plan = make_plan(c, q.strategy, ctx);
    return {simulate(c, plan, gpu, ctx.reserve), model_states(c).total()};
}

void check_invariants(const Question& q, const Outcome& o) {
    CAPTURE(q.describe());
    const SimResult& r = o.result;
    CHECK(r.at_peak.allocator_total() == r.allocator_peak_bytes);
    CHECK(r.allocator_peak_bytes + r.at_peak.reserve_bytes == r.peak_bytes);
    CHECK(r.allocator_peak_bytes >= o.states);
    std::uint64_t highest = 0;
    for (const TimelinePoint& t : r.timeline) {
        CHECK(t.live_bytes <= t.peak_bytes);
        highest = std::max(highest, t.peak_bytes);
    }
    CHECK(highest == r.allocator_peak_bytes);
}

void check_grows(const Question& small, const Outcome& a, const Question& large, const Outcome& b) {
    CAPTURE(small.describe());
    CAPTURE(large.describe());
    CHECK(b.result.forward_flops > a.result.forward_flops);
    CHECK(b.result.backward_flops > a.result.backward_flops);
    if (fixed_keeps(small.strategy)) {
        CHECK(b.result.peak_bytes >= a.result.peak_bytes);
        CHECK(b.result.allocator_peak_bytes >= a.result.allocator_peak_bytes);
        CHECK(b.result.recompute_flops >= a.result.recompute_flops);
    }
}

}  // namespace

TEST_SUITE("properties") {
    TEST_CASE("properties::peaks and FLOPs over random questions") {
        const GpuSpec gpu = load_gpu("h100-80gb");
        const std::array<const char*, 5> models = {"tiny-gpt2", "tiny-llama", "gpt2", "llama-1b",
                                                   "pythia-6.9b"};
        const std::array<Profile, 4> profiles = {Profile::sdpa, Profile::hf_eager,
                                                 Profile::megatron, Profile::remat};
        const std::array<Precision, 4> precisions = {Precision::fp32, Precision::bf16_mixed,
                                                     Precision::fp16_mixed, Precision::bf16};
        const std::array<Sharding, 8> shardings = {
            Sharding::none,  Sharding::fsdp,  Sharding::fsdp_grad_op, Sharding::zero1,
            Sharding::zero2, Sharding::zero3, Sharding::megatron,     Sharding::megatron_distopt};
        const std::array<std::uint64_t, 4> worlds = {1, 2, 4, 8};
        const std::array<std::uint64_t, 4> seqs = {32, 64, 128, 256};
        const std::array<Optimizer, 2> optimizers = {Optimizer::adamw, Optimizer::sgd};
        const std::vector<StrategySpec> strategies = all_strategies();
        std::mt19937_64 rng(20261203);
        int checked = 0, refused = 0;
        while (checked < 400) {
            Question q;
            q.model = pick(rng, models);
            q.options.micro_batch = std::uniform_int_distribution<std::uint64_t>(1, 4)(rng);
            q.options.seq = pick(rng, seqs);
            q.options.profile = pick(rng, profiles);
            q.options.precision = pick(rng, precisions);
            q.options.sharding = pick(rng, shardings);
            q.options.world_size = pick(rng, worlds);
            q.options.optimizer = pick(rng, optimizers);
            q.strategy = strategies[std::uniform_int_distribution<std::size_t>(
                0, strategies.size() - 1)(rng)];
            Question wider = q, longer = q;
            wider.options.micro_batch += std::uniform_int_distribution<std::uint64_t>(1, 3)(rng);
            longer.options.seq *= 2;
            Outcome base, w, l;
            try {
                base = replay(q, gpu);
            } catch (const InputError&) {
                ++refused;  // a combination the planner refuses (a profile without that precision,
                            // ...)
                REQUIRE(refused < 1000);
                continue;
            }
            w = replay(wider, gpu);
            l = replay(longer, gpu);
            check_invariants(q, base);
            check_invariants(wider, w);
            check_invariants(longer, l);
            check_grows(q, base, wider, w);
            check_grows(q, base, longer, l);
            ++checked;
        }
        MESSAGE(
            fmt::format("{} questions checked, {} refused combinations skipped", checked, refused));
    }
}
