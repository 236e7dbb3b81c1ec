// Calibrations (planner/calibration) and the step-time model that reads them: the file's round
// trip and its errors, step times by hand from hand-written rates, every planner path (evaluate,
// the optimal planner's DP, pareto, max-batch, recommend) on the question's model, and the
// preset model's figures unchanged without a file.
#include "planner/simulate/calibration.hpp"

#include <doctest/doctest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "planner/config/error.hpp"
#include "planner/search/pareto.hpp"
#include "planner/search/recommend.hpp"
#include "planner/search/search.hpp"
#include "tests/gemm_op.hpp"
#include "tools/cli_options.hpp"

using namespace remat;

namespace {

std::string temp_file(const std::string& name, const std::string& text) {
    const auto dir = std::filesystem::temp_directory_path() /
                     ("remat_calibration_test_" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    const auto p = dir / name;
    std::ofstream(p) << text;
    return p.string();
}

// The InputError's message, or "" when `f` does not throw one.
template <class F>
std::string input_error(F f) {
    try {
        f();
    } catch (const InputError& e) {
        return e.what();
    }
    return "";
}

// Round numbers, so that the arithmetic below can be done by hand.
constexpr double k_gemm = 400e12, k_attention = 200e12, k_bandwidth = 2e12, k_launch = 10e-6;
constexpr double k_gemm_fp32 = 40e12, k_attention_fp32 = 20e12;

const char* k_hand_written = R"({
  "format": "remat-calibration-1",
  "backend": "cuda",
  "device": "a hand-written device",
  "source": "round numbers for tests/calibration_test.cpp",
  "fp32": {"gemm_flops": 40e12, "attention_flops": 20e12},
  "bf16": {"gemm_flops": 400e12, "attention_flops": 200e12},
  "memory_bandwidth_bytes_per_s": 2e12,
  "launch_s": 10e-6
})";

Calibration sample_calibration() {
    Calibration c;
    c.backend = "cpu";
    c.device = "AMD EPYC (one BLAS thread)";
    c.source = "remat calibrate --device cpu";
    c.fp32 = MeasuredCompute{8.4e10, 2.6e10, {}};
    c.bf16 = MeasuredCompute{9.3e10, 2.7e10, {}};
    c.memory_bandwidth = 2.991e10;
    c.launch_s = 3.2e-9;
    c.measurements = {
        {"launch", "fp32", "1 element", 0, 12, 3.2e-9, 8388608, "", 0, 0},
        {"gemm", "bf16", "1024x1024x1024", 2147483648.0, 6291456, 0.0229, 1, "", 0, 0},
        {"norm", "fp32", "256x256", 0, 0, 1e-4, 64, "forward", 0, 1e6},
        {"norm", "fp32", "1024x256", 0, 0, 3e-4, 16, "forward", 0, 4e6, true}};
    c.host_probe_s = 1.62e-3;
    return c;
}

void check_equal(const Calibration& a, const Calibration& b) {
    REQUIRE(a.measurements.size() == b.measurements.size());
    for (std::size_t k = 0; k < a.measurements.size(); ++k) {
        CHECK(a.measurements[k].direction == b.measurements[k].direction);
        CHECK(a.measurements[k].dim == b.measurements[k].dim);
        CHECK(a.measurements[k].work == b.measurements[k].work);
        CHECK(a.measurements[k].contended == b.measurements[k].contended);
    }
    CHECK(a.host_probe_s == b.host_probe_s);
    CHECK(a.backend == b.backend);
    CHECK(a.device == b.device);
    CHECK(a.source == b.source);
    REQUIRE(a.fp32.has_value() == b.fp32.has_value());
    REQUIRE(a.bf16.has_value() == b.bf16.has_value());
    if (a.fp32)
        CHECK((a.fp32->gemm_flops == b.fp32->gemm_flops &&
               a.fp32->attention_flops == b.fp32->attention_flops));
    if (a.bf16)
        CHECK((a.bf16->gemm_flops == b.bf16->gemm_flops &&
               a.bf16->attention_flops == b.bf16->attention_flops));
    CHECK(a.memory_bandwidth == b.memory_bandwidth);
    CHECK(a.launch_s == b.launch_s);
    REQUIRE(a.measurements.size() == b.measurements.size());
    for (std::size_t k = 0; k < a.measurements.size(); ++k) {
        const auto &x = a.measurements[k], &y = b.measurements[k];
        CHECK((x.benchmark == y.benchmark && x.storage == y.storage && x.shape == y.shape));
        CHECK((x.flops == y.flops && x.bytes == y.bytes && x.seconds == y.seconds &&
               x.calls == y.calls));
    }
}

