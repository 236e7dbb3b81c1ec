// Holds a prediction against a measurement: plans a configuration with the `remat` profile (the
// planner's description of remat's runtime), executes the same Schedule on the runtime, and
// compares per-rank peaks and rank 0's live bytes after every action; and `remat validate`'s
// sweep of such comparisons. Glue between planner/ and runtime/, which never see each other's
// sizes.
//
//   RunReport r = run_and_compare(q, parse_strategy("sqrt"), settings);
//   r.worst_peak_error();   // max over ranks of |measured - predicted| / predicted
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "planner/search/search.hpp"
#include "runtime/run.hpp"

namespace remat::cli {

// The machine cannot hold what a CPU run would allocate (all W ranks live in this process):
// refused before the run starts, exit code 3 as for a run out of memory.
struct HostMemoryError : InputError {
    explicit HostMemoryError(const std::string& message) : InputError(message) {}
};

struct RunSettings {
    rt::Device device = rt::Device::cpu;
    std::uint64_t steps = 2;
    std::uint64_t seed = 1234;
    std::uint64_t memory_cap_bytes = 0;
    std::string data_path;
    bool check_gradients = false;  // also run `none` and compare losses and every gradient
    bool time_work = false;        // time rank 0's every op and collective (--work-times)
    std::function<void(std::uint64_t done, std::uint64_t total)> progress;
};

struct ActionComparison {
    std::string action;
    std::uint64_t predicted_bytes = 0, measured_bytes = 0;            // live after the action
    std::uint64_t predicted_peak_bytes = 0, measured_peak_bytes = 0;  // during it
};

// Per step, how much slower than the process's fastest probe the host ran around it
// (rt::host_contention of RunResult::step_probe_s: 1.0 at full speed); empty without probes.
std::vector<double> step_contention(const rt::RunResult& run);

// A run's step time: the fastest step after the first (the first pays page faults and
// first-touch; a shared machine's other work only ever slows a step), or the only one, among the
// steps the host ran at full speed (rt::uncontended; every step when the run was not probed).
// When the host slowed every candidate, the fastest of them, marked contended.
struct SteadyStep {
    double seconds = 0;       // 0 when no step completed
    bool uncontended = true;  // false: every candidate step ran while the host was slowed
};
SteadyStep steady_step(const rt::RunResult& run);

struct RunReport {
    Evaluation prediction;
    rt::RunResult run;
    std::vector<ActionComparison> timeline;  // rank 0, last step
    std::optional<bool> gradients_match;     // with check_gradients
    std::string gradient_difference;         // the first difference, when they do not match
    double worst_peak_error() const;    // over ranks, relative to the prediction (measured_peak)
    double worst_action_error() const;  // over actions (live after, peak during), relative
};

// The question the runtime answers. CPU: profile `remat` and no reserve (a CPU has no CUDA
// context, workspace or caching-allocator slack). CUDA: profile `remat-cuda` and the GPU's
// reserve. Either way the allocator-visible peak is what is compared. Throws InputError for
// what the runtime cannot run.
Question runtime_question(Question q, rt::Device device);
rt::Device parse_device(const std::string& name);  // "cpu" | "cuda"
std::string_view device_name(rt::Device d);
// On the CPU, first checks the predicted peaks of all ranks (each bounded by --memory-cap when
// set) against the memory this machine has available; throws HostMemoryError if they do not fit.
RunReport run_and_compare(const Question& q, const StrategySpec& strategy,
                          const RunSettings& settings);

}  // namespace remat::cli

namespace remat::cli {

// A rank's measured peak: the CUDA pool's own high-water mark, or the CPU allocator's.
std::uint64_t measured_peak(const rt::RankResult& r);

// One configuration of `remat validate`'s sweep.
struct SweepPoint {
    std::string model;
    StrategySpec strategy;
    std::uint64_t micro_batch = 1, world_size = 1, seq = 0;
    Precision precision = Precision::fp32;
};
struct SweepResult {
    SweepPoint point;
    std::string strategy;                       // the plan's name
    std::uint64_t predicted_peak_bytes = 0;     // allocator-visible
    std::uint64_t measured_peak_bytes = 0;      // the largest over ranks
    double peak_error = 0, action_error = 0;    // relative, worst over ranks / actions
    double tokens_per_s = 0;                    // per rank
    std::uint64_t budget_bytes = 0;             // greedy-budget and optimal only
    std::uint64_t measured_reserved_bytes = 0;  // CUDA: the pool's reserved high-water mark
    double predicted_step_time_s = 0;           // the planner's, per optimizer step
    double measured_step_time_s = 0;            // steady_step of the run
    double step_error = 0;                      // (predicted - measured) / measured
    bool step_uncontended = true;               // SteadyStep::uncontended
    std::uint64_t attempts = 1;                 // runs of the point (a contended one is rerun)
    double model_flops = 0;                     // per step per rank: model_flops_per_step()
    double mfu = 0;  // model_flops / (measured time * the GPU preset's peak); 0 on the CPU
};

// FLOPs of one training step on one rank, as MFU counts them (PaLM, Chowdhery et al. 2022,
// appendix B): 6 * P * tokens for the weights, plus 12 * L * H * S * tokens for attention
// (its S x S products, forward and backward, counted in full as PaLM does), tokens = B * S.
double model_flops_per_step(const ModelConfig& m, std::uint64_t micro_batch, std::uint64_t seq);
// greedy-budget and optimal get a budget halfway between full's and none's predicted peaks, so
// that they have something to decide.
// A point whose every step the host slowed (SteadyStep::uncontended false) is run again, up to
// `attempts` runs in all; the memory checks hold in every run. `remat validate` on the CPU gives
// k_validate_attempts; 1 runs each point once.
inline constexpr std::uint64_t k_validate_attempts = 3;
SweepResult validate_point(const Question& base, const SweepPoint& p, std::uint64_t steps,
                           rt::Device device = rt::Device::cpu, std::uint64_t attempts = 1);

// The step-time errors of a sweep: their distribution and whether the predicted times rank the
// runs as the measured ones do (Spearman's rank correlation, over all runs and, averaged, over
// the strategies of each model x B x W x S x precision).
struct StepTimeSummary {
    std::size_t runs = 0, within_15 = 0;
    std::size_t slowed = 0;  // runs whose every step, in every attempt, the host slowed
    std::size_t reruns = 0;  // attempts beyond each run's first
    double median = 0, p90 = 0, worst = 0;  // of |error|
    double spearman_all = 0, spearman_strategies = 0;
};
StepTimeSummary step_time_summary(const std::vector<SweepResult>& rows);
// Spearman's rank correlation of two equally long series (ties take their mean rank).
double spearman(const std::vector<double>& a, const std::vector<double>& b);

// `remat validate`'s flags. Empty fields take the device's defaults: the tiny models' full
// sweep on the CPU; on CUDA the GPU issue's core set (gpt2-xl and llama-1b at sequence 1024,
// none/full/sqrt, W 1 and 8).
struct ValidateFlags {
    std::string models, strategies, micro_batches, world_sizes, precisions, seqs, output,
        calibration, device = "cpu", gpu = "h100-80gb", attention = "flash";
    std::int64_t steps = 0;
    double tolerance = 0;
    bool json = false;
};
// The sweep: every model x strategy x precision x world size x micro-batch x sequence through
// validate_point, printed as a table (or the JSON document with --json) and, with -o (the
// default on CUDA), written as JSON and a markdown table. Exit code 4 past the tolerance.
int run_validate(ValidateFlags f);

}  // namespace remat::cli
