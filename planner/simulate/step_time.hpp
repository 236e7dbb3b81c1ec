// The step-time model: a smooth roofline per op against the GPU preset, with stated efficiency
// factors. Kept in one place so that a calibration (measured rates) can replace it.
//
//   time = flops / (peak_flops * eff_compute) + bytes / (bandwidth * eff_memory) + launch
//
// The sum is the roofline whose attainable rate rises with arithmetic intensity I as
// peak * I / (I + ridge) instead of a hard corner: a GEMM's weight read and its activations
// cost time in proportion to how little work each byte feeds, so a larger micro-batch (more
// rows per weight byte, fewer launches per token) runs closer to peak. See docs/step-time.md.
//
// A calibration (planner/simulate/calibration.hpp, `remat calibrate`) sets the measured fields:
// each measured rate replaces the preset's peak × efficiency it stands for; the form stays the
// same.
#pragma once
#include <algorithm>
#include <cstdint>
#include <optional>

#include "planner/config/options.hpp"
#include "planner/graph/graph.hpp"
#include "planner/simulate/gpu.hpp"

namespace remat {

// Achieved compute rates of one storage type, measured on the device.
struct MeasuredCompute {
    double gemm_flops = 0;  // FLOP/s of large linear forwards
    double attention_flops =
        0;  // FLOP/s of attention forward, FLOPs counted as the planner does (causal half)
};

struct StepTimeModel {
    double gemm_efficiency =
        0.80;  // of dense peak at unbounded intensity (bf16 tensor cores, or fp32 without TF32)
    double attention_efficiency = 0.50;  // flash attention forward/backward
    double memory_efficiency = 0.75;     // of datasheet bandwidth, elementwise and reductions
    double launch_s = 4e-6;              // per kernel launch (a calibration sets the measured one)
    // Bytes per second one rank's CPU optimizer step streams when the optimizer is offloaded: an
    // assumption, not a measurement (a server's few hundred GB/s of DRAM bandwidth shared by its
    // 8 ranks, at about half for the step's mixed reads and writes).
    double host_step_bandwidth = 20e9;

    // From a calibration; unset: the preset's peaks × the efficiencies above.
    std::optional<MeasuredCompute>
        fp32_measured;  // replaces fp32_flops × efficiency under --precision fp32
    std::optional<MeasuredCompute>
        bf16_measured;  // replaces bf16_flops × efficiency under every other mode
    std::optional<double>
        measured_bandwidth;  // bytes/s; replaces memory_bandwidth × memory_efficiency
};

double op_time_s(const Op& op, bool backward, const GpuSpec& gpu, Precision precision,
                 const StepTimeModel& model = {});
// AdamW or SGD over the rank's local parameters: memory-bound streaming of the states.
// Bytes the step streams per parameter it updates.
double optimizer_bytes_per_param(Optimizer o);
double optimizer_time_s(std::uint64_t local_params, Optimizer o, const GpuSpec& gpu,
                        const StepTimeModel& model = {});
// Offload: a checkpoint's copy to host runs beside the forward that offloads it, the copy back
// beside the action before the forward that reads it; only a copy's excess over the compute it
// overlaps adds time. host_bandwidth: bytes/s per direction (GpuSpec::host_link_bandwidth).
inline double copy_excess_s(std::uint64_t bytes, double host_bandwidth, double overlap_s) {
    const double copy_s = static_cast<double>(bytes) / host_bandwidth;
    return std::max(0.0, copy_s - overlap_s);
}

}  // namespace remat
