#include "planner/simulate/step_time.hpp"

#include <cassert>
#include <cmath>

namespace remat {

namespace {

// Bytes/s that memory-bound work reaches: measured, or the datasheet's × memory_efficiency.
double attained_bandwidth(const GpuSpec& gpu, const StepTimeModel& m) {
    return m.measured_bandwidth ? *m.measured_bandwidth
                                : gpu.memory_bandwidth * m.memory_efficiency;
}

// How much longer a rank's work takes because other ranks share its device: W ranks on a device
// that runs C at once take W / C as long (time-sliced), and work run by k = min(W, C) ranks at
// once slows by the slowdown measured at C (memory-bound or compute-bound), scaled to k.
double time_slicing(const StepTimeModel& m) {
    if (!(m.concurrent_ranks > 0)) return 1.0;
    return std::max(1.0, static_cast<double>(m.ranks) / m.concurrent_ranks);
}

double sharing(const StepTimeModel& m, bool memory_bound) {
    if (!(m.concurrent_ranks > 0)) return 1.0;
    const double W = static_cast<double>(m.ranks), C = m.concurrent_ranks;
    double f = time_slicing(m);
    const double slowdown = memory_bound ? m.shared_memory_slowdown : m.shared_compute_slowdown;
    if (C > 1 && W > 1) f *= 1 + (slowdown - 1) * (std::min(W, C) - 1) / (C - 1);
    return f;
}

}  // namespace

NetworkSpec network_of(const StepTimeModel& m, const GpuSpec& gpu) {
    return m.network ? *m.network : load_network(gpu.network.empty() ? "dgx-h100" : gpu.network);
}

double curve_seconds(const TimeCurve& c, double work, double launch_s) {
    assert(!c.empty() && "a timing has at least one point");
    double w0 = 0, t0 = launch_s;
    for (const auto& [w, t] : c) {
        if (work <= w) return w > w0 ? t0 + (t - t0) * (work - w0) / (w - w0) : t;
        w0 = w;
        t0 = t;
    }
    return c.back().second * work / c.back().first;
}

std::optional<double> kernel_seconds(const std::vector<KernelTiming>& timings, const Op& op,
                                     bool backward, double launch_s) {
    const KernelTiming *lo = nullptr, *hi = nullptr, *smallest = nullptr, *largest = nullptr;
    const double dim = static_cast<double>(op.narrow_dim);
    for (const KernelTiming& k : timings) {
        if (k.kernel != op.kernel || k.backward != backward || k.curve.empty()) continue;
        if (!smallest || k.dim < smallest->dim) smallest = &k;
        if (!largest || k.dim > largest->dim) largest = &k;
        if (op.narrow_dim == 0) continue;
        if (k.dim <= op.narrow_dim && (!lo || k.dim > lo->dim)) lo = &k;
        if (k.dim >= op.narrow_dim && (!hi || k.dim < hi->dim)) hi = &k;
    }
    if (!largest) return std::nullopt;
    const double work = (op.kernel == KernelClass::gemm || op.kernel == KernelClass::attention)
                            ? (backward ? op.bwd_flops : op.fwd_flops)
                            : (backward ? op.bwd_bytes : op.fwd_bytes);
    if (op.narrow_dim == 0) return curve_seconds(largest->curve, work, launch_s);
    if (!lo) lo = smallest;
    if (!hi) hi = largest;
    const double t_lo = curve_seconds(lo->curve, work, launch_s);
    // (A timing at dimension 0 has none to interpolate in.)
    if (lo->dim == 0 || lo->dim == hi->dim || dim <= static_cast<double>(lo->dim)) return t_lo;
    if (dim >= static_cast<double>(hi->dim)) return curve_seconds(hi->curve, work, launch_s);
    const double t_hi = curve_seconds(hi->curve, work, launch_s);
    const double f = std::log(dim / static_cast<double>(lo->dim)) /
                     std::log(static_cast<double>(hi->dim) / static_cast<double>(lo->dim));
    return t_lo + (t_hi - t_lo) * f;
}

double op_time_s(const Op& op, bool backward, const GpuSpec& gpu, Precision precision,
                 const StepTimeModel& m) {
    const double flops = backward ? op.bwd_flops : op.fwd_flops;
    const double bytes = backward ? op.bwd_bytes : op.fwd_bytes;
    const std::optional<MeasuredCompute>& measured =
        precision == Precision::fp32 ? m.fp32_measured : m.bf16_measured;
    // W ranks on a device that runs fewer at once (a CPU's cores) share it.
    const double shared =
        sharing(m, op.kernel != KernelClass::gemm && op.kernel != KernelClass::attention);
    if (measured)
        if (const auto s = kernel_seconds(measured->kernels, op, backward, m.launch_s)) {
            double t = *s;
            if (op.dropout_elements > 0) {
                // The draws as the dropout kernel's: its work is bytes in and out (2 per element
                // of the storage forward, twice that backward), at the activation's width.
                Op draws;
                draws.kernel = KernelClass::dropout;
                const double e = precision == Precision::fp32 ? 4 : 2;
                draws.fwd_bytes = 2 * e * op.dropout_elements;
                draws.bwd_bytes = 2 * draws.fwd_bytes;
                t += kernel_seconds(measured->kernels, draws, backward, 0).value_or(0);
            }
            return t * shared;
        }
    double compute_s = 0;
    if (measured) {
        assert(measured->gemm_flops > 0 && measured->attention_flops > 0 &&
               "load_calibration checks the rates");
        // The calibration measures no elementwise compute rate; memory-class ops are
        // bandwidth-bound, so their small compute term is charged at the GEMM rate of the same
        // storage.
        compute_s = flops / (op.op_class == OpClass::attention ? measured->attention_flops
                                                               : measured->gemm_flops);
    } else {
        // PyTorch runs fp32 matmuls without TF32 by default (allow_tf32 = False for matmul).
        const double peak = precision == Precision::fp32 ? gpu.fp32_flops : gpu.bf16_flops;
        if (op.op_class == OpClass::gemm)
            compute_s = flops / (peak * m.gemm_efficiency);
        else if (op.op_class == OpClass::attention)
            compute_s = flops / (peak * m.attention_efficiency);
        else
            compute_s = flops / (gpu.fp32_flops * m.memory_efficiency);
    }
    const double memory_s = bytes / attained_bandwidth(gpu, m);
    return (compute_s + memory_s + m.launch_s * (backward ? 2 : 1)) * shared;
}

double collective_time_s(Collective c, double bytes, std::uint64_t ranks, const NetworkSpec& net,
                         const StepTimeModel& m) {
    // The in-process figures were measured with the ranks running at once: only time slicing
    // beyond the cores adds.
    return collective_s(c, bytes, ranks, net) * time_slicing(m);
}

double optimizer_bytes_per_param(Optimizer o) {
    // AdamW reads param, grad, m, v and writes param, m, v (fp32): 28 bytes per parameter;
    // SGD with momentum reads param, grad, buf and writes param, buf: 20 bytes; 8-bit AdamW
    // reads param, grad and two 1-byte states and writes param and states: 14 bytes (and the
    // block absmax); Adafactor reads param and grad, writes and reads its fp32 update twice
    // and writes param: 28 bytes (its factored state is small).
    switch (o) {
        case Optimizer::adamw:
        case Optimizer::adafactor:
            return 28.0;
        case Optimizer::sgd:
            return 20.0;
        case Optimizer::adamw_8bit:
            return 14.0;
    }
    return 28.0;
}

double optimizer_time_s(std::uint64_t local_params, Optimizer o, const GpuSpec& gpu,
                        const StepTimeModel& m) {
    const double bytes = static_cast<double>(local_params) * optimizer_bytes_per_param(o);
    const double shared = sharing(m, true);
    if (!m.measured_optimizer.empty())
        return curve_seconds(m.measured_optimizer, bytes, m.launch_s) * shared;
    return bytes / attained_bandwidth(gpu, m) * shared;
}

}  // namespace remat
