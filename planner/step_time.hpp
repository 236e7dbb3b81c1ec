// The step-time model: a smooth roofline per op against the GPU preset, with stated efficiency
// factors. Kept in one place so that a calibration (measured rates) can replace it.
//
//   time = flops / (peak_flops * eff_compute) + bytes / (bandwidth * eff_memory) + launch
//
// The sum is the roofline whose attainable rate rises with arithmetic intensity I as
// peak * I / (I + ridge) instead of a hard corner: a GEMM's weight read and its activations
// cost time in proportion to how little work each byte feeds, so a larger micro-batch (more
// rows per weight byte, fewer launches per token) runs closer to peak. See docs/step-time.md.
#pragma once
#include <cstdint>

#include "planner/gpu.hpp"
#include "planner/graph.hpp"
#include "planner/options.hpp"

namespace remat {

struct StepTimeModel {
    double gemm_efficiency = 0.80;       // of dense peak at unbounded intensity (bf16 tensor cores, or fp32 without TF32)
    double attention_efficiency = 0.50;  // flash attention forward/backward
    double memory_efficiency = 0.75;     // of datasheet bandwidth, elementwise and reductions
    double launch_s = 4e-6;              // per kernel launch
};

double op_time_s(const Op& op, bool backward, const GpuSpec& gpu, Precision precision,
                 const StepTimeModel& model = {});
// AdamW or SGD over the rank's local parameters: memory-bound streaming of the states.
double optimizer_time_s(std::uint64_t local_params, Optimizer o, const GpuSpec& gpu,
                        const StepTimeModel& model = {});

}  // namespace remat
