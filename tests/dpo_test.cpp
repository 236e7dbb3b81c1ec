// DPO as the seed's trainer runs it (eric-mitchell/direct-preference-optimization, trainers.py):
// pairs concatenated into 2B sequences, the policy's log-probabilities gathered over the
// vocabulary, a frozen reference model's under no_grad after the policy's forward. Measured
// against real PyTorch in tests/torch/sweep.py (FINETUNE); here the accounting's parts.
#include <doctest/doctest.h>

#include "planner/chain/chain.hpp"
#include "planner/config/error.hpp"
#include "planner/simulate/memory.hpp"
#include "planner/simulate/reference.hpp"
#include "planner/simulate/simulate.hpp"
#include "planner/strategy/strategy.hpp"
#include "tests/graph_lookup.hpp"

using namespace remat;
using remat::test::find_op;

namespace {

RunOptions dpo(std::uint64_t pairs, RefLogprobs ref = RefLogprobs::model) {
    RunOptions o;
    o.recipe = Recipe::dpo;
    o.ref_logprobs = ref;
    o.micro_batch = pairs;
    o.seq = 128;
    return o;
}

}  // namespace

TEST_SUITE("dpo") {
    TEST_CASE("dpo::a micro-batch of pairs is twice as many sequences") {
        const ModelConfig m = load_model("tiny-llama");
        const Chain c = build_chain(m, dpo(3));
        CHECK(c.options.sequences() == 6);
        // A block's input: 6 sequences of 128 tokens.
        CHECK(c.stages[1].input_bytes == 6 * 128 * m.hidden * 4);
    }

    TEST_CASE("dpo::the head gathers log-probabilities over the vocabulary") {
        const ModelConfig m = load_model("tiny-llama");
        const Chain c = build_chain(m, dpo(2));
        const StageGraph& g = c.graphs[c.stages.back().graph];
        const std::uint64_t N = 4, S1 = 127, V = m.vocab;
        // log_softmax over logits[:, :-1, :] saves its fp32 output and copies its
        // non-contiguous input while it runs; gather saves the labels as its index; the mask
        // product saves the mask.
        const Op* ls = find_op(g, "logps.log_softmax");
        REQUIRE(ls);
        REQUIRE(ls->saved.size() == 1);
        CHECK(g.tensor(ls->saved[0]).bytes() == N * S1 * V * 4);
        CHECK(ls->fwd_workspace_bytes == N * S1 * V * 4);
        const Op* gather = find_op(g, "logps.gather");
        REQUIRE(gather);
        CHECK(g.tensor(g.storage(gather->saved[0])).bytes() == N * S1 * 8);
        CHECK(g.tensor(find_op(g, "logps.mask_mul")->saved[0]).dtype == DType::b8);
        // No causal-LM loss.
        CHECK_FALSE(find_op(g, "loss.nll"));
    }

    TEST_CASE("dpo::the reference's weights, and none when precomputed or under LoRA") {
        const ModelConfig m = load_model("llama2-7b");
        RunOptions sft = dpo(1);
        sft.recipe = Recipe::sft;
        const std::uint64_t P = parameter_count(m);
        const std::uint64_t base = model_states(build_chain(m, sft)).parameters_bytes;
        // A frozen fp32 copy (bf16-mixed keeps fp32 weights) and its buffers.
        CHECK(model_states(build_chain(m, dpo(1))).parameters_bytes ==
              base + 4 * P + hf_buffer_bytes(m));
        CHECK(model_states(build_chain(m, dpo(1, RefLogprobs::precomputed))).parameters_bytes ==
              base);
        // The seed's trainer loads its reference in fp16 (config reference_dtype: float16).
        RunOptions half = dpo(1);
        half.ref_dtype = BaseDType::fp16;
        CHECK(model_states(build_chain(m, half)).parameters_bytes ==
              base + 2 * P + hf_buffer_bytes(m));
        // FSDP over 8: sharded per unit like the policy.
        RunOptions f = dpo(1);
        f.sharding = Sharding::fsdp;
        f.world_size = 8;
        RunOptions fs = f;
        fs.recipe = Recipe::sft;
        const std::uint64_t ref = model_states(build_chain(m, f)).parameters_bytes -
                                  model_states(build_chain(m, fs)).parameters_bytes;
        CHECK(ref >= 4 * P / 8 + hf_buffer_bytes(m));
        CHECK(ref < 4 * P / 8 + hf_buffer_bytes(m) + 4 * 8 * 35);
        // LoRA: the reference is the base with its adapters disabled.
        RunOptions l = dpo(1);
        l.train = Training::lora;
        RunOptions ls = l;
        ls.recipe = Recipe::sft;
        CHECK(model_states(build_chain(m, l)).parameters_bytes ==
              model_states(build_chain(m, ls)).parameters_bytes);
    }

    TEST_CASE("dpo::the reference's no_grad forward runs after the policy's, nothing kept") {
        const ModelConfig m = load_model("tiny-llama");
        const GpuSpec gpu = load_gpu("h100-80gb");
        const Chain c = build_chain(m, dpo(2));
        const ReferenceForward ref = reference_forward(c, StepTerms(c), gpu, StepTimeModel{});
        // At least its head's: the fp32 logits, held, with log_softmax's input copy and output.
        const std::uint64_t N = 4, S = 128, V = m.vocab;
        CHECK(ref.peak_bytes >= N * S * V * 4 + 2 * N * (S - 1) * V * 4);
        CHECK(ref.flops > 0);
        CHECK(reference_forward(build_chain(m, dpo(2, RefLogprobs::precomputed)), StepTerms(c), gpu,
                                StepTimeModel{})
                  .peak_bytes == 0);
        // Checkpointing every block: the reference's transient is the peak, at the head.
        PlanContext ctx;
        ctx.gpu = &gpu;
        ctx.capacity_bytes = gpu.capacity_bytes;
        const Plan plan = make_plan(c, parse_strategy("full"), ctx);
        const SimResult r = simulate(c, plan, gpu, Reserve{});
        CHECK(r.peak_op == "reference.forward");
        // Tokens: both sequences of each pair.
        CHECK(r.tokens_per_s * r.step_time_s == doctest::Approx(4.0 * 128));
    }

    TEST_CASE("dpo::combinations remat does not model are refused") {
        const ModelConfig m = load_model("tiny-llama");
        RunOptions o = dpo(1);
        o.sharding = Sharding::zero3;
        o.world_size = 2;
        CHECK_THROWS_AS(build_chain(m, o), InputError);
        o.ref_logprobs = RefLogprobs::precomputed;  // no second model: any sharding
        CHECK_NOTHROW(build_chain(m, o));
        o = dpo(1);
        o.profile = Profile::remat;
        CHECK_THROWS_AS(build_chain(m, o), InputError);
    }
}

