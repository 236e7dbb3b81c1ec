// The Schedule replay. Closed forms computed independently of the replay: after the forward
// pass, live memory is the model states plus exactly what each stage keeps.
#include "planner/simulate/simulate.hpp"

#include <doctest/doctest.h>
#include <fmt/format.h>

#include <numeric>

#include "planner/search/search.hpp"
#include "planner/strategy/strategy.hpp"

using namespace remat;

namespace {

struct Setup {
    GpuSpec gpu = load_gpu("h100-80gb");
    PlanContext ctx;
    Setup() {
        ctx.gpu = &gpu;
        ctx.reserve = default_reserve(gpu);
        ctx.capacity_bytes = gpu.capacity_bytes;
    }
};

Chain chain_of(const char* model, std::uint64_t b, std::uint64_t s, Precision p = Precision::fp32,
               Sharding sh = Sharding::none, std::uint64_t w = 1, Profile prof = Profile::sdpa) {
    RunOptions o;
    o.micro_batch = b;
    o.seq = s;
    o.precision = p;
    o.sharding = sh;
    o.world_size = w;
    o.profile = prof;
    return build_chain(load_model(model), o);
}

// Live bytes right after the last forward action (the head's forward).
std::uint64_t live_after_forward(const SimResult& r, const Chain& c) {
    return r.timeline[c.stages.size() - 1].live_bytes;
}

}  // namespace

