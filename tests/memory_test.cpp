// Model-state accounting per framework. Sources: ZeRO (Rajbhandari et al. 2020) Table 1 and
// Megatron-LM's theoretical_memory_usage.py, as quoted in ../shared/reference/ANCHORS.md.
#include "planner/simulate/memory.hpp"

#include <doctest/doctest.h>

#include "planner/config/checked.hpp"
#include "planner/config/model.hpp"

using namespace remat;

namespace {
double gb(const ModelStates& s) { return static_cast<double>(s.total()) / 1e9; }
}  // namespace

TEST_SUITE("memory") {
    TEST_CASE("memory::model_states_for reproduces ZeRO Table 1") {
        const std::uint64_t psi = 7'500'000'000ull;  // Ψ = 7.5B, Nd = 64
        const auto p = Precision::bf16_mixed;
        const auto o = Optimizer::adamw;
        CHECK(gb(model_states_for(psi, Sharding::none, p, o, 64)) == doctest::Approx(120.0));
        CHECK(gb(model_states_for(psi, Sharding::zero1, p, o, 64)) ==
              doctest::Approx(31.4).epsilon(0.003));
        CHECK(gb(model_states_for(psi, Sharding::zero2, p, o, 64)) ==
              doctest::Approx(16.6).epsilon(0.003));
        CHECK(gb(model_states_for(psi, Sharding::zero3, p, o, 64)) ==
              doctest::Approx(1.875).epsilon(0.001));
        // The exact forms: 4Ψ + 12Ψ/Nd, 2Ψ + 14Ψ/Nd, 16Ψ/Nd.
        CHECK(model_states_for(psi, Sharding::zero1, p, o, 64).total() == 4 * psi + 12 * psi / 64);
        CHECK(model_states_for(psi, Sharding::zero2, p, o, 64).total() == 2 * psi + 14 * psi / 64);
        CHECK(model_states_for(psi, Sharding::zero3, p, o, 64).total() == 16 * psi / 64);
        SUBCASE("ZeRO-3 over Nd = 1 .. 1024") {
            const std::pair<std::uint64_t, double> rows[] = {{1, 120},   {4, 30},     {16, 7.5},
                                                             {64, 1.88}, {256, 0.47}, {1024, 0.12}};
            for (const auto& [nd, expect] : rows) {
                CAPTURE(nd);
                CHECK(gb(model_states_for(psi, Sharding::zero3, p, o, nd)) ==
                      doctest::Approx(expect).epsilon(0.03));
            }
        }
    }

    TEST_CASE(
        "memory::model_states_for reproduces Megatron-LM's theoretical memory for Llama-2-7B") {
        const std::uint64_t params = parameter_count(load_model("llama2-7b"));
        const double mib = 1024.0 * 1024.0;
        const auto plain = model_states_for(params, Sharding::megatron, Precision::bf16_mixed,
                                            Optimizer::adamw, 8);
        CHECK(plain.total() == 18 * params);
        CHECK(static_cast<double>(plain.total()) / mib == doctest::Approx(115672.57).epsilon(1e-7));
        const auto dist = model_states_for(params, Sharding::megatron_distopt,
                                           Precision::bf16_mixed, Optimizer::adamw, 8);
        CHECK(static_cast<double>(dist.total()) / mib == doctest::Approx(48196.90).epsilon(1e-7));
    }

    TEST_CASE("memory::model_states shards FSDP per unit with padding") {
        ModelConfig m = load_model("tiny-llama");
        RunOptions o;
        o.seq = 128;
        o.sharding = Sharding::fsdp;
        o.world_size = 3;  // does not divide the unit sizes
        const Chain c = build_chain(m, o);
        std::uint64_t padded = 0;
        for (const Unit& u : fsdp_units(c)) {
            CHECK(u.shard_params * 3 >= u.params);
            CHECK(u.shard_params * 3 < u.params + 3);
            padded += u.shard_params;
        }
        const ModelStates s = model_states(c);
        CHECK(s.parameters_bytes == 4 * padded);  // fp32 shards
        CHECK(s.gradients_bytes == 4 * padded);
        CHECK(s.optimizer_bytes == 8 * padded);  // Adam m and v
    }

    TEST_CASE("memory::default_reserve uses the cuBLAS workspace of the GPU generation") {
        CHECK(default_reserve(load_gpu("h100-80gb")).workspace_bytes == 32ull << 20);
        CHECK(default_reserve(load_gpu("a100-80gb")).workspace_bytes == 8519680ull);
    }
}

