// The real `remat` binary: exit codes, one-line errors, --json documents.
#include <doctest/doctest.h>
#include <sys/wait.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "tests/cli_process.hpp"

using namespace cli_process;

TEST_SUITE("cli") {
    TEST_CASE("cli::models lists the presets") {
        const Run r = run_remat("models");
        CHECK(r.code == 0);
        // The issue 16 presets: Llama-3-8B, Mistral-7B, Qwen2-7B, Gemma-7B, Mixtral-8x7B at least.
        for (const char* name :
             {"gpt2-xl", "llama2-70b", "pythia-6.9b", "tiny-llama", "llama3-8b", "mistral-7b",
              "qwen2-7b", "gemma-7b", "mixtral-8x7b", "h100-80gb", "rtx4090-24gb"})
            CHECK(r.out.find(name) != std::string::npos);
        CHECK(r.out.find("8 experts, top-2") != std::string::npos);
        const Run j = run_remat("models --json");
        const auto models = nlohmann::json::parse(j.out).at("models");
        CHECK(models.size() == 21);
        for (const auto& m : models)
            if (m.at("name") == "mixtral-8x7b") CHECK(m.at("experts") == 8);
    }

    TEST_CASE("cli::--network and --gpus-per-node: the collectives in plan, errors in one line") {
        const Run p = run_remat(
            "plan --model llama2-7b --seq 4096 --sharding fsdp --world-size 64 --network "
            "pcie-gen4 --gpus-per-node 4 --json");
        REQUIRE(p.code == 0);
        const auto comm = nlohmann::json::parse(p.out).at("communication");
        CHECK(comm.at("network") == "pcie-gen4");
        CHECK(comm.at("collectives").size() == 2);  // all-gather, reduce-scatter
        CHECK(comm.at("exposed_comm_s").get<double>() > 0);
        const Run t = run_remat("plan --model llama2-7b --sharding fsdp --world-size 64");
        CHECK(t.out.find("comm ") != std::string::npos);
        CHECK(t.out.find("on dgx-h100 over 64 ranks (8 a node)") != std::string::npos);
        const Run bad = run_remat("plan --model gpt2 --network dgx-h1000");
        CHECK(bad.code == 2);
        CHECK(bad.err.find("unknown network 'dgx-h1000'") != std::string::npos);
        CHECK(std::count(bad.err.begin(), bad.err.end(), '\n') == 1);
        CHECK(run_remat("plan --model gpt2 --gpus-per-node 0").code == 2);
        CHECK(run_remat("models").out.find("h100-roce") != std::string::npos);
    }

    TEST_CASE("cli::run --work-times lists each op's measured time beside the prediction") {
        const Run r =
            run_remat("run --model tiny-llama --seq 32 --steps 2 --world-size 2 --work-times");
        REQUIRE(r.code == 0);
        for (const char* what : {"F attn.core", "B lm_head", "all_gather", "reduce_scatter",
                                 "optimizer", "predicted ms"})
            CHECK(r.out.find(what) != std::string::npos);
        const Run j = run_remat("run --model tiny-llama --seq 32 --steps 2 --work-times --json");
        REQUIRE(j.code == 0);
        const auto doc = nlohmann::json::parse(j.out);
        CHECK(doc.at("step_seconds").size() == 2);
        CHECK(doc.at("work").size() > 10);
        CHECK(doc.at("predicted_step_time_s").get<double>() > 0);
    }

    TEST_CASE("cli::every family plans, max-batches, recommends and draws") {
        // Issue 16's families, at their published configs (the presets), both HF profiles.
        for (const char* model :
             {"qwen2-7b", "gemma-7b", "gemma-2b", "phi3-mini", "mixtral-8x7b", "qwen1.5-moe-a2.7b",
              "falcon-7b", "gpt-neox-20b", "llama3-8b", "mistral-7b"}) {
            CAPTURE(model);
            const std::string q = std::string(" --model ") + model +
                                  " --seq 512 --sharding fsdp --world-size 64 --gpu h100-80gb";
            for (const char* profile : {"sdpa", "hf-eager"}) {
                const Run p =
                    run_remat("plan" + q + " --strategy sqrt --json --profile " + profile);
                REQUIRE(p.code == 0);
                const auto j = nlohmann::json::parse(p.out);
                CHECK(j.at("fits") == true);
                CHECK(j.at("question").at("model") == model);
            }
            const Run mb = run_remat("max-batch" + q + " --strategies none,full,optimal --json");
            REQUIRE(mb.code == 0);
            const auto results = nlohmann::json::parse(mb.out).at("results");
            for (const auto& r : results) CHECK(r.at("max_micro_batch").get<std::uint64_t>() >= 1);
            CHECK(run_remat("recommend" + q).code == 0);
            const Run d = run_remat("dot" + q + " --strategies none,sqrt");
            CHECK(d.code == 0);
            CHECK(d.out.rfind("digraph", 0) == 0);
        }
    }

    TEST_CASE("cli::--moe-capacity-factor is checked against the model and its routing") {
        const std::string q = " --model mixtral-8x7b --seq 512 --sharding fsdp --world-size 64";
        const Run ok = run_remat("plan" + q + " --moe-capacity-factor 2 --json");
        REQUIRE(ok.code == 0);
        CHECK(nlohmann::json::parse(ok.out).at("question").at("moe_capacity_factor") == 2.0);
        check_rejected("plan" + q + " --moe-capacity-factor 5",
                       "between 1 (balanced routing) and 4");
        check_rejected("plan" + q + " --moe-capacity-factor 0.5", "--moe-capacity-factor 0.5");
        check_rejected("plan --model llama3-8b --moe-capacity-factor 2", "has no experts");
        check_rejected("plan --model mixtral-8x7b --profile megatron", "dense layers");
        check_rejected("plan --model qwen2-7b --profile remat", "gpt2 and llama (SwiGLU)");
    }

    TEST_CASE("cli::plan --json has the documented fields") {
        const Run r = run_remat("plan --model gpt2 --strategy sqrt --json");
        REQUIRE(r.code == 0);
        const auto j = nlohmann::json::parse(r.out);
        for (const char* key :
             {"params", "peak_bytes", "capacity_bytes", "fits", "breakdown", "stages", "schedule",
              "recompute_flops", "step_time_s", "tokens_per_s", "timeline"})
            CHECK_MESSAGE(j.contains(key), key);
        for (const char* key : {"parameters_bytes", "gradients_bytes", "optimizer_bytes",
                                "unsharded_parameters_bytes", "activations_bytes",
                                "temporaries_bytes", "reserve_bytes"})
            CHECK_MESSAGE(j.at("breakdown").contains(key), key);
        CHECK(j.at("params") == 124439808);
        CHECK(j.at("fits") == (j.at("peak_bytes") <= j.at("capacity_bytes")));
        std::uint64_t sum = 0;
        for (const auto& [k, v] : j.at("breakdown").items()) sum += v.get<std::uint64_t>();
        CHECK(sum == j.at("peak_bytes").get<std::uint64_t>());
        CHECK(j.at("stages").size() == 12 + 3);
        CHECK(j.at("stages")[1].at("keeps") == "input");
        CHECK(j.at("stages")[1].at("kind") == "block");
        CHECK(j.at("stages")[0].at("kind") == "embedding");
        CHECK(j.at("recompute_flops").get<double>() > 0);
    }

    TEST_CASE("cli::a configuration that does not fit is an answer, not an error") {
        const Run r = run_remat("plan --model llama2-70b --json");
        CHECK(r.code == 0);
        CHECK(nlohmann::json::parse(r.out).at("fits") == false);
        const Run h = run_remat("plan --model llama2-70b");
        CHECK(h.out.find("DOES NOT FIT") != std::string::npos);
    }

    TEST_CASE("cli::max-batch --json") {
        const Run r = run_remat(
            "max-batch --model llama2-7b --sharding fsdp --world-size 8 --strategies none,full "
            "--json");
        REQUIRE(r.code == 0);
        const auto j = nlohmann::json::parse(r.out);
        REQUIRE(j.at("results").size() == 2);
        CHECK(j.at("results")[0].at("strategy") == "none");
        CHECK(j.at("results")[1].at("max_micro_batch").get<int>() >
              j.at("results")[0].at("max_micro_batch").get<int>());
        CHECK(run_remat("max-batch --model llama2-70b --strategies full --json")
                  .out.find("\"max_micro_batch\": 0") != std::string::npos);
    }

    TEST_CASE("cli::plan reads a Hugging Face config.json by content") {
        const auto path =
            write_temp("my-llama.json",
                       R"({"model_type": "llama", "hidden_size": 2048, "num_hidden_layers": 4,
                                     "num_attention_heads": 16, "intermediate_size": 5632})");
        const Run r = run_remat("plan --model " + path + " --seq 512 --json");
        CHECK(r.code == 0);
        CHECK(nlohmann::json::parse(r.out).at("stages").size() == 7);
    }

    TEST_CASE("cli::a reserve may be zero") {
        const Run r = run_remat(
            "plan --model gpt2 --reserve-context 0 --reserve-workspace 0 --fragmentation 0 --json");
        REQUIRE(r.code == 0);
        CHECK(nlohmann::json::parse(r.out).at("breakdown").at("reserve_bytes") == 0);
    }

    // The eager core saves B * A * S * S probabilities per block where flash saves out and lse:
    // for gpt2 (12 layers, 12 heads) at B 1, S 1024 in bf16, 12 * 12 * 2 MiB = 288 MiB more before
    // what each saves of its own.
    TEST_CASE("cli::--attention eager keeps the probabilities, and recommend's args carry it") {
        const auto flash =
            nlohmann::json::parse(run_remat("plan --model gpt2 --profile remat --json").out);
        const Run r = run_remat("plan --model gpt2 --profile remat --attention eager --json");
        REQUIRE(r.code == 0);
        const auto eager = nlohmann::json::parse(r.out);
        CHECK(eager.at("question").at("attention") == "eager");
        CHECK(flash.at("question").at("attention") == "flash");
        CHECK(eager.at("breakdown").at("activations_bytes").get<std::uint64_t>() >
              flash.at("breakdown").at("activations_bytes").get<std::uint64_t>() + (200ull << 20));
        const auto rec = nlohmann::json::parse(
            run_remat("recommend --model gpt2 --profile remat --attention eager --json").out);
        const auto args = rec.at("best").at("args").get<std::vector<std::string>>();
        CHECK(std::find(args.begin(), args.end(), "eager") != args.end());
    }

    TEST_CASE("cli::--gpu-memory overrides the capacity") {
        const auto j =
            nlohmann::json::parse(run_remat("plan --model gpt2 --gpu-memory 24GiB --json").out);
        CHECK(j.at("capacity_bytes") == 24ull << 30);
    }

    TEST_CASE("cli::invalid input is one line on stderr and exit code 2") {
        check_rejected("plan --model lama2-7b", "llama2-7b");
        check_rejected("plan --model gpt2 --gpu h100", "h100-80gb");
        check_rejected("plan --model gpt2 --strategy sqr", "sqrt");
        check_rejected("plan --model gpt2 --profile eager", "hf-eager");
        check_rejected("plan --model gpt2 --profile remat --attention lazy", "eager");
        check_rejected("plan --model gpt2 --attention eager",
                       "applies to profiles remat and remat-cuda");
        check_rejected("plan --model gpt2 --precision bf17", "bf16");
        check_rejected("plan --model gpt2 --sharding zero4", "zero");
        check_rejected("plan --model gpt2 --strategy every-0", "positive decimal integer");
        check_rejected("plan --model gpt2 --strategy segments-13", "1 <= K <= 12");
        check_rejected("plan --model gpt2 --micro-batch 0", "--micro-batch");
        check_rejected("plan --model gpt2 --micro-batch -4", "--micro-batch");
        check_rejected("plan --model gpt2 --seq 0", "--seq");
        check_rejected("plan --model gpt2 --world-size 0", "--world-size");
        check_rejected("plan --model gpt2 --gpu-memory 24XB", "--gpu-memory");
        check_rejected("plan --model gpt2 --fragmentation 1.5", "--fragmentation");
        check_rejected("plan --model gpt2 --no-such-option", "no-such-option");
        check_rejected("plan --micro-batch 2", "--model");
        check_rejected("plan --model gpt2 --strategy all", "unknown strategy");
        check_rejected("dot --model gpt2 --json", "not JSON");
        check_rejected("plan --model gpt2 --reserve-context -1MiB", "--reserve-context");
        check_rejected("", "subcommand");
        check_rejected("max-batch --model gpt2 --strategies none,,full", "empty name");
        check_rejected("plan --model gpt2 --grad-accumulation 0", "--grad-accumulation");
        check_rejected("plan --model gpt2 --strategy optimal --memory-slots -1", "--memory-slots");
        check_rejected("plan --model gpt2 --memory-budget 1XB", "--memory-budget");
        check_rejected("recommend --model gpt2 --micro-batch 4", "drop --micro-batch");
        check_rejected("recommend --model gpt2 --world-size 2 --global-batch 7",
                       "multiple of --world-size 2");
        check_rejected("recommend --model gpt2 --global-batch 0", "--global-batch");
        check_rejected("recommend --model gpt2 --global-batch 8 --grad-accumulation 2",
                       "drop --grad-accumulation");
        check_rejected("recommend --model gpt2 --offload-checkpoints",
                       "drop --offload-checkpoints");
        const auto bad =
            write_temp("bad.json", "{\n  \"model_type\": \"gpt2\",\n  \"n_embd\": 768,,\n}\n");
        check_rejected("plan --model " + bad, "bad.json:3:");
        const auto odd =
            write_temp("odd.json", R"({"model_type": "gpt2", "n_embd": 770, "n_head": 12})");
        check_rejected("plan --model " + odd, "not divisible");
    }

    TEST_CASE("cli::--help teaches and exits 0") {
        const Run r = run_remat("plan --help");
        CHECK(r.code == 0);
        CHECK(r.out.find("--strategy") != std::string::npos);
        CHECK(r.out.find("--memory-budget") != std::string::npos);
    }

    TEST_CASE("cli::dot writes DOT that Graphviz renders") {
        const auto file = (temp_dir() / "plan.dot").string();
        CHECK(run_remat("dot --model tiny-gpt2 --strategies none,sqrt -o " + file).code == 0);
        const std::string text = slurp(file);
        CHECK(text.find("digraph") != std::string::npos);
        const std::string cmd = "dot -Tsvg " + file + " -o " + (temp_dir() / "plan.svg").string();
        CHECK(std::system(cmd.c_str()) == 0);
    }
}

