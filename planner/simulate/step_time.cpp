#include "planner/simulate/step_time.hpp"

#include <cassert>

namespace remat {

namespace {

// Bytes/s that memory-bound work reaches: measured, or the datasheet's × memory_efficiency.
double attained_bandwidth(const GpuSpec& gpu, const StepTimeModel& m) {
    return m.measured_bandwidth ? *m.measured_bandwidth
                                : gpu.memory_bandwidth * m.memory_efficiency;
}

}  // namespace

double op_time_s(const Op& op, bool backward, const GpuSpec& gpu, Precision precision,
                 const StepTimeModel& m) {
    const double flops = backward ? op.bwd_flops : op.fwd_flops;
    const double bytes = backward ? op.bwd_bytes : op.fwd_bytes;
    const std::optional<MeasuredCompute>& measured =
        precision == Precision::fp32 ? m.fp32_measured : m.bf16_measured;
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
    return compute_s + memory_s + m.launch_s * (backward ? 2 : 1);
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
    return static_cast<double>(local_params) * optimizer_bytes_per_param(o) /
           attained_bandwidth(gpu, m);
}

}  // namespace remat
