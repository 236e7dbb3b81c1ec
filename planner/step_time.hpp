// The step-time model: a roofline per op against the GPU preset, with stated efficiency
// factors. Kept in one place so that a calibration (measured rates) can replace it.
//
//   time = max(flops / (peak_flops * eff_compute), bytes / (bandwidth * eff_memory)) + launch
#pragma once
#include <cstdint>

#include "planner/gpu.hpp"
#include "planner/graph.hpp"
#include "planner/options.hpp"

namespace remat {

struct StepTimeModel {
    double gemm_efficiency = 0.70;       // of dense peak (bf16 tensor cores, or fp32 without TF32)
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
