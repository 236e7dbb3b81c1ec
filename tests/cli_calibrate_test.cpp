// The real `remat` binary: `remat calibrate` writes a file the planner reads, and
// `--calibration FILE` reaches plan, recommend (and its args) and pareto. The measured figures
// are wall-clock rates: only their being there and positive is asserted, never their size.
#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "planner/search/search.hpp"
#include "planner/simulate/calibration.hpp"
#include "runtime/devices.hpp"
#include "tests/cli_process.hpp"
#include "tools/cli_options.hpp"

using namespace remat;
using namespace cli_process;

namespace {

std::string temp_path(const std::string& name) { return (cli_process::temp_dir() / name).string(); }

// Round numbers of no real device.
const char* k_hand_written = R"({
  "format": "remat-calibration-1",
  "backend": "cuda",
  "device": "a hand-written device",
  "bf16": {"gemm_flops": 400e12, "attention_flops": 200e12},
  "memory_bandwidth_bytes_per_s": 2e12,
  "launch_s": 10e-6
})";

std::string hand_written_file() {
    const std::string path = temp_path("hand.json");
    std::ofstream(path) << k_hand_written;
    return path;
}

// What the planner predicts in-process for `remat plan --model gpt2 [--calibration path]`.
double gpt2_step_time_s(const std::string& calibration,
                        const std::string& precision = "bf16-mixed") {
    cli::CommonArgs a;
    a.model = "gpt2";
    a.precision = precision;
    a.calibration = calibration;
    return evaluate(cli::make_question(a), parse_strategy("none")).result.step_time_s;
}

double plan_step_time_s(const std::string& args) {
    const Run r = run_remat("plan " + args + " --json");
    REQUIRE(r.code == 0);
    return nlohmann::json::parse(r.out).at("step_time_s").get<double>();
}

void check_positive_rates(const Calibration& c) {
    CHECK(c.memory_bandwidth > 0);
    CHECK(c.launch_s > 0);
    for (const auto* row : {&c.fp32, &c.bf16})
        if (*row) CHECK(((*row)->gemm_flops > 0 && (*row)->attention_flops > 0));
    REQUIRE(!c.measurements.empty());
    for (const CalibrationSample& s : c.measurements) {
        CAPTURE(s.benchmark);
        CAPTURE(s.shape);
        CHECK(s.seconds > 0);
        CHECK(s.calls > 0);
    }
}

}  // namespace