namespace {

nlohmann::json plan_json_of(const std::vector<std::string>& args) {
    std::string line = "plan";
    for (const auto& a : args) line += " " + a;
    const Run r = run_remat(line + " --json");
    REQUIRE(r.code == 0);
    return nlohmann::json::parse(r.out);
}

}  // namespace

TEST_CASE("cli::pareto --json: a frontier from the leanest schedule to no recomputation") {
    const std::string q = "--model gpt2 --micro-batch 8 --gpu-memory 24GiB";
    const Run r = run_remat("pareto " + q + " --json");
    REQUIRE(r.code == 0);
    const auto j = nlohmann::json::parse(r.out);
    const auto& points = j.at("points");
    REQUIRE(points.size() > 5);
    for (std::size_t i = 1; i < points.size(); ++i) {
        CHECK(points[i].at("peak_bytes").get<std::uint64_t>() >
              points[i - 1].at("peak_bytes").get<std::uint64_t>());
        CHECK(points[i].at("step_time_s").get<double>() <
              points[i - 1].at("step_time_s").get<double>());
    }
    CHECK(points.back().at("recompute_flops").get<double>() == 0);
    const auto none = nlohmann::json::parse(run_remat("plan " + q + " --strategy none --json").out);
    CHECK(points.back().at("step_time_s").get<double>() ==
          doctest::Approx(none.at("step_time_s").get<double>()));
    const auto full = nlohmann::json::parse(run_remat("plan " + q + " --strategy full --json").out);
    CHECK(points.front().at("peak_bytes").get<std::uint64_t>() <=
          full.at("peak_bytes").get<std::uint64_t>());
    // Any point's budget gives optimal a plan at least as fast within that budget.
    for (std::size_t i : {std::size_t{0}, points.size() / 2, points.size() - 1}) {
        const auto peak = points[i].at("peak_bytes").get<std::uint64_t>();
        const auto o =
            nlohmann::json::parse(run_remat("plan " + q + " --strategy optimal --memory-budget " +
                                            std::to_string(peak) + "B --json")
                                      .out);
        CHECK(o.at("peak_bytes").get<std::uint64_t>() <= peak);
        CHECK(o.at("step_time_s").get<double>() <=
              points[i].at("step_time_s").get<double>() * (1 + 1e-12));
    }
    const Run text = run_remat("pareto " + q);
    CHECK(text.out.find("non-dominated") != std::string::npos);
}

