// Fine-tuning: PEFT's parameter counts (../shared/reference/ANCHORS.md, "PEFT's trainable count
// for Llama-2-7B"), the linears PEFT can target against the graphs remat builds, what a frozen
// base and LoRA's adapters save (PyTorch's derivatives.yaml, peft/tuners/lora/layer.py),
// bitsandbytes' storage (the QLoRA paper's 0.5 and 0.127 bits of constants per parameter) and
// the model states a step holds.
#include "planner/config/finetune.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <set>

#include "planner/chain/chain.hpp"
#include "planner/config/error.hpp"
#include "planner/simulate/memory.hpp"
#include "planner/simulate/simulate.hpp"
#include "planner/strategy/strategy.hpp"
#include "runtime/limits.hpp"
#include "tests/graph_lookup.hpp"

using namespace remat;
using remat::test::find_op;

namespace {

RunOptions lora_options(std::vector<std::string> targets, std::uint64_t rank = 8) {
    RunOptions o;
    o.train = Training::lora;
    o.lora.rank = rank;
    o.lora.targets = std::move(targets);
    o.seq = 256;
    o.micro_batch = 2;
    return o;
}

std::uint64_t saved_bytes(const StageGraph& g, const Op& op) {
    std::uint64_t total = 0;
    for (TensorId t : op.saved) total += g.tensor(g.storage(t)).bytes();
    return total;
}

}  // namespace

