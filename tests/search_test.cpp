// The micro-batch searches (planner/search, planner/recommend): the fits test they step with
// answers evaluate()'s question exactly (stage-level replay, the optimal DP and its incumbents),
// so max-batch's answer is the replay's across models, sharding modes, precisions, offload and
// gradient accumulation; sizes too large to count stop the search instead of failing it; and
// recommend's work is bounded by the largest micro-batch at which anything fits.
#include "planner/search/search.hpp"

#include <doctest/doctest.h>
#include <fmt/format.h>

#include <algorithm>

#include "planner/config/checked.hpp"
#include "planner/search/gpus.hpp"
#include "planner/search/recommend.hpp"

using namespace remat;

namespace {

struct Setting {
    const char* model;
    Sharding sharding;
    Precision precision;
    Profile profile;
    std::uint64_t seq, world, accumulation;
    bool offload;
    const char* gpu;
};

const Setting settings[] = {
    {"llama2-7b", Sharding::fsdp, Precision::bf16_mixed, Profile::sdpa, 4096, 8, 1, false,
     "h100-80gb"},
    {"llama2-70b", Sharding::fsdp, Precision::bf16_mixed, Profile::sdpa, 4096, 64, 1, false,
     "h100-80gb"},
    {"gpt2", Sharding::none, Precision::bf16_mixed, Profile::hf_eager, 1024, 1, 1, false,
     "rtx4090-24gb"},
    {"gpt2-medium", Sharding::zero2, Precision::fp16_mixed, Profile::sdpa, 1024, 4, 2, true,
     "l4-24gb"},
    {"llama-1b", Sharding::fsdp_grad_op, Precision::bf16, Profile::megatron, 2048, 4, 1, true,
     "a100-40gb"},
    {"pythia-6.9b", Sharding::zero3, Precision::bf16_mixed, Profile::hf_eager, 2048, 8, 3, false,
     "a100-80gb"},
    {"tiny-llama", Sharding::none, Precision::fp32, Profile::remat, 512, 1, 1, true, "l4-24gb"},
};

Question question(const Setting& st) {
    Question q;
    q.model = load_model(st.model);
    q.gpu = load_gpu(st.gpu);
    q.options.seq = st.seq;
    q.options.sharding = st.sharding;
    q.options.precision = st.precision;
    q.options.profile = st.profile;
    q.options.world_size = st.world;
    q.options.grad_accumulation = st.accumulation;
    q.context.capacity_bytes = q.gpu.capacity_bytes;
    q.context.reserve = default_reserve(q.gpu);
    q.context.offload_checkpoints = st.offload;
    return q;
}

std::string describe(const Setting& st) {
    return fmt::format("{} {} {} {} seq {} x{} accumulation {}{} on {}", st.model,
                       sharding_name(st.sharding), precision_name(st.precision),
                       profile_name(st.profile), st.seq, st.world, st.accumulation,
                       st.offload ? " offload" : "", st.gpu);
}

}  // namespace

TEST_CASE(
    "search::max_micro_batch is the replay's answer: fits at b, not at b + 1, for every strategy") {
    int answers = 0;
    for (const Setting& st : settings) {
        const Question q = question(st);
        for (const StrategySpec& spec : all_strategies()) {
            if (!strategy_applies(spec, q.model.n_layers)) continue;
            INFO(describe(st), " ", spec.name());
            const MaxBatch m = max_micro_batch(q, spec);
            CHECK_FALSE(m.search_limit_reached);
            Question at = q;
            if (m.max_micro_batch > 0) {
                at.options.micro_batch = m.max_micro_batch;
                const Evaluation e = evaluate(at, spec);
                CHECK(e.fits);
                CHECK(e.result.peak_bytes == m.peak_bytes);
                CHECK(e.result.tokens_per_s == m.tokens_per_s);
                ++answers;
            }
            at.options.micro_batch = m.max_micro_batch + 1;
            CHECK_FALSE(evaluate(at, spec).fits);
        }
    }
    CHECK(answers > 40);
}

TEST_CASE("search::max_micro_batch is 0 when even one sequence does not fit") {
    Question q;
    q.model = load_model("llama2-70b");
    q.options.seq = 4096;
    q.gpu = load_gpu("h100-80gb");
    q.context.reserve = default_reserve(q.gpu);
    q.context.capacity_bytes = q.gpu.capacity_bytes;
    const MaxBatch m = max_micro_batch(q, parse_strategy("full"));
    CHECK(m.max_micro_batch == 0);
    CHECK(m.peak_bytes > q.context.capacity_bytes);
}

TEST_CASE("search::plan_fits answers evaluate()'s question without the op-level replay") {
    int checked = 0, fitting = 0;
    for (const Setting& st : settings) {
        const Question q = question(st);
        const MaxBatch full = max_micro_batch(q, {StrategyKind::full, 0});
        const std::uint64_t around = std::max<std::uint64_t>(full.max_micro_batch, 1);
        for (const StrategySpec& spec : all_strategies()) {
            if (!strategy_applies(spec, q.model.n_layers)) continue;
            for (std::uint64_t b :
                 {std::uint64_t{1}, around / 2 + 1, around, around + 1, 2 * around + 1}) {
                Question at = q;
                at.options.micro_batch = b;
                INFO(describe(st), " ", spec.name(), " micro-batch ", b);
                const bool fits = evaluate(at, spec).fits;
                CHECK(plan_fits(q, spec, b, q.context.capacity_bytes) == fits);
                ++checked;
                fitting += fits;
            }
        }
    }
    CHECK(checked > 250);
    CHECK(fitting > 50);
    CHECK(checked - fitting > 50);
}

