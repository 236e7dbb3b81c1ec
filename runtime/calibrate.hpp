// Microbenchmarks of what a device's backend achieves: GEMM and attention FLOP/s, memory
// bandwidth, and the fixed cost of one op. Written against Backend<T> only, so the CPU backend
// (single-thread OpenBLAS, as the runtime gives one BLAS thread per rank) and the CUDA backend
// are measured by the same code. The planner's step-time model reads the result as a
// calibration file (planner/simulate/calibration.hpp; the glue is tools/calibrate.cpp).
//
// Per kernel class (GEMMs by their narrow dimension, attention by head size, norms, elementwise
// ops, activations, rotary embeddings, cross-entropy over a vocabulary, the embedding lookup, the
// optimizer step), forward and backward, at growing sizes: the step-time model reads these
// curves. Not measured: collectives and host-device copies. Nothing here judges the figures; a
// test cannot either.
//
//   CalibrateOptions o;
//   o.device = Device::cpu;
//   o.precisions = {Precision::fp32};
//   DeviceRates r = measure_device(o);     // r.fp32->gemm_flops, r.memory_bandwidth, r.benchmarks
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "planner/config/options.hpp"
#include "runtime/run.hpp"

namespace remat::rt {

struct CalibrateOptions {
    Device device = Device::cpu;
    std::vector<Precision> precisions = {Precision::fp32,
                                         Precision::bf16_mixed};  // storage types to measure
    double min_batch_s = 0.01;    // a timed batch of calls lasts at least this long
    double grow_until_s = 0.005;  // GEMM and attention sizes double until one call lasts this long
};

// One timed benchmark.
struct Benchmark {
    std::string kind;                       // "launch", "memory", "gemm", "attention"
    Precision precision = Precision::fp32;  // the storage it ran in: fp32, or bf16 under bf16-mixed
    std::string shape;   // "1024x1024x1024" (N x I x O), "B1 S512 A8 D128", "16777216 elements"
    double flops = 0;    // per call, as the planner counts them (attention: the causal half)
    double bytes = 0;    // per call, read and written (the planner's count for the op)
    double seconds = 0;  // per call
    std::uint64_t calls = 0;  // timed together, between two synchronizations
    // Kernel timings the step-time model reads (kind: a kernel class, or "optimizer"):
    // "forward" or "backward"; empty for launch, memory and the legacy gemm/attention rates.
    std::string direction;
    std::uint64_t dim = 0;   // narrow dimension: a GEMM's smallest side, attention's head size
    double work = 0;         // what the planner counts for the op: FLOPs or bytes
    bool contended = false;  // CPU: no timed batch ran with the host at full speed
};

struct ComputeRates {
    double gemm_flops = 0;       // linear forward at the largest size
    double attention_flops = 0;  // attention forward at the largest shape, in the planner's FLOPs
};

struct DeviceRates {
    std::string backend;  // "cpu", "cuda"
    std::string device;   // "NVIDIA H200"; on the CPU its model name and "(one BLAS thread)"
    std::string source;   // what was run, in words
    std::vector<Benchmark> benchmarks;  // in the order they ran
    std::optional<ComputeRates> fp32, bf16;
    double memory_bandwidth = 0;  // bytes/s: add_forward over a large fp32 array
    double launch_s = 0;          // seconds per call of add_forward on one element
    double concurrent_ranks = 0;  // CPU: the cores this process may run on; 0 on a GPU
    // CPU: how much longer the memory benchmark's call takes when every core runs one at once
    // (the ranks share the memory bus); 1 on a GPU.
    double shared_memory_slowdown = 1;
    // The same for a compute-bound call (a GEMM): cores that are hyperthreads of one physical
    // core, or a virtual machine's shared host, slow it too.
    double shared_compute_slowdown = 1;
    // CPU: the in-process collectives between concurrent_ranks threads, fitted as
    // seconds = latency + bytes / bandwidth over all-gathers and reduce-scatters of growing units
    // (each rank converts or sums the whole unit); 0 where not measured (a GPU: --network).
    double collective_bus_bandwidth = 0;
    double collective_latency_s = 0;
    // CPU: the host probe's fastest time (runtime/host_speed.hpp) when the benchmarks ended; 0 on
    // a GPU.
    double host_probe_s = 0;
};

// Throws InputError for a precision other than fp32 and bf16-mixed, or for --device cuda where
// this build has no CUDA backend or no GPU is visible.
DeviceRates measure_device(const CalibrateOptions& options);

}  // namespace remat::rt
