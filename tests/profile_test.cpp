// Op-graph profiles. The megatron profile must reproduce Korthikanti et al. 2022 (Eq. 1,
// Table 2; ANCHORS.md "Activations per transformer layer") from its op graph, exactly.
#include <doctest/doctest.h>

#include "planner/chain/chain.hpp"
#include "planner/graph/profiles.hpp"

using namespace remat;

namespace {

ModelConfig megatron_gpt(std::uint64_t h, std::uint64_t a) {
    ModelConfig m = load_model("gpt2");
    m.name = "gpt";
    m.hidden = h;
    m.n_heads = a;
    m.n_kv_heads = a;
    m.head_dim = h / a;
    m.ffn = 4 * h;
    m.activation = Activation::gelu;
    return m;  // dropout 0.1 everywhere, as in the paper
}

StageGraph block(const ModelConfig& m, std::uint64_t b, std::uint64_t s, Profile p,
                 Precision prec = Precision::bf16_mixed) {
    StageRequest r;
    r.kind = StageKind::block;
    r.model = &m;
    r.batch = b;
    r.seq = s;
    r.profile = p;
    r.precision = prec;
    return build_stage_graph(r);
}

}  // namespace

TEST_SUITE("profile") {
    TEST_CASE("profile::megatron reproduces sbh(34 + 5as/h) and 2sbh") {
        struct Case {
            std::uint64_t s, b, h, a;
        };
        // The GPT-3 175B layer of Table 2, and two other shapes.
        for (const Case c :
             {Case{2048, 1, 12288, 96}, Case{1024, 4, 4096, 32}, Case{4096, 2, 2048, 16}}) {
            CAPTURE(c.h);
            const ModelConfig m = megatron_gpt(c.h, c.a);
            const StageGraph g = block(m, c.b, c.s, Profile::megatron);
            const std::uint64_t sbh = c.s * c.b * c.h;
            // sbh(34 + 5as/h) = 34sbh + 5as²b
            CHECK(g.saved_bytes() == 34 * sbh + 5 * c.a * c.s * c.s * c.b);
            // Full recomputation keeps the 2-byte block input: 2sbh.
            CHECK(g.tensor(g.input()).bytes() == 2 * sbh);
            // Selective recomputation drops the attention core: 34sbh (t = 1).
            std::uint64_t kept = 0;
            for (TensorId t : selective_kept_storages(g)) kept += g.tensor(t).bytes();
            CHECK(kept == 34 * sbh);
        }
        SUBCASE("GPT-3 layer in MiB: none 2736, full 48") {
            const ModelConfig m = megatron_gpt(12288, 96);
            const StageGraph g = block(m, 1, 2048, Profile::megatron);
            CHECK(g.saved_bytes() == 2736ull << 20);
            CHECK(g.tensor(g.input()).bytes() == 48ull << 20);
        }
    }

    TEST_CASE(
        "profile::megatron ignores the precision mode (the profile fixes 2-byte activations)") {
        const ModelConfig m = megatron_gpt(1024, 16);
        CHECK(block(m, 2, 512, Profile::megatron, Precision::fp32).saved_bytes() ==
              block(m, 2, 512, Profile::megatron, Precision::bf16_mixed).saved_bytes());
    }

    TEST_CASE("profile::megatron head keeps 4sbh(1 + v/h) with the final norm") {
        const ModelConfig m = megatron_gpt(4096, 32);
        RunOptions o;
        o.seq = 1024;
        o.micro_batch = 2;
        o.profile = Profile::megatron;
        const Chain c = build_chain(m, o);
        const std::uint64_t sbh = 1024 * 2 * 4096, sbv = 1024 * 2 * m.vocab;
        const std::uint64_t norm = c.stages[c.stages.size() - 2].all_bytes;
        const std::uint64_t head = c.stages.back().all_bytes;
        CHECK(norm + head == 4 * sbh + 4 * sbv);
    }

    TEST_CASE("profile::sdpa saves no S x S tensor and follows the flash derivative") {
        // derivatives.yaml, _scaled_dot_product_flash_attention: query, key, value, output,
        // logsumexp, philox seed/offset.
        const ModelConfig m = load_model("llama2-7b");
        const StageGraph g = block(m, 1, 4096, Profile::sdpa);
        bool has_lse = false;
        for (TensorId t : g.saved_storages()) {
            const Tensor& x = g.tensor(t);
            CHECK_MESSAGE(x.bytes() < 4096ull * 4096 * 32, x.name);
            has_lse |= x.name == "self_attn.logsumexp";
        }
        CHECK(has_lse);
        const StageGraph eager = block(m, 1, 4096, Profile::hf_eager);
        CHECK(eager.saved_bytes() > g.saved_bytes() + 32ull * 4096 * 4096 * 4);
    }

    TEST_CASE("profile::graphs are acyclic and every saved tensor is produced or an input") {
        for (const char* name : {"tiny-gpt2", "tiny-llama", "pythia-6.9b"}) {
            for (Profile p : {Profile::hf_eager, Profile::sdpa, Profile::megatron}) {
                CAPTURE(name);
                const ModelConfig m = load_model(name);
                const StageGraph g = block(m, 2, 64, p);
                CHECK(g.order().size() == g.n_ops());
                for (TensorId t : g.saved_storages()) {
                    const bool is_input =
                        std::find(g.inputs().begin(), g.inputs().end(), t) != g.inputs().end();
                    CHECK((g.producer(t) >= 0 || is_input));
                }
            }
        }
    }
}