TEST_CASE(
    "cli::recommend --json: the best fits, ranks first, and its args reproduce it with remat "
    "plan") {
    const Run r = run_remat("recommend --model gpt2 --gpu-memory 16GiB --json");
    REQUIRE(r.code == 0);
    const auto j = nlohmann::json::parse(r.out);
    const auto& c = j.at("candidates");
    REQUIRE(c.size() > 5);
    CHECK(j.at("best") == c[0]);
    for (std::size_t i = 0; i < c.size(); ++i) {
        CHECK(c[i].at("peak_bytes").get<std::uint64_t>() <= 16ull << 30);
        if (i)
            CHECK(c[i].at("tokens_per_s").get<double>() <=
                  c[i - 1].at("tokens_per_s").get<double>());
    }
    std::set<std::string> strategies;
    for (const auto& x : c) strategies.insert(x.at("strategy").get<std::string>());
    CHECK(strategies.count("optimal") + strategies.count("none") >= 1);
    CHECK(strategies.size() >= 5);
    for (std::size_t i : {std::size_t{0}, c.size() / 2, c.size() - 1}) {
        const auto p = plan_json_of(c[i].at("args").get<std::vector<std::string>>());
        CHECK(p.at("peak_bytes") == c[i].at("peak_bytes"));
        CHECK(p.at("tokens_per_s").get<double>() ==
              doctest::Approx(c[i].at("tokens_per_s").get<double>()));
        CHECK(p.at("strategy") == c[i].at("strategy"));
    }
    // A larger micro-batch of the same strategy raises tokens/s while nothing is recomputed.
    double previous = 0;
    for (int b : {1, 2, 4, 8}) {
        const auto p = nlohmann::json::parse(
            run_remat("plan --model gpt2 --strategy none --json --micro-batch " + std::to_string(b))
                .out);
        CHECK(p.at("tokens_per_s").get<double>() > previous);
        previous = p.at("tokens_per_s").get<double>();
    }
}