// The PyTorch step's temporaries by implementation and torch (docs/torch.md; each figure was
// also measured whole-step by tests/torch/sweep.py, within 0.3%).
TEST_SUITE("memory") {
    TEST_CASE("memory::the optimizer step's temporary follows torch.optim's implementation") {
        ModelConfig m = load_model("tiny-gpt2");
        RunOptions o;
        o.seq = 128;
        o.precision = Precision::fp32;
        o.profile = Profile::hf_eager;
        const std::uint64_t P = parameter_count(m);
        const std::uint64_t largest = checked_mul(m.vocab, m.hidden);  // the tied wte
        REQUIRE(largest_parameter_tensor(m) == largest);
        auto temp = [&](OptimizerImpl impl, TorchFlavor t) {
            o.optimizer_impl = impl;
            o.torch = t;
            return StepTerms(build_chain(m, o)).optimizer_temp_bytes();
        };
        // _multi_tensor_adam: one sqrt temporary; torch 1.13's _multi_tensor_adamw: two.
        CHECK(temp(OptimizerImpl::foreach, TorchFlavor::cuda) == 4 * P);
        CHECK(temp(OptimizerImpl::foreach, TorchFlavor::cpu_1_13) == 8 * P);
        // _single_tensor_adamw: sqrt and the quotient of the largest parameter.
        CHECK(temp(OptimizerImpl::for_loop, TorchFlavor::cuda) == 8 * largest);
        CHECK(temp(OptimizerImpl::for_loop, TorchFlavor::cpu_1_13) == 8 * largest);
        CHECK(temp(OptimizerImpl::fused, TorchFlavor::cuda) == 0);
        o.optimizer = Optimizer::sgd;
        CHECK(temp(OptimizerImpl::foreach, TorchFlavor::cuda) == 0);
    }

    TEST_CASE("memory::a tied embedding's gradient is summed in place, except on torch 1.13") {
        ModelConfig m = load_model("tiny-gpt2");
        REQUIRE(m.tied_embeddings);
        RunOptions o;
        o.seq = 128;
        o.precision = Precision::bf16_mixed;  // gradients stay fp32 (parameters are fp32)
        o.profile = Profile::hf_eager;
        const std::uint64_t vh = checked_mul(m.vocab, m.hidden);
        CHECK(StepTerms(build_chain(m, o)).tied_embedding_grad_bytes() == 4 * vh);
        o.torch = TorchFlavor::cpu_1_13;
        CHECK(StepTerms(build_chain(m, o)).tied_embedding_grad_bytes() == 8 * vh);
        o.profile = Profile::megatron;  // not PyTorch's engine summing
        CHECK(StepTerms(build_chain(m, o)).tied_embedding_grad_bytes() == 0);
        m.tied_embeddings = false;
        o.profile = Profile::hf_eager;
        CHECK(StepTerms(build_chain(m, o)).tied_embedding_grad_bytes() == 0);
    }

    TEST_CASE("memory::GPT-2's causal-mask buffers are counted with the parameters") {
        const ModelConfig m = load_model("tiny-gpt2");
        RunOptions o;
        o.seq = 128;
        o.precision = Precision::fp32;
        o.profile = Profile::sdpa;
        const std::uint64_t with = model_states(build_chain(m, o)).parameters_bytes;
        o.profile = Profile::remat;
        const std::uint64_t without = model_states(build_chain(m, o)).parameters_bytes;
        // transformers' GPT2Attention: register_buffer("bias", bool [1, 1, P, P]) per block
        CHECK(with - without == m.n_layers * m.context * m.context);
        CHECK(hf_buffer_bytes(load_model("tiny-llama")) == 0);
    }
}
