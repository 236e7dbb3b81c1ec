// Presets and config parsing. Parameter counts: ../shared/reference/ANCHORS.md, "Parameter
// counts (exact)", which match the Hugging Face checkpoints' num_parameters().
#include "planner/config/model.hpp"

#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include "planner/config/error.hpp"
#include "planner/simulate/gpu.hpp"

using namespace remat;

TEST_SUITE("model") {
    TEST_CASE("model::parameter_count matches ANCHORS.md exactly") {
        const std::pair<const char*, std::uint64_t> anchors[] = {
            {"gpt2", 124439808ull},         {"gpt2-medium", 354823168ull},
            {"gpt2-large", 774030080ull},   {"gpt2-xl", 1557611200ull},
            {"llama2-7b", 6738415616ull},   {"llama2-13b", 13015864320ull},
            {"llama2-70b", 68976648192ull}, {"pythia-6.9b", 6857302016ull}};
        for (const auto& [name, params] : anchors) {
            CAPTURE(name);
            CHECK(parameter_count(load_model(name)) == params);
        }
    }

    TEST_CASE("model::tiny presets are small but shaped like the real ones") {
        for (const char* name : {"tiny-gpt2", "tiny-llama"}) {
            CAPTURE(name);
            const ModelConfig m = load_model(name);
            CHECK(m.n_layers >= 4);
            CHECK(m.context >= 1024);
            CHECK(m.vocab >= 4096);
            CHECK(parameter_count(m) < 5'000'000);
        }
        CHECK(load_model("tiny-llama").n_kv_heads < load_model("tiny-llama").n_heads);
    }

    TEST_CASE("model::model_from_json reads HF config.json with transformers' defaults") {
        SUBCASE("gpt2 with only the sizes: n_inner = 4 * n_embd, gelu_new, tied, dropout 0.1") {
            const auto j = nlohmann::json::parse(
                R"({"model_type": "gpt2", "n_embd": 768, "n_layer": 12, "n_head": 12})");
            const ModelConfig m = model_from_json(j, "config.json");
            CHECK(m.ffn == 3072);
            CHECK(m.activation == Activation::gelu_new);
            CHECK(m.tied_embeddings);
            CHECK(m.attn_dropout == doctest::Approx(0.1));
            CHECK(parameter_count(m) == 124439808ull);
        }
        SUBCASE("llama: num_key_value_heads defaults to num_attention_heads, untied, no dropout") {
            const auto j = nlohmann::json::parse(
                R"({"model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008,
                "num_hidden_layers": 32, "num_attention_heads": 32, "vocab_size": 32000})");
            const ModelConfig m = model_from_json(j, "config.json");
            CHECK(m.n_kv_heads == 32);
            CHECK_FALSE(m.tied_embeddings);
            CHECK(parameter_count(m) == 6738415616ull);
        }
        SUBCASE("llama2-70b style GQA") {
            const auto j = nlohmann::json::parse(
                R"({"model_type": "llama", "hidden_size": 8192, "intermediate_size": 28672,
                "num_hidden_layers": 80, "num_attention_heads": 64, "num_key_value_heads": 8})");
            CHECK(parameter_count(model_from_json(j, "c.json")) == 68976648192ull);
        }
        SUBCASE("mistral defaults: 8 KV heads, ffn 14336") {
            const auto j = nlohmann::json::parse(R"({"model_type": "mistral"})");
            const ModelConfig m = model_from_json(j, "c.json");
            CHECK(m.n_kv_heads == 8);
            CHECK(m.ffn == 14336);
        }
        SUBCASE("gpt_neox (pythia-6.9b config)") {
            const auto j = nlohmann::json::parse(
                R"({"model_type": "gpt_neox", "hidden_size": 4096, "intermediate_size": 16384,
                "num_hidden_layers": 32, "num_attention_heads": 32, "vocab_size": 50432,
                "rotary_pct": 0.25, "use_parallel_residual": true, "tie_word_embeddings": false})");
            const ModelConfig m = model_from_json(j, "c.json");
            CHECK(m.parallel_residual);
            CHECK(parameter_count(m) == 6857302016ull);
        }
    }

    TEST_CASE("model::model_from_json rejects bad input with a clear message") {
        auto message = [](const char* text) {
            try {
                model_from_json(nlohmann::json::parse(text), "bad.json");
            } catch (const InputError& e) {
                return std::string(e.what());
            }
            return std::string("no error");
        };
        CHECK(message(R"({"model_type": "gpt2", "n_embd": 770, "n_head": 12})")
                  .find("not divisible") != std::string::npos);
        CHECK(message(R"({"model_type": "gpt2", "n_layer": 0})").find("positive integer") !=
              std::string::npos);
        CHECK(message(R"({"model_type": "gpt2", "n_layer": -3})").find("positive integer") !=
              std::string::npos);
        CHECK(message(R"({"model_type": "bert"})").find("not supported") != std::string::npos);
        CHECK(message(R"({"hidden": 3})").find("neither") != std::string::npos);
    }

    TEST_CASE("model::load_model names the closest preset") {
        try {
            load_model("lama2-7b");
            FAIL("expected an error");
        } catch (const InputError& e) {
            CHECK(std::string(e.what()).find("llama2-7b") != std::string::npos);
        }
    }

    TEST_CASE("gpu::presets and parse_bytes") {
        for (const auto& name : gpu_preset_names()) {
            CAPTURE(name);
            const GpuSpec g = load_gpu(name);
            CHECK(g.capacity_bytes > 16ull << 30);
            CHECK(g.bf16_flops > g.fp32_flops);
            CHECK(g.memory_bandwidth > 0);
            CHECK(g.host_link_bandwidth > 0);
        }
        CHECK(gpu_preset_names().size() == 6);
        CHECK(parse_bytes("24GiB", "--gpu-memory") == 24ull << 30);
        CHECK(parse_bytes("80GB", "--gpu-memory") == 80'000'000'000ull);
        CHECK(parse_bytes("512MiB", "--gpu-memory") == 512ull << 20);
        CHECK(parse_bytes("1000B", "--gpu-memory") == 1000);
        CHECK_THROWS_AS(parse_bytes("-1GiB", "--gpu-memory"), InputError);
        CHECK_THROWS_AS(parse_bytes("lots", "--gpu-memory"), InputError);
    }
}