TEST_CASE("search::a micro-batch too large to count does not fit, and the search stops there") {
    // Eager attention's scores are (B, A, S, S): at a million tokens one sequence is 64 TB and
    // a few hundred thousand sequences pass 2^63 bytes. With a GPU as large as can be counted
    // the search grows until then, and answers.
    Question q = question({"llama2-7b", Sharding::none, Precision::bf16_mixed, Profile::hf_eager,
                           1000000, 1, 1, false, "h100-80gb"});
    q.context.capacity_bytes = max_count;
    for (const StrategySpec& spec :
         {StrategySpec{StrategyKind::full, 0}, StrategySpec{StrategyKind::optimal, 0}}) {
        INFO(spec.name());
        const MaxBatch m = max_micro_batch(q, spec);
        CHECK(m.max_micro_batch > 0);
        CHECK(m.max_micro_batch < max_search_micro_batch);
        Question at = q;
        at.options.micro_batch = m.max_micro_batch + 1;
        bool next_fits = false;
        try {
            next_fits = evaluate(at, spec).fits;
        } catch (const SizeOverflow&) {
        }
        CHECK_FALSE(next_fits);
    }
    // Where even one sequence cannot be counted, the question itself is refused.
    Question huge = q;
    huge.options.seq = 3000000000;
    CHECK_THROWS_AS(max_micro_batch(huge, {StrategyKind::full, 0}), SizeOverflow);
}

TEST_CASE("search::the search stops at max_search_micro_batch and says so") {
    Question q = question({"tiny-gpt2", Sharding::none, Precision::bf16_mixed, Profile::sdpa, 64, 1,
                           1, false, "h100-80gb"});
    q.context.capacity_bytes = max_count;
    const MaxBatch m = max_micro_batch(q, {StrategyKind::none, 0});
    CHECK(m.max_micro_batch == max_search_micro_batch);
    CHECK(m.search_limit_reached);
}

TEST_CASE(
    "recommend::candidates stop at the largest micro-batch anything fits, whatever the batch or "
    "memory") {
    // A global batch of 2^62 sequences: its divisors are the powers of two, and trial division
    // to its square root would take minutes. Only those up to what fits are tried.
    Question q = question({"tiny-gpt2", Sharding::none, Precision::bf16_mixed, Profile::sdpa, 1024,
                           1, 1, false, "l4-24gb"});
    const Recommendation r = recommend(q, {std::uint64_t{1} << 62, {}});
    REQUIRE_FALSE(r.ranked.empty());
    std::uint64_t largest = 0;
    for (const Candidate& c : r.ranked) {
        CHECK((std::uint64_t{1} << 62) % c.micro_batch == 0);
        CHECK(c.micro_batch * c.grad_accumulation == std::uint64_t{1} << 62);
        CHECK(c.peak_bytes <= r.budget_bytes);
        largest = std::max(largest, c.micro_batch);
    }
    // The next divisor fits no candidate: optimal with offload, the leanest, does not fit there.
    CHECK_FALSE(plan_fits(q, {StrategyKind::optimal, 0}, 2 * largest, r.budget_bytes));
    CHECK(r.evaluated < 2000);

    // Memory as large as can be counted: every candidate is bounded by the search's limit.
    Question big = q;
    big.options.seq = 64;
    big.context.capacity_bytes = max_count;
    const Recommendation b = recommend(big, {});
    REQUIRE_FALSE(b.ranked.empty());
    for (const Candidate& c : b.ranked) CHECK(c.micro_batch <= max_search_micro_batch);
}

TEST_CASE("search::how many GPUs: cluster sizes, the fewest that fit, the fastest layout each") {
    CHECK(cluster_world_sizes(1) == std::vector<std::uint64_t>{1});
    CHECK(cluster_world_sizes(20) == std::vector<std::uint64_t>{1, 2, 4, 8, 16});
    CHECK(cluster_world_sizes(33) == std::vector<std::uint64_t>{1, 2, 4, 8, 16, 24, 32});
    Question q;
    q.model = load_model("llama2-7b");
    q.gpu = load_gpu("h100-80gb");
    q.options.seq = 4096;
    q.context.capacity_bytes = q.gpu.capacity_bytes;
    q.context.reserve = default_reserve(q.gpu);
    const GpuCountSweep s = gpus_needed(q, 4, std::nullopt, {});
    REQUIRE(s.rows.size() == 3);
    // Full AdamW training of 7B parameters needs 16 bytes each: not on one 80 GB GPU.
    CHECK_FALSE(s.rows[0].best);
    REQUIRE(s.fewest);
    CHECK(*s.fewest == 2);
    for (const GpuCountRow& row : s.rows) {
        CAPTURE(row.world_size);
        CHECK(row.layouts.size() == (row.world_size == 1 ? 1u : 6u));
        // The best of the row is the fastest of its shardings' bests, and fits.
        if (const Candidate* best = row.best_candidate()) {
            CHECK(best->peak_bytes <= q.gpu.capacity_bytes);
            for (const ShardingBest& l : row.layouts)
                if (l.best) CHECK(l.best->tokens_per_s <= best->tokens_per_s);
        }
    }
    // Each recommend at that world size and sharding agrees with the sweep's row.
    Question t = q;
    t.options.world_size = 2;
    t.options.sharding = s.rows[1].best_sharding();
    const Recommendation r = recommend(t, {});
    CHECK(r.ranked.front().tokens_per_s == s.rows[1].best_candidate()->tokens_per_s);
    // LoRA refuses ZeRO: those layouts are not tried.
    Question l = q;
    l.options.train = Training::lora;
    CHECK(shardings_to_try(l, 4, std::nullopt) ==
          std::vector<Sharding>{Sharding::none, Sharding::fsdp, Sharding::fsdp_grad_op});
}
