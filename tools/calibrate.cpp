#include "tools/calibrate.hpp"

#include <fmt/format.h>

#include "planner/config/units.hpp"

namespace remat::cli {

namespace {

std::optional<MeasuredCompute> rates(const std::optional<rt::ComputeRates>& r) {
    if (!r) return std::nullopt;
    return MeasuredCompute{r->gemm_flops, r->attention_flops, {}};
}

// Down to nanoseconds: a launch on the CPU costs a few.
std::string per_call(double s) {
    if (s >= 1e-3) return format_seconds(s);
    if (s >= 1e-6) return fmt::format("{:.1f} us", s * 1e6);
    return fmt::format("{:.1f} ns", s * 1e9);
}

std::string trimmed(std::string line) {
    while (!line.empty() && line.back() == ' ') line.pop_back();
    return line;
}

std::string rate(double flops_per_s) { return format_flops(flops_per_s) + "/s"; }
std::string bandwidth(double bytes_per_s) { return fmt::format("{:.2f} GB/s", bytes_per_s / 1e9); }

}  // namespace

Calibration to_calibration(const rt::DeviceRates& r) {
    Calibration c;
    c.backend = r.backend;
    c.device = r.device;
    c.source = r.source;
    c.fp32 = rates(r.fp32);
    c.bf16 = rates(r.bf16);
    c.memory_bandwidth = r.memory_bandwidth;
    c.launch_s = r.launch_s;
    c.concurrent_ranks = r.concurrent_ranks;
    c.shared_memory_slowdown = r.shared_memory_slowdown;
    c.shared_compute_slowdown = r.shared_compute_slowdown;
    c.collective_bus_bandwidth = r.collective_bus_bandwidth;
    c.collective_latency_s = r.collective_latency_s;
    c.host_probe_s = r.host_probe_s;
    for (const rt::Benchmark& b : r.benchmarks)
        c.measurements.push_back({b.kind, std::string(calibration_storage(b.precision)), b.shape,
                                  b.flops, b.bytes, b.seconds, b.calls, b.direction, b.dim, b.work,
                                  b.contended});
    return c;
}

std::string calibrate_text(const Calibration& c, const std::string& path, double wall_s) {
    std::string out =
        fmt::format("remat calibrate: {}, {}, {}\n\n", c.backend, c.device, format_seconds(wall_s));
    out += fmt::format("{:<14} {:<7} {:<3} {:<30} {:>9} {:>11} {:>16}\n", "benchmark", "storage",
                       "dir", "shape", "calls", "time/call", "achieved");
    for (const CalibrationSample& s : c.measurements) {
        std::string achieved;
        const bool by_flops = s.benchmark == "gemm" || s.benchmark == "attention";
        if (!s.direction.empty())
            achieved = by_flops ? rate(s.work / s.seconds) : bandwidth(s.work / s.seconds);
        else if (s.flops > 0)
            achieved = rate(s.flops / s.seconds);
        else if (s.bytes > 0 && s.benchmark != "launch")
            achieved = bandwidth(s.bytes / s.seconds);
        std::string line =
            fmt::format("{:<14} {:<7} {:<3} {:<30} {:>9} {:>11} {:>16}", s.benchmark, s.storage,
                        s.direction.empty() ? "" : (s.direction == "forward" ? "fwd" : "bwd"),
                        s.shape, s.calls, per_call(s.seconds), achieved);
        out += trimmed(std::move(line)) + (s.contended ? " *" : "") + "\n";
    }
    out += fmt::format("\nwritten to {} (plan with --calibration {}):\n", path, path);
    auto row = [&](const char* what, double MeasuredCompute::*field) {
        std::string line = fmt::format("  {:<10}", what);
        if (c.fp32) line += fmt::format(" fp32 {:<18}", rate((*c.fp32).*field));
        if (c.bf16) line += fmt::format(" bf16 {}", rate((*c.bf16).*field));
        return trimmed(std::move(line)) + "\n";
    };
    out += row("gemm", &MeasuredCompute::gemm_flops);
    out += row("attention", &MeasuredCompute::attention_flops);
    out += fmt::format("  {:<10} {}\n", "memory", bandwidth(c.memory_bandwidth));
    out += fmt::format("  {:<10} {} per op\n", "launch", per_call(c.launch_s));
    std::size_t kernels = 0;
    for (const CalibrationSample& s : c.measurements) kernels += !s.direction.empty();
    if (kernels)
        out += fmt::format(
            "  {:<10} {} timings (kernel class x direction x size): each op's time "
            "comes from its class's curve\n",
            "kernels", kernels);
    if (c.concurrent_ranks > 0)
        out += fmt::format(
            "  {:<10} {} ranks at once; together they take {:.2f}x (memory-bound) and "
            "{:.2f}x (GEMM) as long\n",
            "sharing", c.concurrent_ranks, c.shared_memory_slowdown, c.shared_compute_slowdown);
    if (c.collective_bus_bandwidth > 0)
        out += fmt::format("  {:<10} in-process: {} + bytes / {}\n", "collective",
                           per_call(c.collective_latency_s), bandwidth(c.collective_bus_bandwidth));
    if (c.host_probe_s > 0) {
        std::size_t contended = 0;
        for (const CalibrationSample& s : c.measurements) contended += s.contended;
        out += fmt::format(
            "  {:<10} probe {} at full speed; {} of {} benchmarks timed only while the host "
            "slowed the cores{}\n",
            "host", per_call(c.host_probe_s), contended, c.measurements.size(),
            contended ? " (marked *): calibrate again when the machine is quieter" : "");
    }
    out += fmt::format("source: {}\n", c.source);
    return out;
}

}  // namespace remat::cli