TEST_SUITE("dpo") {
    TEST_CASE("dpo::a reference of another architecture, with the policy's vocabulary") {
        const ModelConfig m = load_model("llama2-7b");
        RunOptions o = dpo(1);
        RunOptions copy = o;
        o.ref_model = std::make_shared<const ModelConfig>(load_model("llama2-13b"));
        const std::uint64_t with13 = model_states(build_chain(m, o)).parameters_bytes;
        const std::uint64_t with7 = model_states(build_chain(m, copy)).parameters_bytes;
        const ModelConfig big = load_model("llama2-13b");
        CHECK(with13 - with7 == 4 * (parameter_count(big) - parameter_count(m)) +
                                    hf_buffer_bytes(big) - hf_buffer_bytes(m));
        // Its forward walks its own 40 blocks.
        const GpuSpec gpu = load_gpu("h100-80gb");
        const Chain c13 = build_chain(m, o), c7 = build_chain(m, copy);
        CHECK(reference_forward(c13, StepTerms(c13), gpu, StepTimeModel{}).flops >
              1.5 * reference_forward(c7, StepTerms(c7), gpu, StepTimeModel{}).flops);
        // Another tokenizer's log-probabilities are not comparable.
        o.ref_model = std::make_shared<const ModelConfig>(load_model("llama3-8b"));
        CHECK_THROWS_AS(build_chain(m, o), InputError);
    }
}
