// A calibration: the rates one device achieved, measured by `remat calibrate` (runtime/calibrate)
// and kept in a JSON file, which `--calibration FILE` hands to the step-time model in place of
// the GPU preset's peaks × efficiencies. Capacity, the reserve and the host link still come from
// the preset. This file reads, writes and checks the file; it measures nothing.
//
//   Calibration c = load_calibration("h200.json");        // InputError names the file and the fix
//   check_covers(c, Precision::bf16_mixed, "h200.json");  // rates for this precision?
//   PlanContext ctx;
//   ctx.time_model = calibrated_model(c);
//   save_calibration(c, "copy.json");
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "planner/config/options.hpp"
#include "planner/simulate/step_time.hpp"

namespace remat {

// One timed benchmark, for the record: the model reads only the rates.
struct CalibrationSample {
    std::string benchmark;    // "gemm", "attention", "memory", "launch"
    std::string storage;      // "fp32", "bf16"
    std::string shape;        // "1024x1024x1024", "B1 S512 A8 D128", "16777216 elements"
    double flops = 0;         // per call, as the planner counts them
    double bytes = 0;         // per call, read and written
    double seconds = 0;       // per call
    std::uint64_t calls = 0;  // timed together, between two synchronizations
    // A kernel timing the model reads (benchmark: a kernel class of planner/graph/graph.hpp, or
    // "optimizer"): "forward" or "backward"; empty for the record-only benchmarks.
    std::string direction;
    std::uint64_t dim = 0;  // the narrow dimension it ran at (KernelTiming::dim)
    double work = 0;        // the planner's count for it: FLOPs (gemm, attention) or bytes
    // CPU: no timed batch ran with the host at full speed (runtime/host_speed.hpp), so this is
    // the fastest of slowed ones.
    bool contended = false;
};

struct Calibration {
    std::string backend;  // "cpu", "cuda"
    std::string device;   // "NVIDIA H200", "AMD EPYC (one BLAS thread)"
    std::string source;   // free text: how the rates were obtained
    // Compute rates by storage: fp32 serves --precision fp32, bf16 every other mode (as the
    // preset's bf16_flops does). A calibration may hold one or both.
    std::optional<MeasuredCompute> fp32, bf16;
    double memory_bandwidth = 0;  // bytes/s of a large elementwise op
    double launch_s = 0;          // seconds per op launch
    // Ranks the device runs at once (a CPU's cores, as the CPU runtime gives each rank a thread);
    // 0 for a GPU, one rank each.
    double concurrent_ranks = 0;
    // How much longer memory-bound kernels take when concurrent_ranks ranks run at once (they
    // share the memory bus): 1 where not measured.
    double shared_memory_slowdown = 1;
    double shared_compute_slowdown = 1;  // the same for GEMMs and attention
    // The CPU runtime's in-process collectives (0: not measured; GPUs use --network): seconds =
    // latency + bytes / bandwidth, every rank handling the whole unit whatever W.
    double collective_bus_bandwidth = 0;
    double collective_latency_s = 0;
    // CPU: the host probe's fastest time while calibrating (runtime/host_speed.hpp), 0 where not
    // measured. A run with this calibration judges its steps against it, so that a step counts as
    // run at full speed by the same yardstick as the benchmarks here.
    double host_probe_s = 0;
    std::vector<CalibrationSample> measurements;
};

// "fp32" for fp32, "bf16" for every other precision: the storage row a question reads.
std::string_view calibration_storage(Precision p);

nlohmann::json calibration_json(const Calibration& c);
// `origin` names the file in errors.
Calibration calibration_from_json(const nlohmann::json& j, const std::string& origin);
Calibration load_calibration(const std::string& path);
void save_calibration(const Calibration& c, const std::string& path);

// Throws InputError when the calibration has no compute rates for the storage of `precision`.
void check_covers(const Calibration& c, Precision precision, const std::string& origin);

// The default model with every measured rate in place of the preset's peak × efficiency, and
// the measured launch cost.
StepTimeModel calibrated_model(const Calibration& c);

}  // namespace remat