Question question(const std::string& model, const std::string& calibration,
                  const std::string& precision = "bf16-mixed") {
    cli::CommonArgs a;
    a.model = model;
    a.precision = precision;
    a.calibration = calibration;
    return cli::make_question(a);
}

using op_fixtures::gemm;

}  // namespace

TEST_SUITE("calibration") {
    TEST_CASE("calibration::the JSON file round-trips") {
        SUBCASE("both storage rows and the measurements") {
            const Calibration c = sample_calibration();
            check_equal(calibration_from_json(calibration_json(c), "memory"), c);
            const std::string path = temp_file("round_trip.json", "");
            save_calibration(c, path);
            check_equal(load_calibration(path), c);
        }
        SUBCASE("one row, no measurements") {
            Calibration c = sample_calibration();
            c.fp32.reset();
            c.measurements.clear();
            const std::string path = temp_file("one_row.json", "");
            save_calibration(c, path);
            check_equal(load_calibration(path), c);
        }
        SUBCASE("a hand-written file without source or measurements") {
            const Calibration c = load_calibration(temp_file("hand.json", k_hand_written));
            CHECK(c.bf16->gemm_flops == k_gemm);
            CHECK(c.fp32->attention_flops == k_attention_fp32);
            CHECK(c.launch_s == k_launch);
            CHECK(c.measurements.empty());
        }
    }

    TEST_CASE("calibration::a bad file is one InputError that names the file and the fix") {
        const std::string good = k_hand_written;
        auto with = [&](const std::string& from, const std::string& to) {
            std::string t = good;
            t.replace(t.find(from), from.size(), to);
            return t;
        };
        const std::vector<std::pair<std::string, std::string>> cases = {
            {"{\"format\": ", "malformed JSON"},
            {"{\"gemm_flops\": 1}", "not a remat calibration file"},
            {with("\"backend\": \"cuda\",", ""), "\"backend\" is missing"},
            {with("\"gemm_flops\": 400e12", "\"gemm_flops\": -4"),
             "\"bf16.gemm_flops\" must be a positive number of FLOP/s, not -4"},
            {with("\"gemm_flops\": 400e12", "\"gemm_flops\": \"fast\""),
             "\"bf16.gemm_flops\" must be a positive number"},
            {with("\"gemm_flops\": 400e12", "\"gemm_flop\": 400e12"),
             "\"bf16.gemm_flops\" is missing"},
            {with("\"launch_s\": 10e-6", "\"launch_s\": 10e-6, \"lanch_s\": 1"),
             "unknown key \"lanch_s\""},
            {with("\"memory_bandwidth_bytes_per_s\": 2e12", "\"memory_bandwidth_bytes_per_s\": 0"),
             "\"memory_bandwidth_bytes_per_s\" must be a positive number of bytes/s"},
            {with("\"launch_s\": 10e-6", "\"launch_s\": 10e-6, \"measurements\": {}"),
             "\"measurements\" must be an array"},
            // Finite but absurd: each made every step time infinite (fuzz_calibration regressions).
            {with("\"gemm_flops\": 400e12", "\"gemm_flops\": 1e-300"),
             "\"bf16.gemm_flops\" must be at least 1 FLOP/s, not 1e-300"},
            {with("\"memory_bandwidth_bytes_per_s\": 2e12",
                  "\"memory_bandwidth_bytes_per_s\": 0.5"),
             "\"memory_bandwidth_bytes_per_s\" must be at least 1 bytes/s, not 0.5"},
            {with("\"launch_s\": 10e-6", "\"launch_s\": 1e307"),
             "\"launch_s\" must be at most 1 second, not 1e+307"},
            {with("\"launch_s\": 10e-6", "\"launch_s\": 10e-6, \"host_probe_s\": 0"),
             "\"host_probe_s\" must be a positive number of seconds"},
            {with("\"launch_s\": 10e-6",
                  "\"launch_s\": 10e-6, \"measurements\": [{\"benchmark\": \"launch\", "
                  "\"storage\": \"fp32\", \"shape\": \"1\", \"flops\": 0, \"bytes\": 12, "
                  "\"seconds\": 1e-9, \"calls\": 1, \"contended\": \"yes\"}]"),
             "\"measurements[0].contended\" must be true or false, not \"yes\""},
            // An unknown key is named with JSON's escapes: one line.
            {with("\"launch_s\": 10e-6", "\"launch_s\": 10e-6, \"a\\nb\": 1"),
             "unknown key \"a\\nb\""},
            {with(R"("fp32": {"gemm_flops": 40e12, "attention_flops": 20e12},
  "bf16": {"gemm_flops": 400e12, "attention_flops": 200e12},)",
                  ""),
             "no compute rates"},
        };
        SUBCASE("malformed, incomplete, misspelt or out of range") {
            for (std::size_t k = 0; k < cases.size(); ++k) {
                const std::string path =
                    temp_file("bad" + std::to_string(k) + ".json", cases[k].first);
                const std::string message = input_error([&] { load_calibration(path); });
                CAPTURE(cases[k].first);
                CHECK_MESSAGE(message.find(path) != std::string::npos, message);
                CHECK_MESSAGE(message.find(cases[k].second) != std::string::npos, message);
                CHECK_MESSAGE(message.find("remat calibrate") != std::string::npos, message);
                CHECK_MESSAGE(message.find_first_of("\n\r") == std::string::npos, message);
            }
        }
        SUBCASE("a file that is not there") {
            const std::string message =
                input_error([] { load_calibration("/nonexistent/cal.json"); });
            CHECK(message.find("cannot read calibration file '/nonexistent/cal.json'") !=
                  std::string::npos);
            CHECK(message.find("remat calibrate --device cpu|cuda -o /nonexistent/cal.json") !=
                  std::string::npos);
        }
        SUBCASE("a precision whose storage row the file lacks") {
            const std::string path = temp_file(
                "fp32_only.json",
                with(R"("bf16": {"gemm_flops": 400e12, "attention_flops": 200e12},)", ""));
            const std::string message = input_error([&] { question("gpt2", path, "fp16-mixed"); });
            CHECK_MESSAGE(
                message ==
                    "--calibration '" + path +
                        "' has no bf16 rates, which --precision fp16-mixed needs; "
                        "calibrate with --precision bf16-mixed, or plan with --precision fp32",
                message);
            CHECK(input_error([&] { question("gpt2", path, "fp32"); }).empty());
        }
    }

    TEST_CASE("calibration::measured rates replace peak × efficiency: llama2-7b q_proj by hand") {
        const GpuSpec h100 = load_gpu("h100-80gb");
        const StepTimeModel m =
            calibrated_model(load_calibration(temp_file("q_proj.json", k_hand_written)));
        const Op q = gemm(4096, 4096, 4096);  // B = 1, S = 4096, H = 4096
        // Forward: 2·4096³ = 137.439 GFLOP / 400 TFLOP/s = 343.597 µs; 3 × 4096² × 2 bytes =
        // 100.663 MB / 2 TB/s = 50.332 µs; one launch, 10 µs: 403.929 µs.
        CHECK(op_time_s(q, false, h100, Precision::bf16_mixed, m) * 1e6 ==
              doctest::Approx(403.929).epsilon(1e-6));
        // Backward: 274.878 GFLOP / 400 TFLOP/s = 687.195 µs; 201.327 MB / 2 TB/s = 100.663 µs;
        // two launches, 20 µs: 807.858 µs.
        CHECK(op_time_s(q, true, h100, Precision::bf16_mixed, m) * 1e6 ==
              doctest::Approx(807.858).epsilon(1e-6));
        // fp32 reads the fp32 row: 137.439 GFLOP / 40 TFLOP/s = 3435.974 µs (+ the same bytes'
        // 50.332 µs, as this op's bytes are bf16-sized, + 10 µs).
        CHECK(op_time_s(q, false, h100, Precision::fp32, m) * 1e6 ==
              doctest::Approx(3496.306).epsilon(1e-6));
        // Flash attention at its own rate: 4·A·D·S(S+1)/2 with A = 32, D = 128, S = 4096 is
        // 137.473 GFLOP / 200 TFLOP/s = 687.363 µs, no bytes, one launch: 697.363 µs.
        Op attention;
        attention.op_class = OpClass::attention;
        attention.fwd_flops = 4.0 * 32 * 128 * 4096.0 * 4097 / 2;
        CHECK(op_time_s(attention, false, h100, Precision::bf16_mixed, m) * 1e6 ==
              doctest::Approx(697.3625).epsilon(1e-6));
        // A memory-class op's few FLOPs go at the GEMM rate: 8 per element of a 4096² layer norm is
        // 134.218 MFLOP / 400 TFLOP/s = 0.336 µs, + 67.109 MB / 2 TB/s = 33.554 µs, + 10 µs.
        Op norm;
        norm.op_class = OpClass::memory;
        norm.fwd_flops = 8.0 * 4096 * 4096;
        norm.fwd_bytes = 2.0 * 2 * 4096 * 4096;
        CHECK(op_time_s(norm, false, h100, Precision::bf16_mixed, m) * 1e6 ==
              doctest::Approx(43.890).epsilon(1e-5));
        // The optimizer streams 28 bytes per parameter at the measured bandwidth: 7e9 × 28 / 2
        // TB/s.
        CHECK(optimizer_time_s(7'000'000'000, Optimizer::adamw, h100, m) ==
              doctest::Approx(0.098).epsilon(1e-12));
    }

    TEST_CASE("calibration::a plan with a hand-written file: gpt2's step by hand") {
        // gpt2, B = 1, S = 1024, bf16-mixed, DDP on one GPU, strategy none: every op runs forward
        // once and backward once, then AdamW. With one rate R for GEMMs and attention (the file's
        // attention rate set to its GEMM rate; memory-class FLOPs go at the GEMM rate anyway):
        //   step = Σ (fwd_flops + bwd_flops) / R + (Σ (fwd_bytes + bwd_bytes) + 28·P) / bw +
        //   3·n_ops·launch
        const std::string text =
            R"({"format": "remat-calibration-1", "backend": "cuda", "device": "by hand",
      "bf16": {"gemm_flops": 400e12, "attention_flops": 400e12},
      "memory_bandwidth_bytes_per_s": 2e12, "launch_s": 10e-6})";
        const Question q = question("gpt2", temp_file("gpt2.json", text));
        const Evaluation e = evaluate(q, parse_strategy("none"));
        double flops = 0, bytes = 0, n_ops = 0;
        for (const Stage& s : e.chain.stages) {
            const StageGraph& g = e.chain.graphs[s.graph];
            for (OpVertex v : g.order()) {
                flops += g.op(v).fwd_flops + g.op(v).bwd_flops;
                bytes += g.op(v).fwd_bytes + g.op(v).bwd_bytes;
                ++n_ops;
            }
        }
        const double P = static_cast<double>(parameter_count(q.model));
        const double by_hand =
            flops / k_gemm + (bytes + 28 * P) / k_bandwidth + 3 * n_ops * k_launch;
        CAPTURE(flops);
        CAPTURE(bytes);
        CAPTURE(n_ops);
        CHECK(e.result.step_time_s == doctest::Approx(by_hand).epsilon(1e-12));
        CHECK(e.result.tokens_per_s == doctest::Approx(1024 / by_hand).epsilon(1e-12));
        // The preset's model gives another figure (0.01155 s, docs/step-time.md).
        CHECK(e.result.step_time_s !=
              doctest::Approx(
                  evaluate(question("gpt2", ""), parse_strategy("none")).result.step_time_s));
    }

    TEST_CASE("calibration::every planner path times with the question's model") {
        const std::string path = temp_file("paths.json", k_hand_written);
        Question q = question("gpt2", path);
        q.context.capacity_bytes = 8ull << 30;  // tight enough for the strategies to differ
        SUBCASE("the optimal planner's DP agrees with the replay") {
            const Evaluation e = evaluate(q, parse_strategy("optimal"));
            REQUIRE(e.plan.optimal.has_value());
            CHECK(e.plan.optimal->step_time_s ==
                  doctest::Approx(e.result.step_time_s).epsilon(1e-12));
        }
        SUBCASE("pareto's points are replays under the calibration") {
            const ParetoFrontier f = pareto_frontier(q);
            REQUIRE(!f.points.empty());
            // The last point keeps everything: none's step.
            CHECK(f.points.back().step_time_s ==
                  doctest::Approx(evaluate(q, parse_strategy("none")).result.step_time_s)
                      .epsilon(1e-12));
            // A heuristic's point is its replay, as `remat plan` gives it.
            int heuristics = 0;
            for (const ParetoPoint& p : f.points) {
                if (p.source == "optimal") continue;
                CAPTURE(p.source);
                CHECK(p.step_time_s ==
                      doctest::Approx(evaluate(q, parse_strategy(p.source)).result.step_time_s)
                          .epsilon(1e-12));
                ++heuristics;
            }
            CHECK(heuristics > 0);
        }
        SUBCASE("max-batch") {
            const MaxBatch m = max_micro_batch(q, parse_strategy("full"));
            REQUIRE(m.max_micro_batch > 0);
            Question at = q;
            at.options.micro_batch = m.max_micro_batch;
            CHECK(m.tokens_per_s ==
                  doctest::Approx(evaluate(at, parse_strategy("full")).result.tokens_per_s)
                      .epsilon(1e-12));
        }
        SUBCASE("recommend") {
            Question rq = q;
            rq.options.seq = 256;
            const Recommendation r = recommend(rq, {std::uint64_t{64}, {}});
            REQUIRE(!r.ranked.empty());
            const Candidate& best = r.ranked.front();
            Question at = rq;
            at.options.micro_batch = best.micro_batch;
            at.options.grad_accumulation = best.grad_accumulation;
            at.context.offload_checkpoints = best.offload;
            at.context.budget_bytes = r.budget_bytes;
            CHECK(best.step_time_s ==
                  doctest::Approx(evaluate(at, best.strategy).result.step_time_s).epsilon(1e-12));
        }
    }

    TEST_CASE(
        "calibration::without a file every figure is the preset model's (docs/step-time.md)") {
        const Question q = question("llama2-7b", "");
        const StepTimeModel m = q.context.time_model, preset;
        CHECK((!m.fp32_measured && !m.bf16_measured && !m.measured_bandwidth));
        CHECK((m.gemm_efficiency == preset.gemm_efficiency &&
               m.attention_efficiency == preset.attention_efficiency &&
               m.memory_efficiency == preset.memory_efficiency && m.launch_s == preset.launch_s));
        // The tables of docs/step-time.md (communication on dgx-h100 included).
        auto tokens = [](const std::string& model, const std::string& precision, std::uint64_t B,
                         const std::string& strategy) {
            cli::CommonArgs a;
            a.model = model;
            a.precision = precision;
            a.micro_batch = static_cast<std::int64_t>(B);
            if (model == "llama2-7b") {
                a.seq = 4096;
                a.sharding = "fsdp";
                a.world_size = 8;
            }
            return evaluate(cli::make_question(a), parse_strategy(strategy)).result.tokens_per_s;
        };
        CHECK(tokens("llama2-7b", "bf16-mixed", 1, "none") ==
              doctest::Approx(9228.086).epsilon(1e-6));
        CHECK(tokens("llama2-7b", "bf16-mixed", 1, "selective") ==
              doctest::Approx(9010.139).epsilon(1e-6));
        CHECK(tokens("llama2-7b", "bf16-mixed", 1, "full") ==
              doctest::Approx(7029.243).epsilon(1e-6));
        CHECK(tokens("llama2-7b", "fp32", 1, "none") == doctest::Approx(1091.621).epsilon(1e-6));
        CHECK(tokens("gpt2", "bf16-mixed", 1, "none") == doctest::Approx(88652.574).epsilon(1e-6));
        CHECK(tokens("gpt2", "bf16-mixed", 32, "none") ==
              doctest::Approx(152697.521).epsilon(1e-6));
    }
}

