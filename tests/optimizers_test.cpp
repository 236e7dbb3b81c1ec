// The optimizers' states and step temporaries: torch.optim's AdamW and SGD (memory_test.cpp),
// bitsandbytes' AdamW8bit (bitsandbytes/optim/optimizer.py, Optimizer2State.init_state) and
// transformers' Adafactor (transformers/optimization.py), per tensor and per FSDP shard.
#include <doctest/doctest.h>

#include "planner/chain/chain.hpp"
#include "planner/config/error.hpp"
#include "planner/config/finetune.hpp"
#include "planner/simulate/memory.hpp"

using namespace remat;

namespace {

RunOptions with(Optimizer opt) {
    RunOptions o;
    o.optimizer = opt;
    o.seq = 128;
    return o;
}

}  // namespace

TEST_SUITE("optimizers") {
    TEST_CASE("optimizers::AdamW8bit keeps two bytes a weight and a float per 256-block") {
        const ModelConfig m = load_model("llama2-7b");
        const std::uint64_t opt =
            model_states(build_chain(m, with(Optimizer::adamw_8bit))).optimizer_bytes;
        // Every matrix of Llama-2-7B is a multiple of 256: 2 + 8/256 bytes a weight; norms
        // (vectors) in fp32 states.
        std::uint64_t matrices = 0;
        for (const ParamTensor& t : trainable_tensors(m, with(Optimizer::adamw_8bit)))
            if (t.kind == ParamTensor::Kind::matrix) matrices += t.count * t.numel();
        const std::uint64_t vectors = parameter_count(m) - matrices;
        CHECK(vectors == 32 * 2 * 4096 + 4096);
        CHECK(opt == matrices * 2 + matrices / 256 * 8 + vectors * 8);
        // A quarter of AdamW's 8 bytes, near enough.
        const std::uint64_t adamw =
            model_states(build_chain(m, with(Optimizer::adamw))).optimizer_bytes;
        CHECK(static_cast<double>(opt) / static_cast<double>(adamw) ==
              doctest::Approx(2.03125 / 8).epsilon(0.001));
    }

    TEST_CASE("optimizers::Adafactor factors a matrix's second moment into a row and a column") {
        const ModelConfig m = load_model("tiny-llama");
        RunOptions o = with(Optimizer::adafactor);
        std::uint64_t expect = 0;
        for (const ParamTensor& t : trainable_tensors(m, o))
            expect +=
                t.count * 4 * (t.kind == ParamTensor::Kind::matrix ? t.rows + t.cols : t.numel());
        const Chain c = build_chain(m, o);
        CHECK(model_states(c).optimizer_bytes == expect);
        CHECK(expect < parameter_count(m) / 10);
        // Its step: two fp32 temporaries as large as the largest tensor (tiny-llama's
        // embedding and head, V x H) and, at their product, its row and column factors.
        REQUIRE(largest_parameter_tensor(m) == m.vocab * m.hidden);
        CHECK(StepTerms(c).optimizer_temp_bytes() ==
              8 * m.vocab * m.hidden + 4 * (m.vocab + m.hidden));
        // Under FSDP a rank's shard is flat (1D): nothing to factor.
        o.sharding = Sharding::fsdp;
        o.world_size = 4;
        const Chain f = build_chain(m, o);
        std::uint64_t shards = 0;
        for (const Unit& u : fsdp_units(f)) shards += u.shard_trainable;
        CHECK(model_states(f).optimizer_bytes == 4 * shards);
    }

    TEST_CASE("optimizers::with LoRA they keep the adapters' state only") {
        const ModelConfig m = load_model("llama2-7b");
        RunOptions o = with(Optimizer::adamw_8bit);
        o.train = Training::lora;
        o.lora.targets = {"q_proj", "v_proj"};
        // lora_A 8 x 4096 and lora_B 4096 x 8: 32768 elements each, 8-bit.
        const std::uint64_t A = 4'194'304;
        CHECK(model_states(build_chain(m, o)).optimizer_bytes == 2 * A + A / 256 * 8);
        // Under 4096 elements, two fp32 states: tiny-llama's r 8 adapters (8 x 256 = 2048).
        const ModelConfig tiny = load_model("tiny-llama");
        REQUIRE(8 * tiny.hidden < 4096);
        const std::uint64_t adapters = tiny.n_layers * lora_block_params(tiny, o.lora);
        CHECK(model_states(build_chain(tiny, o)).optimizer_bytes == 8 * adapters);
    }

    TEST_CASE("optimizers::DeepSpeed's and Megatron's own steps are refused with these") {
        RunOptions o = with(Optimizer::adafactor);
        o.sharding = Sharding::zero2;
        o.world_size = 2;
        CHECK_THROWS_AS(build_chain(load_model("tiny-llama"), o), InputError);
    }
}

