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
#include <utility>
#include <vector>

#include "planner/config/options.hpp"
#include "planner/graph/graph.hpp"
#include "planner/simulate/gpu.hpp"
#include "planner/simulate/network.hpp"

namespace remat {

// Seconds against work, measured: (work, seconds) points, work ascending. Between two points and
// from (0, launch) to the first, time is a straight line; past the last, time grows with work at
// the last point's average rate.
using TimeCurve = std::vector<std::pair<double, double>>;
double curve_seconds(const TimeCurve& curve, double work, double launch_s);

// A calibration's timing of one kind of kernel in one direction at one narrow dimension (a GEMM's
// smallest side, attention's head dimension; 0 where none applies). Work is what the planner
// counts for the op: FLOPs for gemm and attention, bytes read and written for the others.
struct KernelTiming {
    KernelClass kernel = KernelClass::elementwise;
    bool backward = false;
    std::uint64_t dim = 0;
    TimeCurve curve;
};

// Achieved compute rates of one storage type, measured on the device.
struct MeasuredCompute {
    double gemm_flops = 0;  // FLOP/s of large linear forwards
    double attention_flops =
        0;  // FLOP/s of attention forward, FLOPs counted as the planner does (causal half)
    // Per kernel class and direction (calibrations since the per-kernel benchmarks): an op whose
    // kernel has timings takes its time from them; others use the two rates above.
    std::vector<KernelTiming> kernels;
};

// Seconds of an op's kernel from the timings of its class and direction: the two measured
// dimensions around op.narrow_dim (log-linear between them), each curve at the op's work.
// Empty when the class and direction have no timings.
std::optional<double> kernel_seconds(const std::vector<KernelTiming>& timings, const Op& op,
                                     bool backward, double launch_s);

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
    // The optimizer step's seconds against the bytes it streams (local_params × bytes per
    // parameter), measured; empty: local_params × bytes / bandwidth.
    TimeCurve measured_optimizer;
    // Ranks that run at once on the device a calibration measured (a CPU's cores; 1 for a GPU):
    // W ranks on fewer share it, and every rank's compute takes W / that as long.
    double concurrent_ranks = 0;  // 0: one rank per device (a GPU)
    // Memory-bound kernels (all but GEMMs and attention) and the optimizer take this much longer
    // when concurrent_ranks ranks share the device at once (interpolated for fewer).
    double shared_memory_slowdown = 1;
    double shared_compute_slowdown = 1;  // the same for GEMMs and attention
    std::uint64_t ranks = 1;             // W of the question (set with concurrent_ranks)
    // The network the collectives run on (--network, --gpus-per-node, or a calibration's
    // in-process figures); unset: the GPU preset's usual one (GpuSpec::network).
    std::optional<NetworkSpec> network;
    // PyTorch's DDP bucket: gradients are all-reduced (or reduce-scattered, ZeRO-1/2) in buckets
    // of this many bytes as backward produces them (torch/csrc/distributed/c10d/reducer.hpp:
    // kDefaultBucketBytesCap 25 MiB, the first bucket 1 MiB).
    double bucket_bytes = 25.0 * 1024 * 1024;
    double first_bucket_bytes = 1024.0 * 1024;
};

// The network a question's collectives run on: the model's (--network, or a calibration's
// in-process one), else the GPU preset's usual servers (dgx-h100 for a preset that names none).
NetworkSpec network_of(const StepTimeModel& m, const GpuSpec& gpu);

// The model for a question of W ranks (what concurrent_ranks divides).
inline StepTimeModel for_ranks(StepTimeModel m, std::uint64_t world_size) {
    m.ranks = world_size;
    return m;
}

double op_time_s(const Op& op, bool backward, const GpuSpec& gpu, Precision precision,
                 const StepTimeModel& model = {});
// AdamW or SGD over the rank's local parameters: memory-bound streaming of the states.
// Bytes the step streams per parameter it updates.
double optimizer_bytes_per_param(Optimizer o);
// A collective over `ranks` (network.hpp's collective_s), on a device its ranks share (a CPU's
// cores: concurrent_ranks) as long as the ranks' time slices make it.
double collective_time_s(Collective c, double bytes, std::uint64_t ranks, const NetworkSpec& net,
                         const StepTimeModel& model);
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