TEST_CASE("cli::recommend --global-batch accumulates gradients to reach it") {
    const Run r = run_remat(
        "recommend --model gpt2 --sharding fsdp --world-size 4 --global-batch 64 --gpu-memory 8GiB "
        "--json");
    REQUIRE(r.code == 0);
    const auto j = nlohmann::json::parse(r.out);
    REQUIRE(!j.at("candidates").empty());
    for (const auto& c : j.at("candidates"))
        CHECK(c.at("micro_batch").get<int>() * c.at("grad_accumulation").get<int>() * 4 == 64);
    const auto best = j.at("best");
    const auto p = plan_json_of(best.at("args").get<std::vector<std::string>>());
    CHECK(p.at("peak_bytes") == best.at("peak_bytes"));
    CHECK(p.at("question").at("grad_accumulation") == best.at("grad_accumulation"));
    const Run text = run_remat(
        "recommend --model gpt2 --sharding fsdp --world-size 4 --global-batch 64 --gpu-memory "
        "8GiB");
    CHECK(text.out.find("reproduce the best") != std::string::npos);
}

TEST_CASE("cli::run --json holds measured against predicted") {
    const Run r = run_remat(
        "run --model tiny-gpt2 --seq 32 --micro-batch 2 --world-size 2 --strategy sqrt "
        "--check-gradients --json");
    REQUIRE(r.code == 0);
    const auto j = nlohmann::json::parse(r.out);
    REQUIRE(j["ranks"].size() == 2);
    for (const auto& rank : j["ranks"])
        CHECK(rank["measured_peak_bytes"] == rank["predicted_peak_bytes"]);
    CHECK(j["timeline"].size() > 5);
    CHECK(j["timeline"].back()["action"] == "optimizer");
    for (const auto& a : j["timeline"]) CHECK(a["measured_bytes"] == a["predicted_bytes"]);
    CHECK(j["losses"].size() == 2);
    CHECK(j["tokens_per_s"].get<double>() > 0);
    CHECK(j["gradients_match"] == true);
    CHECK(j["oom"].is_null());
    CHECK(j["question"]["profile"] == "remat");
    CHECK(j["question"]["sharding"] == "fsdp");
}

