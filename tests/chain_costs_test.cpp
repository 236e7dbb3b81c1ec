// The optimal planner's stage-level accounting (planner/strategy/chain_costs) against the
// op-level replay (planner/simulate): on random schedules of the planner's family, across models,
// profiles, precisions and sharding modes, the two must give the same allocator peak, the
// same step time and the same recomputed FLOPs. The schedules are generated here from the
// family's grammar, independently of the planner's own code. Both walk a stage's ops with the
// same walk (planner/simulate/stage_walk.hpp); what this holds equal is the counting around it:
// the costs relative to an action's start, and the progress terms, against the replay's ledger.
#include "planner/strategy/chain_costs.hpp"

#include <doctest/doctest.h>
#include <fmt/format.h>

#include <random>

#include "planner/config/model.hpp"
#include "planner/simulate/simulate.hpp"

using namespace remat;

namespace {

struct FamilyGenerator {
    const ChainCosts& k;
    std::mt19937_64& rng;
    bool allow_offload;
    Schedule out;

    bool coin(int one_in) { return std::uniform_int_distribution<int>(0, one_in - 1)(rng) == 0; }
    std::size_t pick(std::size_t lo, std::size_t hi) {
        return std::uniform_int_distribution<std::size_t>(lo, hi)(rng);
    }
    void act(ActionKind kind, std::size_t i, bool recompute, bool offload = false) {
        out.actions.push_back({kind, static_cast<std::uint32_t>(i), recompute, offload});
    }
    // Backward through stages s..t (x_s live, t the next to run backward).
    void seq(std::size_t s, std::size_t t, bool first_pass) {
        const int option = s == t ? (coin(2) ? 0 : 1) : static_cast<int>(pick(0, 3));
        const bool sel = option == 1 && k.stages[s].has_core;
        if (option <= 1 || s == t) {
            act(sel ? ActionKind::F_sel : ActionKind::F_all, s, !first_pass);
            if (s < t) seq(s + 1, t, first_pass);
            if (sel) act(ActionKind::R_sel, s, true);
            act(ActionKind::B, s, false);
            return;
        }
        const std::size_t split = pick(s + 1, t);
        act(ActionKind::F_ck, s, !first_pass, allow_offload && coin(3));
        for (std::size_t j = s + 1; j < split; ++j) act(ActionKind::F_none, j, !first_pass);
        seq(split, t, first_pass);
        seq(s, split - 1, false);
    }
};

Chain chain_for(const char* model, Profile prof, Precision p, Sharding sh, std::uint64_t w,
                std::uint64_t b, std::uint64_t s, std::uint64_t accumulation = 1) {
    RunOptions o;
    o.grad_accumulation = accumulation;
    o.micro_batch = b;
    o.seq = s;
    o.precision = p;
    o.sharding = sh;
    o.world_size = w;
    o.profile = prof;
    return build_chain(load_model(model), o);
}

// A random schedule of the planner's family over k's stages.
Plan random_plan(const ChainCosts& k, std::mt19937_64& rng, bool allow_offload) {
    FamilyGenerator gen{k, rng, allow_offload, {}};
    gen.seq(0, k.size() - 1, true);
    Plan plan;
    plan.strategy = "random";
    plan.schedule = gen.out;
    plan.keeps = keeps_of(plan.schedule, k.size());
    return plan;
}

}  // namespace

TEST_CASE(
    "chain_costs::stage-level accounting equals the op-level replay on random schedules of the "
    "family") {
    const GpuSpec gpu = load_gpu("h100-80gb");
    std::mt19937_64 rng(20261122);
    int checked = 0, over_counted = 0;
    for (const char* model : {"tiny-gpt2", "tiny-llama", "gpt2"})
        for (Profile prof : {Profile::sdpa, Profile::hf_eager, Profile::megatron})
            for (Precision p : {Precision::fp32, Precision::bf16_mixed, Precision::bf16})
                for (Sharding sh :
                     {Sharding::none, Sharding::fsdp, Sharding::fsdp_grad_op, Sharding::zero1,
                      Sharding::zero2, Sharding::zero3, Sharding::megatron}) {
                    const std::uint64_t w =
                        sh == Sharding::none || sh == Sharding::megatron ? 1 : 4;
                    // DDP with autocast: the planner's accounting holds checkpointed stages'
                    // weight copies to their backward, an upper bound of the replay.
                    const bool upper_bound = sh == Sharding::none && p == Precision::bf16_mixed;
                    for (int trial = 0; trial < 12; ++trial) {
                        // A third of the trials accumulate gradients over 3 micro-steps.
                        const Chain c =
                            chain_for(model, prof, p, sh, w, 2, 128, trial % 3 == 2 ? 3 : 1);
                        const ChainCosts k = chain_costs(c, gpu);
                        const Plan plan = random_plan(k, rng, true);
                        const SimResult r = simulate(c, plan, gpu, Reserve{});
                        const CostsResult m = simulate_costs(k, plan.schedule);
                        const CostsResult held =
                            simulate_costs(k, plan.schedule, CastModel::held_to_backward);
                        INFO(fmt::format("{} {} {} {} trial {} accumulation {}", model,
                                         profile_name(prof), precision_name(p), sharding_name(sh),
                                         trial, c.options.grad_accumulation));
                        CHECK(m.allocator_peak_bytes == r.allocator_peak_bytes);
                        CHECK(k.casts_over_counted() == upper_bound);
                        if (upper_bound)
                            CHECK(held.allocator_peak_bytes >= r.allocator_peak_bytes);
                        else
                            CHECK(held.allocator_peak_bytes == r.allocator_peak_bytes);
                        over_counted += held.allocator_peak_bytes > r.allocator_peak_bytes;
                        CHECK(m.step_time_s ==
                              doctest::Approx(r.compute_step_time_s).epsilon(1e-12));
                        CHECK(m.recompute_flops ==
                              doctest::Approx(r.recompute_flops).epsilon(1e-12));
                        ++checked;
                    }
                }
    CHECK(checked == 3 * 3 * 3 * 7 * 12);
    CHECK(over_counted > 0);  // the two cast models were told apart
}