TEST_SUITE("cli_calibrate") {
    TEST_CASE("cli_calibrate::calibrate --device cpu writes a file that plan reads") {
        const std::string path = temp_path("cpu.json");
        const Run r = run_remat("calibrate --device cpu -o " + path);
        REQUIRE(r.code == 0);
        CHECK(r.err.empty());
        CHECK(r.out.find("benchmark") != std::string::npos);
        CHECK(r.out.find("written to " + path) != std::string::npos);
        const Calibration c = load_calibration(path);
        CHECK(c.backend == "cpu");
        CHECK(c.device.find("one BLAS thread") != std::string::npos);
        CHECK(c.source.find("one OpenBLAS thread") != std::string::npos);
        // The host probe's yardstick is kept, and the table says how many benchmarks it judged
        // slowed (runtime/host_speed.hpp).
        CHECK(c.host_probe_s > 0);
        CHECK(r.out.find("probe ") != std::string::npos);
        CHECK(r.out.find(" benchmarks timed only while the host slowed the cores") !=
              std::string::npos);
        REQUIRE(c.fp32.has_value());
        REQUIRE(c.bf16.has_value());
        check_positive_rates(c);
        for (const char* kind : {"launch", "memory", "gemm", "attention"})
            CHECK(std::any_of(c.measurements.begin(), c.measurements.end(),
                              [&](const CalibrationSample& s) { return s.benchmark == kind; }));
        // The plan reads it: the replay under the file's rates, both precisions.
        for (const std::string precision : {"bf16-mixed", "fp32"}) {
            CAPTURE(precision);
            CHECK(plan_step_time_s("--model gpt2 --precision " + precision + " --calibration " +
                                   path) ==
                  doctest::Approx(gpt2_step_time_s(path, precision)).epsilon(1e-12));
        }
    }

    TEST_CASE(
        "cli_calibrate::calibrate --json prints the file's document and one precision gives one "
        "row") {
        const std::string path = temp_path("bf16.json");
        const Run r = run_remat("calibrate --device cpu --precision bf16-mixed --json -o " + path);
        REQUIRE(r.code == 0);
        const auto printed = nlohmann::json::parse(r.out);
        CHECK(printed == nlohmann::json::parse(slurp(path)));
        CHECK(printed.contains("bf16"));
        CHECK(!printed.contains("fp32"));
        check_positive_rates(calibration_from_json(printed, "stdout"));
        check_rejected(
            "plan --model gpt2 --precision fp32 --calibration " + path,
            "--calibration '" + path + "' has no fp32 rates, which --precision fp32 needs");
    }

    TEST_CASE("cli_calibrate::invalid input is one line on stderr and exit code 2") {
        const std::string out = temp_path("never.json");
        if (rt::visible_gpus().empty()) {
            // As `remat run --device cuda` says it: "--device cuda: <why>; use --device cpu".
            const Run r = run_remat("calibrate --device cuda -o " + out);
            CHECK(r.code == 2);
            CHECK(r.out.empty());
            CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
            CHECK_MESSAGE(r.err.rfind("remat: --device cuda: ", 0) == 0, r.err);
            CHECK_MESSAGE(r.err.find("; use --device cpu\n") != std::string::npos, r.err);
            CHECK(!std::filesystem::exists(out));
        } else {
            MESSAGE("a GPU is visible: calibrate --device cuda is not an error here");
        }
        check_rejected("calibrate --device tpu -o " + out, "--device 'tpu': use cpu or cuda");
        check_rejected("calibrate --precision fp16-mixed -o " + out, "fp32 and bf16-mixed");
        check_rejected("calibrate --precision fp64 -o " + out, "unknown precision 'fp64'");
        check_rejected("calibrate --device cpu", "--output is required");
        check_rejected("calibrate -o /nonexistent/dir/cal.json",
                       "directory '/nonexistent/dir' does not exist");
        CHECK(!std::filesystem::exists(out));
        check_rejected("plan --model gpt2 --calibration /nonexistent/cal.json",
                       "cannot read calibration file '/nonexistent/cal.json'");
        const std::string malformed = temp_path("malformed.json");
        std::ofstream(malformed) << "{\"format\": ";
        check_rejected("plan --model gpt2 --calibration " + malformed,
                       malformed + ":1:12: malformed JSON");
    }

    TEST_CASE(
        "cli_calibrate::--calibration reaches plan, pareto and recommend, and recommend's args "
        "carry it") {
        const std::string path = hand_written_file();
        const double calibrated = plan_step_time_s("--model gpt2 --calibration " + path);
        CHECK(calibrated == doctest::Approx(gpt2_step_time_s(path)).epsilon(1e-12));
        CHECK(plan_step_time_s("--model gpt2") ==
              doctest::Approx(gpt2_step_time_s("")).epsilon(1e-12));

        const Run p = run_remat("pareto --model gpt2 --calibration " + path + " --json");
        REQUIRE(p.code == 0);
        // The last point keeps everything: none's step under the calibration.
        CHECK(nlohmann::json::parse(p.out).at("points").back().at("step_time_s").get<double>() ==
              doctest::Approx(calibrated).epsilon(1e-12));

        const Run r = run_remat(
            "recommend --model gpt2 --seq 256 --global-batch 16 --gpu-memory 8GiB --calibration " +
            path + " --json");
        REQUIRE(r.code == 0);
        const auto best = nlohmann::json::parse(r.out).at("best");
        const auto args = best.at("args").get<std::vector<std::string>>();
        const auto at = std::find(args.begin(), args.end(), "--calibration");
        REQUIRE(at != args.end());
        REQUIRE(at + 1 != args.end());
        CHECK(*(at + 1) == path);
        std::string line;
        for (const auto& a : args) line += " " + a;
        CHECK(plan_step_time_s(line) ==
              doctest::Approx(best.at("step_time_s").get<double>()).epsilon(1e-12));
    }
}