TEST_CASE("cli::run past --memory-cap is one line and exit code 3") {
    const Run r = run_remat(
        "run --model tiny-gpt2 --seq 128 --micro-batch 5 --world-size 2 --memory-cap 40MiB");
    CHECK(r.code == 3);
    CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
    CHECK(r.err.find("out of memory: ") != std::string::npos);
    CHECK(r.err.find("cap 41943040 bytes (--memory-cap)") != std::string::npos);
    CHECK(r.err.find(", op ") != std::string::npos);
    const Run j = run_remat(
        "run --model tiny-gpt2 --seq 128 --micro-batch 5 --world-size 2 --memory-cap 40MiB --json");
    CHECK(j.code == 3);
    CHECK(nlohmann::json::parse(j.out)["oom"]["cap_bytes"] == 41943040);
}

TEST_CASE("cli::run and validate reject what the runtime does not execute") {
    check_rejected("run --model tiny-gpt2 --device cuda", "--device cuda");
    check_rejected("run --model tiny-gpt2 --device tpu", "--device 'tpu'");
    check_rejected("run --model tiny-gpt2 --sharding zero2", "--sharding zero2");
    check_rejected("run --model tiny-gpt2 --precision fp16-mixed", "fp32 and bf16-mixed");
    check_rejected("run --model tiny-gpt2 --profile sdpa", "drop --profile");
    check_rejected("run --model tiny-gpt2 --offload-checkpoints", "--offload-checkpoints");
    check_rejected("run --model tiny-gpt2 --grad-accumulation 2", "--grad-accumulation");
    check_rejected("run --model tiny-gpt2 --optimizer sgd", "AdamW");
    check_rejected("run --model tiny-gpt2 --steps 0", "--steps");
    check_rejected("run --model tiny-gpt2 --memory-cap 12XB", "--memory-cap");
    check_rejected("run --model tiny-gpt2 --seq 32 --data /no/such/file", "--data '/no/such/file'");
    check_rejected("run --model pythia-6.9b --seq 32", "gpt2 and llama");
    check_rejected("validate --world-sizes 1,,2", "--world-sizes");
    check_rejected("validate --micro-batches 0", "--micro-batches");
    check_rejected("validate --models tiny-gpt2 --strategies segments-8", "segments-8");
}

