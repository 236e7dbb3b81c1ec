// A rows × K by K × N GEMM in bf16 as the op builders describe it: the op the step-time tests
// (step_time_test.cpp, calibration_test.cpp) time by hand.
#pragma once
#include "planner/graph/graph.hpp"

namespace op_fixtures {

inline remat::Op gemm(double rows, double k, double n) {
    remat::Op op;
    op.op_class = remat::OpClass::gemm;
    op.fwd_flops = 2 * rows * k * n;
    op.bwd_flops = 2 * op.fwd_flops;
    const double activations = 2 * (rows * k + rows * n), weight = 2 * k * n;
    op.fwd_bytes = activations + weight;
    op.bwd_bytes = 2 * activations + 2 * weight;
    return op;
}

}  // namespace op_fixtures