TEST_SUITE("finetune") {
    TEST_CASE("finetune::PEFT's trainable counts for Llama-2-7B (ANCHORS.md)") {
        const ModelConfig m = load_model("llama2-7b");
        RunOptions o = lora_options({"q_proj", "v_proj"});
        o.lora = resolve_lora(m, o.lora);
        ParameterCounts n = peft_parameter_counts(m, o);
        CHECK(n.trainable == 4'194'304);
        // print_trainable_parameters(): "all params: 6,742,609,920" (the base plus adapters).
        CHECK(n.all == 6'742'609'920ull);
        o = lora_options({"all-linear"}, 16);
        o.lora = resolve_lora(m, o.lora);
        CHECK(peft_parameter_counts(m, o).trainable == 39'976'960);
        // PEFT's default for model_type llama is q_proj, v_proj.
        o = lora_options({});
        CHECK(resolve_lora(m, o.lora).targets == std::vector<std::string>{"q_proj", "v_proj"});
        CHECK(peft_parameter_counts(m, RunOptions{}).trainable == parameter_count(m));
    }

    TEST_CASE("finetune::block_linears are the linears the block graphs build") {
        for (const std::string& name : model_preset_names()) {
            CAPTURE(name);
            const ModelConfig m = load_model(name);
            RunOptions o;
            o.seq = 64;
            o.profile = Profile::sdpa;
            const Chain c = build_chain(m, o);
            std::set<std::string> in_graph, listed;
            const StageGraph& g = c.graphs[c.stages[1].graph];
            for (OpVertex v : g.order())
                if (g.op(v).op_class == OpClass::gemm && !g.op(v).attention_core)
                    in_graph.insert(std::string(module_name(g.op(v).name)));
            std::uint64_t weights = 0;
            for (const BlockLinear& l : block_linears(m)) {
                listed.insert(l.name);
                weights += l.count * l.in * l.out;
            }
            CHECK(in_graph == listed);
            // Without biases, the linears and the norms are the whole block.
            if (!m.attn_bias && !m.attn_out_bias && !m.mlp_bias)
                CHECK(weights + block_norm_count(m) == block_parameter_count(m));
            else
                CHECK(weights < block_parameter_count(m));
        }
    }

    TEST_CASE("finetune::targets are checked against the model's modules") {
        const ModelConfig llama = load_model("tiny-llama");
        LoraOptions l;
        l.targets = {"q_proj", "c_attn"};
        const auto message = [&](const ModelConfig& m, const LoraOptions& x) {
            try {
                resolve_lora(m, x);
            } catch (const InputError& e) {
                return std::string(e.what());
            }
            return std::string();
        };
        CHECK(message(llama, l).find("'c_attn': model 'tiny-llama' has no block linear") !=
              std::string::npos);
        // PEFT has no default for phi3: it asks for target_modules.
        CHECK(message(load_model("phi3-mini"), LoraOptions{}).find("PEFT has no default") !=
              std::string::npos);
        l.targets = {"all-linear"};
        CHECK(resolve_lora(llama, l).targets ==
              std::vector<std::string>{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                       "up_proj", "down_proj"});
        l.rank = 0;
        CHECK(message(llama, l).find("rank") != std::string::npos);
    }

    TEST_CASE("finetune::bitsandbytes' storage: QLoRA's bits of quantization constants") {
        // Dettmers et al. 2023, section 3: an fp32 absmax per 64 weights costs 32/64 = 0.5 bits
        // per parameter; double quantization brings it to 8/64 + 32/(64 * 256) = 0.127 bits.
        const std::uint64_t in = 4096, out = 4096, n = in * out;
        const double packed = static_cast<double>(n) / 2;
        auto constant_bits = [&](bool dq, std::uint64_t tables) {
            const double b = static_cast<double>(stored_weight_bytes(in, out, BaseDType::nf4, dq));
            return (b - packed - static_cast<double>(tables)) * 8 / static_cast<double>(n);
        };
        CHECK(constant_bits(false, 64) == doctest::Approx(0.5));
        CHECK(constant_bits(true, 64 + 1024 + 4) == doctest::Approx(0.127).epsilon(0.001));
        // LLM.int8: a byte per weight and an fp32 scale per output row.
        CHECK(stored_weight_bytes(in, out, BaseDType::int8, true) == n + 4 * out);
        CHECK(stored_weight_bytes(in, out, BaseDType::bf16, true) == 2 * n);
    }

    TEST_CASE("finetune::a frozen base saves no linear inputs, LoRA saves its own") {
        const ModelConfig m = load_model("tiny-llama");
        RunOptions o = lora_options({"q_proj", "v_proj"});
        o.base_dtype = BaseDType::bf16;  // bf16 weights under bf16 autocast, as QLoRA recipes
        const Chain c = build_chain(m, o);
        const StageGraph& g = c.graphs[c.stages[1].graph];
        const std::uint64_t T = o.micro_batch * o.seq, H = m.hidden, r = 8;
        for (const char* frozen : {"self_attn.q_proj", "self_attn.k_proj", "mlp.down_proj"}) {
            CAPTURE(frozen);
            const Op* op = find_op(g, frozen);
            REQUIRE(op);
            CHECK(op->saved.empty());  // bf16 weight read as it is: nothing of its own
            CHECK(op->bwd_flops == doctest::Approx(op->fwd_flops));  // grad input only
        }
        CHECK_FALSE(find_op(g, "self_attn.k_proj.lora_A"));
        // x.to(float32) (PEFT's _cast_input_dtype), autocast's bf16 copy saved by lora_A, and
        // lora_A's (T, r) bf16 output saved by lora_B.
        const Op* a = find_op(g, "self_attn.q_proj.lora_A");
        const Op* b = find_op(g, "self_attn.q_proj.lora_B");
        REQUIRE(a);
        REQUIRE(b);
        CHECK(saved_bytes(g, *a) == T * H * 2);
        CHECK(saved_bytes(g, *b) == T * r * 2);
        CHECK(find_op(g, "self_attn.q_proj.lora_input"));
        // The frozen norm weight's product keeps nothing.
        CHECK(find_op(g, "input_layernorm.weight_mul")->saved.empty());
        // The embedding has no backward: it saves no indices, but AccumulateGrad holds its
        // output (enable_input_require_grads makes it a leaf) until backward ends.
        const StageGraph& e = c.graphs[c.stages[0].graph];
        const Op* wte = find_op(e, "wte");
        REQUIRE(wte->saved.size() == 1);
        CHECK(wte->saved[0] == wte->outputs[0]);
        CHECK(e.tensor(wte->saved[0]).dtype == DType::bf16);
    }

    TEST_CASE("finetune::frozen fp32 weights under autocast, each linear saves its own copy") {
        // Autocast caches casts only of leaves that require grad, so a frozen fp32 weight is
        // cast afresh by every linear, and mm saves the copy for the input's gradient.
        const ModelConfig m = load_model("tiny-llama");
        RunOptions o = lora_options({"q_proj"});
        const Chain c = build_chain(m, o);
        const StageGraph& g = c.graphs[c.stages[1].graph];
        const Op* cast = find_op(g, "self_attn.k_proj.weight_cast");
        REQUIRE(cast);
        CHECK(saved_bytes(g, *cast) == m.hidden * m.n_kv_heads * m.head_dim * 2);
        // FSDP gathers them in bf16 (its mixed precision): no copy.
        o.sharding = Sharding::fsdp;
        o.world_size = 2;
        const Chain f = build_chain(m, o);
        CHECK_FALSE(find_op(f.graphs[f.stages[1].graph], "self_attn.k_proj.weight_cast"));
    }

    TEST_CASE("finetune::nf4 linears hold dequantized weights only while they run") {
        const ModelConfig m = load_model("tiny-llama");
        RunOptions o = lora_options({"q_proj", "v_proj"});
        o.base_dtype = BaseDType::nf4;
        const Chain c = build_chain(m, o);
        const StageGraph& g = c.graphs[c.stages[1].graph];
        const Op* q = find_op(g, "self_attn.q_proj");
        REQUIRE(q);
        const std::uint64_t n = m.hidden * m.n_heads * m.head_dim;
        CHECK(q->saved.empty());
        CHECK(q->fwd_workspace_bytes == 2 * n + 4 * ((n + 63) / 64));
        CHECK(q->bwd_workspace_bytes == 2 * n);
        // bnb's LoRA layer clones the 4-bit base's result.
        CHECK(find_op(g, "self_attn.q_proj.result_clone"));
    }

    TEST_CASE("finetune::model states: a frozen base and fp32 adapters with their AdamW state") {
        const ModelConfig m = load_model("llama2-7b");
        RunOptions o = lora_options({"q_proj", "v_proj"});
        o.base_dtype = BaseDType::bf16;
        const std::uint64_t P = parameter_count(m), A = 4'194'304;
        ModelStates s = model_states(build_chain(m, o));
        CHECK(s.parameters_bytes == 2 * P + 4 * A + hf_buffer_bytes(m));
        CHECK(s.gradients_bytes == 4 * A);
        CHECK(s.optimizer_bytes == 8 * A);
        // FSDP over 4: the frozen base, the adapters and their states sharded per unit.
        o.sharding = Sharding::fsdp;
        o.world_size = 4;
        const Chain c = build_chain(m, o);
        s = model_states(c);
        CHECK(s.gradients_bytes < 4 * A / 4 + 4 * 64);
        CHECK(s.optimizer_bytes == 2 * s.gradients_bytes);
        const StepTerms t(c);
        // Unsharded gradients are the adapters' only, the gathered unit the whole block.
        CHECK(t.unit_grad_bytes(1) == 2 * A / 32);
        CHECK(t.unit_bytes(1) == 2 * (block_parameter_count(m) + A / 32));
        // QLoRA: 4-bit blocks, the rest fp32 (prepare_model_for_kbit_training), well under
        // a bf16 base.
        o = lora_options({"q_proj", "v_proj"});
        o.base_dtype = BaseDType::nf4;
        o.precision = Precision::bf16_mixed;
        const std::uint64_t q4 = model_states(build_chain(m, o)).parameters_bytes;
        const std::uint64_t outer =
            embedding_parameter_count(m) + final_norm_parameter_count(m) + head_parameter_count(m);
        CHECK(q4 == m.n_layers * frozen_block_bytes(m, o) + 4 * outer + 4 * A + hf_buffer_bytes(m));
        // A 4096 x 4096 projection: half a byte per weight and 0.127 bits of constants, plus
        // its code tables (stored_weight_bytes above).
        const double per_weight =
            static_cast<double>(m.n_layers * frozen_block_bytes(m, o)) /
            static_cast<double>(m.n_layers * (block_parameter_count(m) - block_norm_count(m)));
        CHECK(per_weight == doctest::Approx(0.5 + 0.127 / 8).epsilon(0.001));
    }

    TEST_CASE("finetune::combinations remat does not model are refused") {
        const ModelConfig m = load_model("tiny-llama");
        auto refused = [&](RunOptions o) {
            try {
                build_chain(m, o);
            } catch (const InputError& e) {
                return std::string(e.what());
            }
            return std::string();
        };
        RunOptions o = lora_options({});
        o.profile = Profile::remat;
        CHECK(refused(o).find("PEFT's adapters are modelled on Hugging Face's modules") !=
              std::string::npos);
        o = lora_options({});
        o.sharding = Sharding::zero3;
        CHECK(refused(o).find("DeepSpeed and Megatron are not yet") != std::string::npos);
        o = lora_options({});
        o.base_dtype = BaseDType::nf4;
        o.sharding = Sharding::fsdp;
        CHECK(refused(o).find("QLoRA under FSDP") != std::string::npos);
        o = lora_options({});
        o.base_dtype = BaseDType::bf16;
        o.precision = Precision::fp32;
        CHECK(refused(o).find("without autocast") != std::string::npos);
    }
}

TEST_SUITE("finetune") {
    TEST_CASE("finetune::--train frozen is a forward under no_grad: weights only, nothing kept") {
        const ModelConfig m = load_model("tiny-llama");
        RunOptions o;
        o.train = Training::frozen;
        o.base_dtype = BaseDType::bf16;
        o.seq = 128;
        o.micro_batch = 2;
        const Chain c = build_chain(m, o);
        const ModelStates s = model_states(c);
        CHECK(s.parameters_bytes == 2 * parameter_count(m) + hf_buffer_bytes(m));
        CHECK(s.gradients_bytes == 0);
        CHECK(s.optimizer_bytes == 0);
        CHECK(peft_parameter_counts(m, o).trainable == 0);
        const GpuSpec gpu = load_gpu("h100-80gb");
        PlanContext ctx;
        ctx.gpu = &gpu;
        ctx.capacity_bytes = gpu.capacity_bytes;
        // Every strategy is the one forward: no backward, no optimizer step.
        const Plan p = make_plan(c, parse_strategy("sqrt"), ctx);
        CHECK(p.strategy == "forward only");
        for (const Action& a : p.schedule.actions) CHECK(a.kind == ActionKind::F_none);
        const SimResult r = simulate(c, p, gpu, Reserve{});
        CHECK(r.backward_flops == 0);
        CHECK(r.timeline.back().action != "optimizer");
        // The peak is the loss over the vocabulary: fp32 log-softmax and logits above weights.
        CHECK(r.allocator_peak_bytes > s.total() + 2 * 2 * 128 * m.vocab * 4);
        // Under no_grad the embedding keeps nothing for a backward.
        CHECK(find_op(c.graphs[c.stages[0].graph], "wte")->saved.empty());
    }
}

TEST_SUITE("finetune") {
    TEST_CASE("finetune::remat run refuses what its runtime does not execute") {
        RunOptions o;
        o.sharding = Sharding::fsdp;
        o.precision = Precision::fp32;
        CHECK_NOTHROW(rt::check_run_options(o, false));
        for (int k = 0; k < 4; ++k) {
            RunOptions x = o;
            if (k == 0) x.train = Training::lora;
            if (k == 1) x.train = Training::frozen;
            if (k == 2) x.recipe = Recipe::dpo;
            if (k == 3) x.offload_params = true;
            CAPTURE(k);
            CHECK_THROWS_AS(rt::check_run_options(x, false), InputError);
        }
    }
}