TEST_CASE(
    "calibration::per-kernel timings: straight lines between points, log-linear between dims") {
    // A norm of 2e6 bytes between the points (1e6 B, 100 us) and (4e6 B, 300 us): 166.7 us.
    const StepTimeModel m = calibrated_model(sample_calibration());
    Op norm;
    norm.kernel = KernelClass::norm;
    norm.op_class = OpClass::memory;
    norm.fwd_bytes = 2e6;
    CHECK(op_time_s(norm, false, load_gpu("h100-80gb"), Precision::fp32, m) ==
          doctest::Approx(1e-4 + 2e-4 / 3).epsilon(1e-12));
    // Below the first point: from (0, launch) to it.
    norm.fwd_bytes = 0.5e6;
    CHECK(op_time_s(norm, false, load_gpu("h100-80gb"), Precision::fp32, m) ==
          doctest::Approx(3.2e-9 + (1e-4 - 3.2e-9) / 2).epsilon(1e-12));
    // Past the last point: its average rate (300 us per 4e6 B).
    norm.fwd_bytes = 8e6;
    CHECK(op_time_s(norm, false, load_gpu("h100-80gb"), Precision::fp32, m) ==
          doctest::Approx(6e-4).epsilon(1e-12));
    // GEMMs measured at narrow dimensions 64 (1 ms per GFLOP) and 256 (0.5 ms): one of 128 is
    // halfway in log(dim), 0.75 ms.
    std::vector<KernelTiming> t = {{KernelClass::gemm, false, 64, {{1e9, 1e-3}}},
                                   {KernelClass::gemm, false, 256, {{1e9, 0.5e-3}}}};
    Op gemm;
    gemm.kernel = KernelClass::gemm;
    gemm.fwd_flops = 1e9;
    gemm.narrow_dim = 128;
    CHECK(*kernel_seconds(t, gemm, false, 0) == doctest::Approx(0.75e-3).epsilon(1e-12));
    gemm.narrow_dim = 16;  // below the smallest dim: the smallest's curve
    CHECK(*kernel_seconds(t, gemm, false, 0) == doctest::Approx(1e-3).epsilon(1e-12));
    gemm.narrow_dim = 0;  // unknown: the largest measured dim
    CHECK(*kernel_seconds(t, gemm, false, 0) == doctest::Approx(0.5e-3).epsilon(1e-12));
    CHECK(!kernel_seconds(t, gemm, true, 0));  // no backward timings
    // The kernel classes of the ops' names.
    CHECK(classify_kernel(OpClass::memory, "ln_1") == KernelClass::norm);
    CHECK(classify_kernel(OpClass::memory, "model.layers.0.input_layernorm") == KernelClass::norm);
    CHECK(classify_kernel(OpClass::memory, "mlp.gelu") == KernelClass::gelu);
    CHECK(classify_kernel(OpClass::memory, "mlp.swiglu") == KernelClass::activation);
    CHECK(classify_kernel(OpClass::memory, "attn.resid_dropout") == KernelClass::dropout);
    CHECK(classify_kernel(OpClass::memory, "attn.rope_q") == KernelClass::rotary);
    CHECK(classify_kernel(OpClass::memory, "loss.cross_entropy") == KernelClass::softmax);
    CHECK(classify_kernel(OpClass::memory, "embedding") == KernelClass::embedding);
    CHECK(classify_kernel(OpClass::memory, "residual_1") == KernelClass::elementwise);
}

