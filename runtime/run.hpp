// One run of the runtime: W ranks (threads of this process, one BLAS thread each) execute a
// Schedule for N optimizer steps on a real model, each with its own counting allocator, and
// report what they measured. On CUDA, rank 0 of W runs on one GPU (collectives emulated). Rank r
// trains on rows [r*B, (r+1)*B) of each global batch of W*B sequences, drawn from a deterministic
// synthetic token stream or a token file.
//
//   RunConfig c{.model = load_model("tiny-gpt2"), .micro_batch = 2, .seq = 128, .world = 2, ...};
//   RunResult r = run_schedule(c);   // r.ranks[0].peak_bytes, r.losses, r.oom
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "planner/config/model.hpp"
#include "planner/config/options.hpp"
#include "planner/config/schedule.hpp"
#include "runtime/executor.hpp"

namespace remat::rt {

enum class Device { cpu, cuda };

struct RunConfig {
    Device device = Device::cpu;  // cuda: rank 0 of W on one GPU, collectives emulated
    ModelConfig model;
    std::uint64_t micro_batch = 1;          // B, per rank
    std::uint64_t seq = 0;                  // S
    std::uint64_t world = 1;                // W
    Precision precision = Precision::fp32;  // fp32 or bf16-mixed
    Attention attention = Attention::flash;
    Schedule schedule;
    std::uint64_t steps = 1;
    std::uint64_t seed = 1234;           // weights, data and dropout
    std::uint64_t memory_cap_bytes = 0;  // per rank; 0: none
    std::string data_path;               // little-endian int32 token ids; empty: synthetic
    bool keep_gradients = false;  // record every step's gradient shards (for --check-gradients)
    bool time_work = false;       // time every op and collective of rank 0 (ExecutorOptions)
    // CPU: every rank runs the host probe (runtime/host_speed.hpp) before each step and after the
    // last, outside the steps' times, so that a step timed while the host slowed the cores can
    // be told apart. Ignored on CUDA, where the host's speed is not the device's.
    bool probe_host = false;
    std::function<void(std::uint64_t done, std::uint64_t total)> progress;  // after each step
};

struct RankResult {
    std::uint64_t peak_bytes = 0;                 // allocator high-water mark over all steps
    std::vector<ActionMemory> timeline;           // the last step's
    std::vector<std::vector<SavedTensor>> saved;  // per stage, after its first forward
    std::uint64_t pool_used_high_bytes = 0;  // CUDA: the pool's own high-water mark; 0 on the CPU
    std::uint64_t pool_reserved_high_bytes = 0;  // CUDA: what the pool held from the device
};

struct OomReport {
    std::string message;  // the one line
    std::string text;     // message, its inputs as placeholders (planner/config/error.hpp)
    std::uint64_t requested_bytes = 0, live_bytes = 0, cap_bytes = 0;
    std::string action, op;
    std::size_t rank = 0;
};

struct RunResult {
    std::vector<RankResult> ranks;  // the ranks executed: all W on the CPU, rank 0 on CUDA
    // CUDA: device memory in use outside the pool (context, modules, cuBLAS workspace), the
    // larger of before the first allocation and after the last step.
    std::uint64_t device_overhead_bytes = 0;
    std::vector<double> losses;        // per completed step: mean over the global batch
    double seconds = 0;                // wall time of the steps (start-up excluded)
    std::vector<double> step_seconds;  // per step, rank 0's (every rank ends a step together)
    // With probe_host: per step, the slowest of the probes just before and just after it, over
    // all ranks (thread CPU seconds; rt::uncontended() judges it).
    std::vector<double> step_probe_s;
    std::vector<WorkTime> work;  // with time_work: rank 0's last step, op by op
    double tokens_per_s = 0;     // per rank: B * S * steps / seconds
    // grads[step][rank][unit]: the fp32 gradient shards, with keep_gradients.
    std::vector<std::vector<std::vector<std::vector<float>>>> grads;
    std::optional<OomReport> oom;
};

// Throws InputError for what the runtime does not execute (check_run_config and check_buildable
// in runtime/limits.hpp: a precision other than fp32 and bf16-mixed, an offloading schedule...)
// and for a bad token file.
RunResult run_schedule(const RunConfig& config);

}  // namespace remat::rt