TEST_SUITE("simulate") {
    TEST_CASE("simulate::after forward, live memory is the states plus what each stage keeps") {
        Setup s;
        for (const char* model : {"tiny-gpt2", "tiny-llama"}) {
            for (Profile prof : {Profile::sdpa, Profile::hf_eager, Profile::megatron}) {
                CAPTURE(model);
                CAPTURE(profile_name(prof));
                const Chain c = chain_of(model, 2, 256, Precision::fp32, Sharding::none, 1, prof);
                // Hugging Face's GPT-2 holds its causal mask as a bool buffer per block.
                const std::uint64_t buffers =
                    prof == Profile::megatron ? 0 : hf_buffer_bytes(c.model);
                const std::uint64_t states =
                    model_states_for(parameter_count(c.model), Sharding::none, Precision::fp32,
                                     Optimizer::adamw, 1)
                        .total() +
                    buffers;
                const std::uint64_t grads = 4 * parameter_count(c.model);  // not yet allocated
                const std::uint64_t loss = 4;                              // the scalar loss
                std::uint64_t none = 0, full = 0, sel = 0;
                for (const Stage& st : c.stages) {
                    none += st.all_bytes;
                    const bool block = st.kind == StageKind::block;
                    full += block ? st.input_bytes : st.all_bytes;
                    sel += block ? st.selective_bytes : st.all_bytes;
                }
                const SimResult rn =
                    simulate(c, make_plan(c, parse_strategy("none"), s.ctx), s.gpu, s.ctx.reserve);
                const SimResult rf =
                    simulate(c, make_plan(c, parse_strategy("full"), s.ctx), s.gpu, s.ctx.reserve);
                const SimResult rs = simulate(c, make_plan(c, parse_strategy("selective"), s.ctx),
                                              s.gpu, s.ctx.reserve);
                CHECK(live_after_forward(rn, c) == states - grads + none + loss);
                CHECK(live_after_forward(rf, c) == states - grads + full + loss);
                CHECK(live_after_forward(rs, c) == states - grads + sel + loss);
                // After the optimizer step only the model states remain.
                CHECK(rn.timeline.back().live_bytes == states);
                CHECK(rf.timeline.back().live_bytes == states);
            }
        }
    }

    TEST_CASE(
        "simulate::after each backward, what remains is the earlier stages, the gradients and one "
        "input gradient") {
        Setup s;
        for (Profile prof : {Profile::sdpa, Profile::hf_eager}) {
            CAPTURE(profile_name(prof));
            const Chain c =
                chain_of("tiny-llama", 2, 256, Precision::fp32, Sharding::none, 1, prof);
            const Plan p = make_plan(c, parse_strategy("none"), s.ctx);
            const SimResult r = simulate(c, p, s.gpu, s.ctx.reserve);
            const std::uint64_t P = parameter_count(c.model);
            const std::uint64_t base = 4 * P + 8 * P;  // fp32 parameters and Adam state
            const std::size_t n = c.stages.size();
            for (std::size_t i = n; i-- > 0;) {
                CAPTURE(i);
                // Actions: n forwards, then B(n-1) .. B(0); B(i) is action n + (n-1-i).
                const TimelinePoint& t = r.timeline[n + (n - 1 - i)];
                REQUIRE(t.action == fmt::format("B({})", i));
                std::uint64_t expect = base + 4;  // the scalar loss, held by the training loop
                for (std::size_t j = 0; j < i; ++j) expect += c.stages[j].all_bytes;
                for (std::size_t j = i; j < n; ++j) expect += 4 * c.stages[j].params;  // DDP p.grad
                if (i > 0)
                    expect += c.stages[i].input_bytes;  // the gradient flowing into stage i-1
                CHECK(t.live_bytes == expect);
            }
        }
    }

    TEST_CASE(
        "simulate::after the last backward only the states, the gradients and the loss remain") {
        // Recomputed stages leave nothing behind: a segment's recomputed output is freed.
        Setup s;
        const Chain c = chain_of("gpt2", 8, 1024, Precision::fp32);
        // (sdpa: Hugging Face's GPT-2 holds its causal mask as a bool buffer per block)
        const std::uint64_t states = model_states_for(parameter_count(c.model), Sharding::none,
                                                      Precision::fp32, Optimizer::adamw, 1)
                                         .total() +
                                     hf_buffer_bytes(c.model);
        for (const auto& spec : all_strategies()) {
            CAPTURE(spec.name());
            const SimResult r = simulate(c, make_plan(c, spec, s.ctx), s.gpu, s.ctx.reserve);
            const TimelinePoint& last_b = r.timeline[r.timeline.size() - 2];
            REQUIRE(last_b.action == "B(0)");
            CHECK(last_b.live_bytes == states + 4);
        }
    }

    TEST_CASE("simulate::every schedule replays: what an op reads is live") {
        // The replay throws std::logic_error when a schedule reads a freed tensor.
        Setup s;
        for (const char* model : {"tiny-gpt2", "tiny-llama", "pythia-6.9b"})
            for (Profile prof : {Profile::sdpa, Profile::hf_eager, Profile::megatron})
                for (Precision prec : {Precision::fp32, Precision::bf16_mixed, Precision::bf16})
                    for (std::uint64_t b : {1, 3}) {
                        const Chain c = chain_of(model, b, 128, prec, Sharding::fsdp, 4, prof);
                        for (const auto& spec : all_strategies()) {
                            CAPTURE(model);
                            CAPTURE(spec.name());
                            CHECK_NOTHROW(
                                simulate(c, make_plan(c, spec, s.ctx), s.gpu, s.ctx.reserve));
                        }
                    }
    }

    TEST_CASE("simulate::recompute FLOPs per strategy") {
        Setup s;
        const Chain c = chain_of("tiny-llama", 2, 512);
        const Stage& blk = c.stages[1];
        const double L = static_cast<double>(c.n_blocks());
        auto flops = [&](const char* name) {
            return simulate(c, make_plan(c, parse_strategy(name), s.ctx), s.gpu, s.ctx.reserve)
                .recompute_flops;
        };
        CHECK(flops("none") == 0);
        CHECK(flops("full") == doctest::Approx(L * blk.fwd_flops));
        CHECK(flops("sqrt") ==
              doctest::Approx(L * blk.fwd_flops));  // every block of a segment reruns
        CHECK(flops("every-2") == doctest::Approx(2 * blk.fwd_flops));  // blocks 0 and 2 of 4
        CHECK(flops("selective") == doctest::Approx(L * blk.core_fwd_flops));
    }

    TEST_CASE("simulate::checkpointing lowers the peak on a long sequence") {
        Setup s;
        const Chain c = chain_of("llama2-7b", 1, 4096, Precision::bf16_mixed, Sharding::fsdp, 8);
        auto peak = [&](const char* name) {
            return simulate(c, make_plan(c, parse_strategy(name), s.ctx), s.gpu, s.ctx.reserve)
                .peak_bytes;
        };
        CHECK(peak("full") < peak("sqrt"));
        CHECK(peak("sqrt") < peak("none"));
        // every-N checkpoints one block in N and stores the rest: larger N keeps more.
        CHECK(peak("every-2") < peak("every-4"));
        CHECK(peak("every-4") < peak("none"));
        CHECK(peak("selective") < peak("none"));
    }

    TEST_CASE(
        "simulate::FSDP keeps the root unit and at most two block units gathered in forward") {
        Setup s;
        const Chain c = chain_of("llama2-7b", 4, 4096, Precision::bf16_mixed, Sharding::fsdp, 8);
        const SimResult r =
            simulate(c, make_plan(c, parse_strategy("full"), s.ctx), s.gpu, s.ctx.reserve);
        REQUIRE(r.peak_action != "optimizer");
        const std::uint64_t root =
            2 * (embedding_parameter_count(c.model) + final_norm_parameter_count(c.model) +
                 head_parameter_count(c.model));
        const std::uint64_t unit = 2 * block_parameter_count(c.model);
        CHECK(r.at_peak.unsharded_parameters_bytes >= root);
        CHECK(r.at_peak.unsharded_parameters_bytes <= root + 2 * unit);
    }

    TEST_CASE("simulate::the peak grows with the micro-batch") {
        Setup s;
        std::uint64_t last = 0;
        for (std::uint64_t b = 1; b <= 8; ++b) {
            const Chain c = chain_of("tiny-gpt2", b, 1024, Precision::bf16_mixed);
            const std::uint64_t p =
                simulate(c, make_plan(c, parse_strategy("sqrt"), s.ctx), s.gpu, s.ctx.reserve)
                    .peak_bytes;
            CHECK(p > last);
            last = p;
        }
    }
}

