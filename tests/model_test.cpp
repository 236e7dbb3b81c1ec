// Presets and config parsing. Parameter counts: ../shared/reference/ANCHORS.md, "Parameter
// counts (exact)", which match the Hugging Face checkpoints' num_parameters().
#include "planner/config/model.hpp"

#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
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

    TEST_CASE("model::the families' presets match their published parameter counts") {
        // ../shared/reference/ANCHORS.md, "Parameter counts of more families (published)"; the
        // presets are those models' Hugging Face config.json files, read by the same reader.
        const std::pair<const char*, std::uint64_t> anchors[] = {
            {"llama3-8b", 8030261248ull},
            {"mistral-7b", 7241732096ull},
            {"qwen2-7b", 7615616512ull},
            {"gemma-2b", 2506172416ull},
            {"gemma-7b", 8537680896ull},
            {"phi3-mini", 3821079552ull},
            {"mixtral-8x7b", 46702792704ull},
            {"falcon-7b", 6921720704ull},
            {"gpt-neox-20b", 20554567680ull},
            // Qwen/Qwen1.5-MoE-A2.7B: 14.3B on its model card; tests/torch/param_counts_test.py's
            // module-built count is the same exact figure.
            {"qwen1.5-moe-a2.7b", 14315784192ull}};
        for (const auto& [name, params] : anchors) {
            CAPTURE(name);
            const ModelConfig m = load_model(name);
            CHECK(m.name == name);
            CHECK(m.source.starts_with("https://huggingface.co/"));
            CHECK(parameter_count(m) == params);
        }
    }

    TEST_CASE("model::each family reads the keys that change its shapes or saved tensors") {
        auto read = [](const char* text) {
            return model_from_json(nlohmann::json::parse(text), "config.json");
        };
        SUBCASE("llama's MLP is gated whatever hidden_act says (transformers' LlamaMLP)") {
            // Llama-2-7b-hf with hidden_act gelu: still gate, up and down projections.
            const ModelConfig m = read(R"({"model_type": "llama", "hidden_size": 4096,
                "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
                "vocab_size": 32000, "hidden_act": "gelu"})");
            CHECK(m.gated_mlp);
            CHECK(m.activation == Activation::gelu);
            CHECK(parameter_count(m) == 6738415616ull);
        }
        SUBCASE("rope_scaling and sliding_window are accepted and change no sizes") {
            const ModelConfig m = read(R"({"model_type": "llama", "hidden_size": 4096,
                "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
                "num_key_value_heads": 8, "vocab_size": 128256, "rope_scaling": {"factor": 8.0,
                "rope_type": "llama3", "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192}, "max_position_embeddings": 131072})");
            CHECK(m.rope_scaling == "llama3");
            CHECK(parameter_count(m) == 8030261248ull);  // Llama-3.1-8B: Llama-3-8B's count
        }
        SUBCASE("qwen2: q/k/v biases, no o_proj bias") {
            const ModelConfig m = read(R"({"model_type": "qwen2"})");
            CHECK(m.attn_bias);
            CHECK_FALSE(m.attn_out_bias);
        }
        SUBCASE("gemma: head_dim 256 by default, (1 + weight) RMSNorm, scaled tied embeddings") {
            const ModelConfig m = read(R"({"model_type": "gemma"})");
            CHECK(m.head_dim == 256);
            CHECK(m.norm == NormKind::rmsnorm_offset);
            CHECK(m.scaled_embeddings);
            CHECK(m.tied_embeddings);
            CHECK(m.activation == Activation::gelu_tanh);
        }
        SUBCASE("gemma2: four norms per block, soft-capping; null turns a cap off") {
            const ModelConfig m =
                read(R"({"model_type": "gemma2", "final_logit_softcapping": null})");
            CHECK(m.sandwich_norms);
            CHECK(m.attn_softcap == 50.0);
            CHECK(m.final_softcap == 0.0);
            CHECK(block_norm_count(m) == 4 * m.hidden);
        }
        SUBCASE("phi3 fuses qkv and gate/up; partial rotary is refused") {
            const ModelConfig m = read(R"({"model_type": "phi3"})");
            CHECK(m.fused_qkv);
            CHECK(m.fused_gate_up);
            CHECK_THROWS_WITH_AS(read(R"({"model_type": "phi3", "partial_rotary_factor": 0.75})"),
                                 doctest::Contains("partial_rotary_factor"), InputError);
        }
        SUBCASE("mixtral: experts and the router") {
            const ModelConfig m = read(R"({"model_type": "mixtral", "num_local_experts": 4,
                "num_experts_per_tok": 2, "hidden_size": 64, "intermediate_size": 128,
                "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 1,
                "vocab_size": 100})");
            CHECK(m.n_experts == 4);
            // 2 RMSNorms + q, k, v, o + 4 experts x 3 matrices + the 64 x 4 router
            CHECK(block_parameter_count(m) ==
                  2 * 64 + 64 * 64 + 2 * 64 * 32 + 64 * 64 + 4 * 3 * 64 * 128 + 64 * 4);
            CHECK_THROWS_WITH_AS(read(R"({"model_type": "mixtral", "num_local_experts": 2,
                "num_experts_per_tok": 3})"),
                                 doctest::Contains("num_experts_per_tok 3"), InputError);
        }
        SUBCASE(
            "qwen2_moe: routed experts of their own width, a shared expert, dense layers refused") {
            const ModelConfig m = load_model("qwen1.5-moe-a2.7b");
            CHECK(m.n_experts == 60);
            CHECK(m.expert_ffn == 1408);
            CHECK(m.shared_expert_ffn == 5632);
            CHECK_FALSE(m.renormalize_topk);
            CHECK_THROWS_WITH_AS(read(R"({"model_type": "qwen2_moe", "decoder_sparse_step": 2})"),
                                 doctest::Contains("decoder_sparse_step"), InputError);
            CHECK_THROWS_WITH_AS(read(R"({"model_type": "qwen2_moe", "mlp_only_layers": [0]})"),
                                 doctest::Contains("mlp_only_layers"), InputError);
        }
        SUBCASE("falcon: multi-query 7b, new_decoder_architecture (40b), sequential") {
            const ModelConfig f7 = load_model("falcon-7b");
            CHECK(f7.n_kv_heads == 1);
            CHECK(f7.shared_block_norm);
            CHECK(f7.kv_by_index);
            // Falcon-40B (tiiuae/falcon-40b config.json): 8 KV groups, ln_attn and ln_mlp.
            const ModelConfig f40 = read(R"({"model_type": "falcon", "hidden_size": 8192,
                "num_attention_heads": 128, "num_hidden_layers": 60, "num_kv_heads": 8,
                "new_decoder_architecture": true, "parallel_attn": true, "bias": false,
                "vocab_size": 65024})");
            CHECK(f40.n_kv_heads == 8);
            CHECK_FALSE(f40.shared_block_norm);
            CHECK(block_norm_count(f40) == 4 * 8192);
            const ModelConfig seq = read(R"({"model_type": "falcon", "parallel_attn": false,
                "multi_query": false})");
            CHECK(seq.n_kv_heads == seq.n_heads);
            CHECK_FALSE(seq.kv_by_index);
            CHECK_THROWS_WITH_AS(read(R"({"model_type": "falcon", "alibi": true})"),
                                 doctest::Contains("alibi"), InputError);
        }
        SUBCASE("gpt_neox with gelu_fast (GPT-NeoX-20B)") {
            CHECK(load_model("gpt-neox-20b").activation == Activation::gelu_fast);
        }
    }

    TEST_CASE(
        "model::a config.json is named after its folder, and a folder reads its config.json") {
        namespace fs = std::filesystem;
        const fs::path dir = fs::temp_directory_path() / "remat-model-test" / "Qwen2-0.5B";
        fs::create_directories(dir);
        std::ofstream(dir / "config.json")
            << R"({"model_type": "qwen2", "hidden_size": 896, "intermediate_size": 4864,
               "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
               "vocab_size": 151936, "tie_word_embeddings": true})";
        const ModelConfig by_file = load_model((dir / "config.json").string());
        const ModelConfig by_dir = load_model(dir.string());
        CHECK(by_file.name == "Qwen2-0.5B");
        CHECK(by_dir.name == "Qwen2-0.5B");
        // Qwen/Qwen2-0.5B, tied embeddings: the hub's safetensors count, 494,032,768.
        CHECK(parameter_count(by_dir) == 494032768ull);
        std::ofstream(dir.parent_path() / "pythia-6.9b.json") << R"({"model_type": "gpt_neox"})";
        CHECK(load_model((dir.parent_path() / "pythia-6.9b.json").string()).name == "pythia-6.9b");
        CHECK_THROWS_WITH_AS(load_model((dir.parent_path() / "absent").string()),
                             doctest::Contains("cannot open"), InputError);
        fs::remove_all(dir.parent_path());
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