TEST_CASE("calibration::a kernel timing with a bad direction or kernel name is refused") {
    nlohmann::json j = calibration_json(sample_calibration());
    j["measurements"][2]["direction"] = "sideways";
    CHECK(input_error([&] { calibration_from_json(j, "c.json"); }).find("\"forward\" or") !=
          std::string::npos);
    j = calibration_json(sample_calibration());
    j["measurements"][2]["benchmark"] = "normz";
    CHECK(input_error([&] { calibration_from_json(j, "c.json"); }).find("not a kernel class") !=
          std::string::npos);
}

TEST_CASE("calibration::ranks sharing a CPU: time slicing past its cores, each other's slowdown") {
    StepTimeModel m = calibrated_model(sample_calibration());
    m.concurrent_ranks = 2;
    m.shared_memory_slowdown = 1.5;
    m.shared_compute_slowdown = 1.1;
    Op norm;
    norm.kernel = KernelClass::norm;
    norm.fwd_bytes = 1e6;  // 100 us alone (sample_calibration's first point)
    const GpuSpec gpu = load_gpu("h100-80gb");
    auto at = [&](std::uint64_t W) {
        return op_time_s(norm, false, gpu, Precision::fp32, for_ranks(m, W));
    };
    CHECK(at(1) == doctest::Approx(1e-4).epsilon(1e-12));
    CHECK(at(2) == doctest::Approx(1.5e-4).epsilon(1e-12));      // two at once: the slowdown
    CHECK(at(4) == doctest::Approx(2 * 1.5e-4).epsilon(1e-12));  // and two to a core
    NetworkSpec n;
    n.in_process = true;
    n.intra_bus_bandwidth = 1e9;
    n.base_latency_s = 1e-5;
    // In-process collectives were measured with the ranks at once: only time slicing adds.
    CHECK(collective_time_s(Collective::all_gather, 1e6, 2, n, for_ranks(m, 2)) ==
          doctest::Approx(1e-5 + 1e-3).epsilon(1e-12));
    CHECK(collective_time_s(Collective::all_gather, 1e6, 4, n, for_ranks(m, 4)) ==
          doctest::Approx(2 * (1e-5 + 1e-3)).epsilon(1e-12));
    // One rank still gathers (the runtime converts its shards): in-process costs at W = 1 too.
    CHECK(collective_s(Collective::all_gather, 1e6, 1, n) == doctest::Approx(1e-5 + 1e-3));
}
