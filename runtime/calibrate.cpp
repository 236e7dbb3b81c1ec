#include "runtime/calibrate.hpp"

#include <cblas.h>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <type_traits>

#include "planner/config/error.hpp"
#include "runtime/allocator.hpp"
#include "runtime/device_parts.hpp"
#include "runtime/devices.hpp"

namespace remat::rt {
namespace {

using Clock = std::chrono::steady_clock;

// 32 MiB per fp32 array, 96 MiB in all: twice an H100/H200 L2, past a CPU's last-level cache.
constexpr std::size_t k_memory_elements = std::size_t{1} << 23;
constexpr std::size_t k_gemm_first = 256, k_gemm_last = 8192;            // N = I = O
constexpr std::size_t k_attention_first = 128, k_attention_last = 8192;  // S
constexpr std::size_t k_heads = 8, k_head_dim = 128;  // one sequence, llama2-7b's head size

struct Timed {
    double seconds = 0;  // per call
    std::uint64_t calls = 0;
};

// Seconds per call: an untimed first call (page faults, cuBLAS heuristics, kernel loading), then
// batches of 1, 2, 4, ... calls, each between two synchronizations, until one lasts min_batch_s;
// that batch's mean. A long call is timed alone, a tiny one millions of times, so that the
// clock's resolution and the synchronization stay small against the batch.
template <class T, class F>
Timed time_calls(const Backend<T>& backend, F&& call, double min_batch_s) {
    call();
    backend.synchronize();
    for (std::uint64_t n = 1;; n *= 2) {
        const auto t0 = Clock::now();
        for (std::uint64_t k = 0; k < n; ++k) call();
        backend.synchronize();
        const double s = std::chrono::duration<double>(Clock::now() - t0).count();
        if (s >= min_batch_s || n >= (std::uint64_t{1} << 26))
            return {s / static_cast<double>(n), n};
    }
}

template <class T>
Benchmark benchmark(std::string kind, std::string shape, double flops, double bytes, Timed t) {
    const Precision p = std::is_same_v<T, bf16> ? Precision::bf16_mixed : Precision::fp32;
    return {std::move(kind), p, std::move(shape), flops, bytes, t.seconds, t.calls};
}

// add_forward on one element: what a call costs when it does no work.
template <class T>
Benchmark launch(const Backend<T>& b, CountingAllocator& a, const CalibrateOptions& o) {
    const BufferRef x = make_zeroed(a, sizeof(T)), y = make_buffer(a, sizeof(T));
    const Timed t = time_calls(
        b, [&] { b.add_forward(y->as<T>(), x->as<T>(), x->as<T>(), 1); }, o.min_batch_s);
    return benchmark<T>("launch", "1 element", 0, 3 * sizeof(T), t);
}

// add_forward over arrays larger than the caches: two reads and one write per element.
template <class T>
Benchmark memory(const Backend<T>& b, CountingAllocator& a, const CalibrateOptions& o) {
    const std::size_t n = k_memory_elements;
    const BufferRef x = make_zeroed(a, n * sizeof(T)), y = make_zeroed(a, n * sizeof(T)),
                    z = make_zeroed(a, n * sizeof(T));
    const Timed t = time_calls(
        b, [&] { b.add_forward(z->as<T>(), x->as<T>(), y->as<T>(), n); }, o.min_batch_s);
    return benchmark<T>("memory", fmt::format("{} elements", n), 0,
                        3.0 * static_cast<double>(n * sizeof(T)), t);
}

// linear_forward, out(n, n) = inp(n, n) · w(n, n)^T, at sizes doubling from 256 until one call
// lasts grow_until_s (or n = 8192). Zero-filled operands: no denormals, no NaN.
template <class T>
std::vector<Benchmark> gemms(const Backend<T>& b, CountingAllocator& a, const CalibrateOptions& o) {
    std::vector<Benchmark> out;
    for (std::size_t n = k_gemm_first; n <= k_gemm_last; n *= 2) {
        const std::uint64_t elements = std::uint64_t{n} * n, bytes = elements * sizeof(T);
        const BufferRef inp = make_zeroed(a, bytes), w = make_zeroed(a, bytes),
                        y = make_buffer(a, bytes);
        const BufferRef ws = make_buffer(a, b.linear_forward_workspace(n, n, n));
        const Timed t = time_calls(
            b,
            [&] {
                b.linear_forward(y->as<T>(), inp->as<T>(), w->as<T>(), nullptr, n, n, n,
                                 ws->as<void>());
            },
            o.min_batch_s);
        const double dn = static_cast<double>(n);
        out.push_back(benchmark<T>("gemm", fmt::format("{}x{}x{}", n, n, n), 2 * dn * dn * dn,
                                   3.0 * static_cast<double>(bytes), t));
        if (t.seconds >= o.grow_until_s) break;
    }
    return out;
}

// Causal attention forward then backward over one sequence of 8 heads of 128, at sequence lengths
// doubling from 128 like the GEMMs. FLOPs as the planner counts the fused op, forward
// 4·B·A·D·S(S+1)/2 and backward 2.5 times that, so that the rate gives back the measured pair:
// a backward costs more than 2.5 forwards on a kernel that recomputes more (the CUDA backend's
// dq and dk/dv kernels each recompute the scores), and a forward-only rate would hide it.
template <class T>
std::vector<Benchmark> attentions(const Backend<T>& b, CountingAllocator& a,
                                  const CalibrateOptions& o) {
    using A = acc_t<T>;
    std::vector<Benchmark> out;
    const std::size_t H = k_heads, D = k_head_dim;
    for (std::size_t S = k_attention_first; S <= k_attention_last; S *= 2) {
        const AttentionShape s{1, S, H, H, D, H * D, H * D, H * D};
        const std::uint64_t tensor = std::uint64_t{S} * H * D * sizeof(T),
                            lse_bytes = std::uint64_t{H} * S * sizeof(A);
        const BufferRef q = make_zeroed(a, tensor), k = make_zeroed(a, tensor),
                        v = make_zeroed(a, tensor);
        const BufferRef y = make_buffer(a, tensor), lse = make_buffer(a, lse_bytes);
        const BufferRef dy = make_zeroed(a, tensor), dq = make_zeroed(a, tensor),
                        dk = make_zeroed(a, tensor), dv = make_zeroed(a, tensor);
        const BufferRef ws = make_buffer(
            a, std::max(b.attention_forward_workspace(s), b.attention_backward_workspace(s)));
        const Timed t = time_calls(
            b,
            [&] {
                b.attention_forward(y->as<T>(), lse->as<A>(), q->as<T>(), k->as<T>(), v->as<T>(), s,
                                    DropoutKey{}, ws->as<void>());
                b.attention_backward(dq->as<T>(), dk->as<T>(), dv->as<T>(), dy->as<T>(), q->as<T>(),
                                     k->as<T>(), v->as<T>(), y->as<T>(), lse->as<A>(), s,
                                     DropoutKey{}, ws->as<void>());
            },
            o.min_batch_s);
        const double dS = static_cast<double>(S);
        const double forward_flops = 4.0 * static_cast<double>(H * D) * dS * (dS + 1) / 2;
        // Bytes: forward reads q, k, v and writes out and lse; backward reads those and dout,
        // and updates dq, dk and dv.
        out.push_back(benchmark<T>("attention", fmt::format("B1 S{} A{} D{} fwd+bwd", S, H, D),
                                   3.5 * forward_flops,
                                   static_cast<double>(15 * tensor + 2 * lse_bytes), t));
        if (t.seconds >= o.grow_until_s) break;
    }
    return out;
}

template <class T>
DeviceParts<T> parts(Device device) {
    return device == Device::cuda ? cuda_parts<T>(1) : cpu_parts<T>(1);
}

// The GEMMs and attentions of one storage type; returns the rates at the largest sizes.
template <class T>
ComputeRates compute(Device device, const CalibrateOptions& o, std::vector<Benchmark>& log) {
    const DeviceParts<T> p = parts<T>(device);
    CountingAllocator a(0, p.backend->memory());
    const std::vector<Benchmark> g = gemms(*p.backend, a, o), at = attentions(*p.backend, a, o);
    log.insert(log.end(), g.begin(), g.end());
    log.insert(log.end(), at.begin(), at.end());
    return {g.back().flops / g.back().seconds, at.back().flops / at.back().seconds};
}

std::string cpu_model_name() {
    std::ifstream in("/proc/cpuinfo");
    for (std::string line; std::getline(in, line);)
        if (line.rfind("model name", 0) == 0 && line.find(':') != std::string::npos) {
            const std::size_t start = line.find_first_not_of(" \t", line.find(':') + 1);
            if (start != std::string::npos) return line.substr(start);
        }
    return "unknown CPU";
}

std::string largest(const std::vector<Benchmark>& log, const std::string& kind) {
    std::string shape;
    for (const Benchmark& b : log)
        if (b.kind == kind) shape = b.shape;
    return shape;
}

}  // namespace

DeviceRates measure_device(const CalibrateOptions& o) {
    bool fp32 = false, bf16_storage = false;
    for (Precision p : o.precisions) {
        if (p == Precision::fp32)
            fp32 = true;
        else if (p == Precision::bf16_mixed)
            bf16_storage = true;
        else
            throw InputError(
                fmt::format("{} {}: remat calibrate measures the runtime's storage types, "
                            "fp32 and bf16-mixed",
                            named(Input::precision), precision_name(p)));
    }
    DeviceRates r;
    const bool cuda = o.device == Device::cuda;
    if (!cuda) openblas_set_num_threads(1);  // as the CPU runtime runs each rank
    {
        // Bandwidth and the launch cost in fp32: properties of the device, and the optimizer's
        // states are fp32 whatever the precision.
        const DeviceParts<float> p = parts<float>(o.device);  // throws InputError without a GPU
        r.backend = std::string(p.backend->name());
        CountingAllocator a(0, p.backend->memory());
        r.benchmarks.push_back(launch(*p.backend, a, o));
        r.launch_s = r.benchmarks.back().seconds;
        r.benchmarks.push_back(memory(*p.backend, a, o));
        r.memory_bandwidth = r.benchmarks.back().bytes / r.benchmarks.back().seconds;
    }
    if (fp32) r.fp32 = compute<float>(o.device, o, r.benchmarks);
    if (bf16_storage) r.bf16 = compute<bf16>(o.device, o, r.benchmarks);
    if (cuda) {
        const auto gpus = visible_gpus();
        r.device = gpus.empty() ? "GPU 0" : gpus.front().name;
    } else {
        r.device = cpu_model_name() + " (one BLAS thread)";
    }
    r.source = fmt::format(
        "remat calibrate --device {}: {}; linear forward up to {}, attention forward and backward "
        "up to {}, "
        "add_forward over {} "
        "for bandwidth and on 1 element for the launch cost; rates are achieved ones at the "
        "largest sizes",
        r.backend,
        cuda ? "the CUDA backend on GPU 0, one stream"
             : "the CPU backend on one thread with one OpenBLAS thread, as the CPU runtime gives "
               "each rank",
        largest(r.benchmarks, "gemm"), largest(r.benchmarks, "attention"),
        largest(r.benchmarks, "memory"));
    return r;
}

}  // namespace remat::rt