TEST_CASE(
    "simulate::gradient accumulation: earlier micro-steps' gradients are live from the start") {
    // PyTorch accumulates into p.grad: under DDP the full gradients of the earlier micro-steps
    // exist when the last one starts; FSDP (without no_sync) reduce-scatters every micro-step
    // and keeps only its sharded gradients. The optimizer runs once per step.
    Setup s;
    for (Sharding sh : {Sharding::none, Sharding::fsdp, Sharding::zero2}) {
        const std::uint64_t w = sh == Sharding::none ? 1 : 4;
        const Chain one = chain_of("gpt2", 2, 512, Precision::bf16_mixed, sh, w);
        const Chain four = [&] {
            RunOptions o = one.options;
            o.grad_accumulation = 4;
            return build_chain(one.model, o);
        }();
        const ModelStates states = model_states(one);
        CAPTURE(sharding_name(sh));
        for (const auto& spec :
             {StrategySpec{StrategyKind::none, 0}, StrategySpec{StrategyKind::full, 0}}) {
            const SimResult r1 = simulate(one, make_plan(one, spec, s.ctx), s.gpu, s.ctx.reserve);
            const SimResult r4 = simulate(four, make_plan(four, spec, s.ctx), s.gpu, s.ctx.reserve);
            // ZeRO-2 holds its gradient buffers in both cases; DDP and FSDP now hold them early.
            const std::uint64_t early = sh == Sharding::zero2 ? 0 : states.gradients_bytes;
            CHECK(r4.timeline[0].live_bytes == r1.timeline[0].live_bytes + early);
            CHECK(r4.peak_bytes >= r1.peak_bytes);
            // After the last backward both hold the same gradients.
            CHECK(r4.timeline[r4.timeline.size() - 2].live_bytes ==
                  r1.timeline[r1.timeline.size() - 2].live_bytes);
            const double opt =
                optimizer_time_s(StepTerms(one).local_params, Optimizer::adamw, s.gpu);
            // Compute scales with the micro-steps; ZeRO-2's post-step all-gather does not.
            CHECK(r4.compute_step_time_s ==
                  doctest::Approx(4 * (r1.compute_step_time_s - opt) + opt).epsilon(1e-12));
            CHECK(r4.tokens_per_s > r1.tokens_per_s);  // the optimizer is amortized
            CHECK(r4.recompute_flops == doctest::Approx(4 * r1.recompute_flops));
        }
    }
}