TEST_CASE(
    "chain_costs::the accounting equals the replay for fine-tuning: LoRA, QLoRA, DPO with and "
    "without its reference model") {
    const GpuSpec gpu = load_gpu("h100-80gb");
    std::mt19937_64 rng(20261204);
    int checked = 0;
    struct Case {
        Training train;
        BaseDType base;
        Recipe recipe;
        RefLogprobs ref;
    };
    const Case cases[] = {
        {Training::lora, BaseDType::fp32, Recipe::sft, RefLogprobs::model},
        {Training::lora, BaseDType::bf16, Recipe::sft, RefLogprobs::model},
        {Training::lora, BaseDType::nf4, Recipe::sft, RefLogprobs::model},
        {Training::lora, BaseDType::int8, Recipe::dpo, RefLogprobs::model},
        {Training::full, BaseDType::fp32, Recipe::dpo, RefLogprobs::model},
        {Training::full, BaseDType::fp32, Recipe::dpo, RefLogprobs::precomputed},
        {Training::lora, BaseDType::bf16, Recipe::dpo, RefLogprobs::model},
    };
    for (const char* model : {"tiny-gpt2", "tiny-llama"})
        for (const Case& fc : cases)
            for (Sharding sh : {Sharding::none, Sharding::fsdp, Sharding::fsdp_grad_op}) {
                if (quantized(fc.base) && sh != Sharding::none) continue;
                for (int trial = 0; trial < 6; ++trial) {
                    RunOptions o;
                    o.micro_batch = 2;
                    o.seq = 128;
                    o.precision = Precision::bf16_mixed;
                    o.sharding = sh;
                    o.world_size = sh == Sharding::none ? 1 : 4;
                    o.train = fc.train;
                    o.base_dtype = fc.base;
                    o.recipe = fc.recipe;
                    o.ref_logprobs = fc.ref;
                    o.grad_accumulation = trial % 3 == 2 ? 2 : 1;
                    const Chain c = build_chain(load_model(model), o);
                    const ChainCosts k = chain_costs(c, gpu);
                    const Plan plan = random_plan(k, rng, false);
                    const SimResult r = simulate(c, plan, gpu, Reserve{});
                    INFO(fmt::format("{} {} {} {} {} trial {}", model, training_name(fc.train),
                                     base_dtype_name(fc.base), recipe_name(fc.recipe),
                                     sharding_name(sh), trial));
                    // DDP with autocast holds the adapters' cached casts: an upper bound there.
                    const CostsResult held =
                        simulate_costs(k, plan.schedule, CastModel::held_to_backward);
                    if (k.casts_over_counted())
                        CHECK(held.allocator_peak_bytes >= r.allocator_peak_bytes);
                    else
                        CHECK(held.allocator_peak_bytes == r.allocator_peak_bytes);
                    const CostsResult m = simulate_costs(k, plan.schedule);
                    CHECK(m.allocator_peak_bytes == r.allocator_peak_bytes);
                    CHECK(m.step_time_s == doctest::Approx(r.compute_step_time_s).epsilon(1e-12));
                    ++checked;
                }
            }
    CHECK(checked == 2 * (5 * 3 + 2) * 6);  // int8 and nf4 under DDP only
    // Offloaded states: FSDP's CPUOffload (shard gradients to the host), ZeRO-Offload.
    for (const auto& [sh, params] :
         {std::pair{Sharding::fsdp, true}, {Sharding::zero2, false}, {Sharding::zero3, true}})
        for (int trial = 0; trial < 6; ++trial) {
            RunOptions o;
            o.micro_batch = 2;
            o.seq = 128;
            o.sharding = sh;
            o.world_size = 4;
            o.offload_params = params;
            o.offload_optimizer = !params;
            o.grad_accumulation = trial % 3 == 2 ? 2 : 1;
            const Chain c = build_chain(load_model("tiny-llama"), o);
            const ChainCosts k = chain_costs(c, gpu);
            const Plan plan = random_plan(k, rng, false);
            const SimResult r = simulate(c, plan, gpu, Reserve{});
            INFO(fmt::format("offload {} trial {}", sharding_name(sh), trial));
            const CostsResult m = simulate_costs(k, plan.schedule);
            CHECK(m.allocator_peak_bytes == r.allocator_peak_bytes);
            CHECK(m.step_time_s == doctest::Approx(r.compute_step_time_s).epsilon(1e-12));
        }
}