TEST_CASE("cli::validate sweeps and writes JSON") {
    const auto out = (temp_dir() / "validation.json").string();
    const Run r = run_remat(
        "validate --models tiny-llama --strategies none,optimal --micro-batches 1 --world-sizes "
        "1,2 "
        "--precisions bf16-mixed --seqs 32 -o " +
        out);
    REQUIRE(r.code == 0);
    CHECK(r.out.find("4 runs; worst relative error 0.000%") != std::string::npos);
    const auto j = nlohmann::json::parse(slurp(out));
    REQUIRE(j["runs"].size() == 4);
    CHECK(j["runs"][2]["strategy"] == "optimal");
    CHECK(j["runs"][2]["budget_bytes"].get<std::uint64_t>() > 0);
    CHECK(j["worst_error"].get<double>() <= j["tolerance"].get<double>());
}

TEST_SUITE("cli") {
    TEST_CASE("cli::--torch, --optimizer-impl and --emit torch") {
        const Run j =
            run_remat("plan --model tiny-gpt2 --torch cpu-1.13 --optimizer-impl for-loop --json");
        REQUIRE(j.code == 0);
        CHECK(j.out.find("\"optimizer_impl\": \"for-loop\"") != std::string::npos);
        CHECK(j.out.find("\"torch\": \"cpu-1.13\"") != std::string::npos);
        const Run bad = run_remat("plan --model tiny-gpt2 --optimizer-impl loop");
        CHECK(bad.code == 2);
        CHECK(bad.err.find("foreach, for-loop, fused") != std::string::npos);
        const Run t = run_remat("plan --model tiny-gpt2 --torch rocm");
        CHECK(t.code == 2);
        CHECK(t.err.find("cuda, cpu-1.13") != std::string::npos);
        const Run e = run_remat("plan --model tiny-gpt2 --strategy every-2 --emit torch");
        REQUIRE(e.code == 0);
        CHECK(e.out.find("remat_torch.apply_segments(model, [(0, 0), (2, 2)], n_blocks=4)") !=
              std::string::npos);
        CHECK(run_remat("plan --model tiny-gpt2 --emit torch --json").code == 2);
        CHECK(run_remat("plan --model tiny-gpt2 --emit tensorflow").code == 2);
        const Run sel = run_remat("plan --model tiny-gpt2 --strategy selective --emit torch");
        CHECK(sel.code == 2);
        CHECK(sel.err.find("selective") != std::string::npos);
    }
}
