// The step-time model (planner/step_time): the worked example of docs/step-time.md by hand,
// and the property recommend relies on: a GEMM's attainable rate rises with its rows.
#include "planner/simulate/step_time.hpp"

#include <doctest/doctest.h>

#include "planner/simulate/gpu.hpp"
#include "tests/gemm_op.hpp"

using namespace remat;

using op_fixtures::gemm;

TEST_SUITE("step_time") {
    TEST_CASE("step_time::llama2-7b q_proj on an H100, by hand (docs/step-time.md)") {
        const GpuSpec h100 = load_gpu("h100-80gb");
        const Op q = gemm(4096, 4096, 4096);
        // 137.4 GFLOP / (989.4 TFLOP/s × 0.80) + 100.7 MB / (3.35 TB/s × 0.75) + 4 µs.
        CHECK(op_time_s(q, false, h100, Precision::bf16_mixed) * 1e6 ==
              doctest::Approx(217.704).epsilon(1e-5));
        CHECK(op_time_s(q, true, h100, Precision::bf16_mixed) * 1e6 ==
              doctest::Approx(435.409).epsilon(1e-5));
    }

    TEST_CASE(
        "step_time::a GEMM's achieved rate rises with its rows and stays under the compute roof") {
        const GpuSpec h100 = load_gpu("h100-80gb");
        const StepTimeModel m;
        double previous = 0;
        for (double rows : {256.0, 1024.0, 4096.0, 16384.0, 65536.0}) {
            const Op op = gemm(rows, 4096, 4096);
            const double rate = op.fwd_flops / op_time_s(op, false, h100, Precision::bf16_mixed, m);
            CAPTURE(rows);
            CHECK(rate > previous);
            CHECK(rate < h100.bf16_flops * m.gemm_efficiency);
            previous = rate;
        }
        // The smooth roofline: I / (I + R) of the compute roof, launches aside.
        const Op op = gemm(4096, 4096, 4096);
        const double I = op.fwd_flops / op.fwd_bytes;
        const double R =
            h100.bf16_flops * m.gemm_efficiency / (h100.memory_bandwidth * m.memory_efficiency);
        StepTimeModel no_launch = m;
        no_launch.launch_s = 0;
        CHECK(op.fwd_flops / op_time_s(op, false, h100, Precision::bf16_mixed, no_launch) ==
              doctest::Approx(h100.bf16_flops * m.gemm_efficiency * I / (I + R)).epsilon(1e-12));
    }
}