TEST_SUITE("offload") {
    TEST_CASE("offload::ZeRO-Offload puts the optimizer's state and an fp32 gradient on the host") {
        const ModelConfig m = load_model("llama2-7b");
        RunOptions o = with(Optimizer::adamw);
        o.sharding = Sharding::zero2;
        o.world_size = 8;
        const ModelStates on_gpu = model_states(build_chain(m, o));
        o.offload_optimizer = true;
        const ModelStates off = model_states(build_chain(m, o));
        const std::uint64_t local = (parameter_count(m) + 7) / 8;
        CHECK(off.optimizer_bytes == 0);
        CHECK(off.host_bytes == on_gpu.optimizer_bytes + 4 * local);
        CHECK(off.parameters_bytes == on_gpu.parameters_bytes);
        CHECK(off.gradients_bytes == on_gpu.gradients_bytes);
        // The step moves to the CPU: its time is the host's and PCIe's, not the GPU's.
        const GpuSpec gpu = load_gpu("h100-80gb");
        const Chain c = build_chain(m, o);
        const StepTerms t(c);
        CHECK(t.optimizer_on_host);
        CHECK(t.optimizer_step_s(gpu, StepTimeModel{}) >
              optimizer_time_s(t.local_params, o.optimizer, gpu, StepTimeModel{}));
        CHECK(t.optimizer_temp_bytes() == 0);
    }

    TEST_CASE(
        "offload::FSDP's CPUOffload keeps the shards, their gradients and the optimizer on "
        "the host") {
        const ModelConfig m = load_model("llama2-7b");
        RunOptions o = with(Optimizer::adamw);
        o.sharding = Sharding::fsdp;
        o.world_size = 8;
        const ModelStates on_gpu = model_states(build_chain(m, o));
        o.offload_params = true;
        const Chain c = build_chain(m, o);
        const ModelStates off = model_states(c);
        CHECK(off.parameters_bytes == hf_buffer_bytes(m));
        CHECK(off.gradients_bytes == 0);
        CHECK(off.optimizer_bytes == 0);
        CHECK(off.host_bytes == on_gpu.total() - hf_buffer_bytes(m));
        const StepTerms t(c);
        CHECK(t.shard_grad_bytes(1) == 0);  // reduce-scattered, then copied to the host
        CHECK(t.unit_bytes(1) > 0);         // the gathered unit stays on the GPU
    }

    TEST_CASE("offload::only where the frameworks offer it") {
        const ModelConfig m = load_model("tiny-llama");
        RunOptions o = with(Optimizer::adamw);
        o.offload_optimizer = true;
        o.sharding = Sharding::fsdp;
        o.world_size = 2;
        CHECK_THROWS_AS(build_chain(m, o), InputError);
        o.offload_optimizer = false;
        o.offload_params = true;
        o.sharding = Sharding::zero2;
        CHECK_THROWS_AS(build_chain(m, o), InputError);
        o.sharding = Sharding::zero3;
        CHECK_NOTHROW(build_chain(m, o));
    }
}