TEST_SUITE("simulate") {
    // simulate_traced's events (what `plan --memory-snapshot` lays out) tell the same story as
    // the ledger's totals: every release and recategorization names a live allocation of the
    // same size, the running total after each action is the timeline's live bytes, and its
    // highest value is the allocator peak. Independent of the memory model: a bookkeeping check
    // over every sharding, precision, strategy and the paths that allocate apart (accumulation,
    // LoRA, DPO, torch 1.13's CPU extras).
    TEST_CASE("simulate::the traced events add up to the timeline and the peak") {
        Setup s;
        struct Case {
            const char* model;
            Sharding sharding;
            Precision precision;
            const char* strategy;
            std::uint64_t accumulation = 1;
            Training train = Training::full;
            Recipe recipe = Recipe::sft;
            TorchFlavor torch = TorchFlavor::cuda;
        };
        std::vector<Case> cases;
        for (const char* model : {"tiny-gpt2", "tiny-llama"})
            for (Sharding sh : {Sharding::none, Sharding::fsdp, Sharding::fsdp_grad_op,
                                Sharding::zero2, Sharding::zero3, Sharding::megatron})
                for (Precision p : {Precision::fp32, Precision::bf16_mixed})
                    for (const char* st : {"none", "sqrt", "selective", "full"})
                        cases.push_back({model, sh, p, st});
        cases.push_back({"tiny-llama", Sharding::fsdp, Precision::bf16_mixed, "sqrt", 4});
        cases.push_back({"tiny-llama", Sharding::none, Precision::bf16_mixed, "full", 2});
        cases.push_back(
            {"tiny-llama", Sharding::none, Precision::bf16_mixed, "full", 1, Training::lora});
        cases.push_back({"tiny-llama", Sharding::fsdp, Precision::bf16_mixed, "none", 1,
                         Training::full, Recipe::dpo});
        cases.push_back({"tiny-llama", Sharding::none, Precision::fp32, "full", 1, Training::full,
                         Recipe::sft, TorchFlavor::cpu_1_13});
        for (const Case& k : cases) {
            CAPTURE(k.model);
            CAPTURE(sharding_name(k.sharding));
            CAPTURE(precision_name(k.precision));
            CAPTURE(k.strategy);
            CAPTURE(k.accumulation);
            RunOptions o;
            o.micro_batch = 2;
            o.seq = 64;
            o.precision = k.precision;
            o.sharding = k.sharding;
            o.world_size = k.sharding == Sharding::none ? 1 : 4;
            o.grad_accumulation = k.accumulation;
            o.train = k.train;
            o.recipe = k.recipe;
            o.torch = k.torch;
            o.profile = k.torch == TorchFlavor::cpu_1_13 ? Profile::hf_eager : Profile::sdpa;
            const Chain c = build_chain(load_model(k.model), o);
            const Plan plan = make_plan(c, parse_strategy(k.strategy), s.ctx);
            const SimResult plain = simulate(c, plan, s.gpu, s.ctx.reserve);
            const SimResult r = simulate_traced(c, plan, s.gpu, s.ctx.reserve);
            CHECK(plain.trace.empty());
            CHECK(r.peak_bytes == plain.peak_bytes);
            REQUIRE(!r.trace.empty());

            struct Live {
                std::uint64_t bytes;
                Category category;
            };
            std::vector<std::pair<BlockTag, Live>> live;
            const auto find = [&](const BlockTag& t) {
                return std::find_if(live.begin(), live.end(),
                                    [&](const auto& e) { return e.first == t; });
            };
            std::uint64_t total = 0, highest = 0;
            std::size_t e = 0;
            for (std::size_t a = 0; a < r.timeline.size(); ++a) {
                for (; e < r.trace.size() &&
                       (r.trace[e].action <= a || r.trace[e].action == LedgerEvent::no_action);
                     ++e) {
                    const LedgerEvent& ev = r.trace[e];
                    CAPTURE(block_name(c, ev.tag));
                    const auto it = find(ev.tag);
                    if (ev.type == LedgerEvent::Type::alloc) {
                        REQUIRE(it == live.end());  // a tag is one live allocation at a time
                        live.push_back({ev.tag, {ev.bytes, ev.category}});
                        total += ev.bytes;
                        highest = std::max(highest, total);
                        continue;
                    }
                    REQUIRE(it != live.end());
                    CHECK(it->second.bytes == ev.bytes);
                    if (ev.type == LedgerEvent::Type::recategorize) {
                        it->second.category = ev.category;
                    } else {
                        CHECK(it->second.category == ev.category);
                        total -= ev.bytes;
                        live.erase(it);
                    }
                }
                CHECK(total == r.timeline[a].live_bytes);
                CHECK(r.timeline[a].at_peak.allocator_total() == r.timeline[a].peak_bytes);
            }
            CHECK(e == r.trace.size());
            CHECK(highest == r.allocator_peak_bytes);
        }
    }
}
