#include "runtime/calibrate.hpp"

#include <cblas.h>
#include <fmt/format.h>
#include <sched.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <fstream>
#include <functional>
#include <random>
#include <thread>
#include <type_traits>

#include "planner/config/error.hpp"
#include "runtime/allocator.hpp"
#include "runtime/collectives.hpp"
#include "runtime/device_parts.hpp"
#include "runtime/devices.hpp"
#include "runtime/host_speed.hpp"

namespace remat::rt {
namespace {

using Clock = std::chrono::steady_clock;

// 32 MiB per fp32 array, 96 MiB in all: twice an H100/H200 L2, past a CPU's last-level cache.
constexpr std::size_t k_memory_elements = std::size_t{1} << 23;
constexpr std::size_t k_gemm_first = 256, k_gemm_last = 8192;            // N = I = O
constexpr std::size_t k_attention_first = 128, k_attention_last = 8192;  // S
constexpr std::size_t k_heads = 8, k_head_dim = 128;  // one sequence, llama2-7b's head size
// Inputs of the kernel timings: normal, mean 0, standard deviation k_input_sigma, as a freshly
// initialized model's activations are (Hugging Face's init std 0.02 over √H inputs: 0.23 at the
// tiny models' H = 128, which remat's runtime shows at GELU's input). A CPU's tanh and exp cost
// more on that spread than on a narrower uniform one: GELU over 2^18 elements took 3.56 ms on
// uniform ±0.25 values, 4.3 ms on σ 0.23, 5.75 ms on σ 1.
constexpr float k_input_sigma = 0.23f;

struct Timed {
    double seconds = 0;  // per call
    std::uint64_t calls = 0;
    bool contended = false;  // no timed batch ran with the host at full speed
};

// Seconds per call: an untimed first call (page faults, cuBLAS heuristics, kernel loading), then
// batches of 1, 2, 4, ... calls, each between two synchronizations, until one lasts min_batch_s;
// then that batch three more times, and the fastest of the three's mean (a shared machine's other
// work only ever slows a batch down). A long call is timed alone, a tiny one millions of times, so
// that the clock's resolution and the synchronization stay small against the batch.
//
// `gated` (the CPU, one thread): each of the three is bracketed by the host probe
// (runtime/host_speed.hpp) and counts only when the core ran at full speed around it; a batch in a
// slow stretch is timed again, for up to k_contended_retry_s, and when none ran at full speed the
// fastest of them stands (Timed::contended says so).
// All of a calibration's retries together stop after k_retry_budget_s: on a host busy for
// minutes the command ends anyway, its slowed benchmarks marked.
constexpr double k_contended_retry_s = 1.0;
constexpr double k_retry_budget_s = 30.0;
double g_retry_left_s = k_retry_budget_s;  // reset by measure_device; gated timing is one thread

// Whether a benchmark's batches are judged by the host probe: on the CPU, where the host's other
// tenants slow the cores (on a GPU the host's speed is not the device's).
bool host_gated(const CalibrateOptions& o) { return o.device == Device::cpu; }

template <class T, class F>
Timed time_calls(const Backend<T>& backend, F&& call, double min_batch_s, bool gated) {
    call();
    backend.synchronize();
    auto batch = [&](std::uint64_t n) {
        const auto t0 = Clock::now();
        for (std::uint64_t k = 0; k < n; ++k) call();
        backend.synchronize();
        return std::chrono::duration<double>(Clock::now() - t0).count();
    };
    for (std::uint64_t n = 1;; n *= 2) {
        const double s = batch(n);
        if (s < min_batch_s && n < (std::uint64_t{1} << 26)) continue;
        double clean = INFINITY, any = s;
        const auto start = Clock::now();
        for (int accepted = 0, tries = 0; accepted < 3; ++tries) {
            const double before = gated ? probe_host() : 0;
            const double t = batch(n);
            const double after = gated ? probe_host() : 0;
            any = std::min(any, t);
            if (!gated || uncontended(std::max(before, after))) {
                clean = std::min(clean, t);
                ++accepted;
            } else if (tries >= 3) {
                // Past the three, each slowed batch is a retry, charged to the budget.
                g_retry_left_s -= t;
                if (g_retry_left_s <= 0 ||
                    std::chrono::duration<double>(Clock::now() - start).count() >
                        k_contended_retry_s)
                    break;
            }
        }
        const bool contended = !std::isfinite(clean);
        return {(contended ? any : clean) / static_cast<double>(n), n, contended};
    }
}

template <class T>
Benchmark benchmark(std::string kind, std::string shape, double flops, double bytes, Timed t) {
    const Precision p = std::is_same_v<T, bf16> ? Precision::bf16_mixed : Precision::fp32;
    Benchmark out;
    out.kind = std::move(kind);
    out.precision = p;
    out.shape = std::move(shape);
    out.flops = flops;
    out.bytes = bytes;
    out.seconds = t.seconds;
    out.calls = t.calls;
    out.contended = t.contended;
    return out;
}

// add_forward on one element: what a call costs when it does no work.
template <class T>
Benchmark launch(const Backend<T>& b, CountingAllocator& a, const CalibrateOptions& o) {
    const BufferRef x = make_zeroed(a, sizeof(T)), y = make_buffer(a, sizeof(T));
    const Timed t = time_calls(
        b, [&] { b.add_forward(y->as<T>(), x->as<T>(), x->as<T>(), 1); }, o.min_batch_s,
        host_gated(o));
    return benchmark<T>("launch", "1 element", 0, 3 * sizeof(T), t);
}

// add_forward over arrays larger than the caches: two reads and one write per element.
template <class T>
Benchmark memory(const Backend<T>& b, CountingAllocator& a, const CalibrateOptions& o) {
    const std::size_t n = k_memory_elements;
    const BufferRef x = make_zeroed(a, n * sizeof(T)), y = make_zeroed(a, n * sizeof(T)),
                    z = make_zeroed(a, n * sizeof(T));
    const Timed t = time_calls(
        b, [&] { b.add_forward(z->as<T>(), x->as<T>(), y->as<T>(), n); }, o.min_batch_s,
        host_gated(o));
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
            o.min_batch_s, host_gated(o));
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
            o.min_batch_s, host_gated(o));
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

// ---- per-kernel timings: seconds against the planner's work, at growing sizes ----

template <class T>
Benchmark kernel_point(const char* kind, bool backward, std::uint64_t dim, std::string shape,
                       double work, Timed t) {
    Benchmark b = benchmark<T>(kind, std::move(shape), 0, 0, t);
    b.direction = backward ? "backward" : "forward";
    b.dim = dim;
    b.work = work;
    return b;
}

// Times forward and backward of one kernel at sizes n = first, 4 first, 16 first, ... until a
// forward call lasts grow_until_s or n passes last. `setup(n)` allocates and returns
// {forward work, backward work, shape, forward call, backward call}.
template <class T, class Setup>
void kernel_curve(const Backend<T>& b, const CalibrateOptions& o, const char* kind,
                  std::uint64_t dim, std::size_t first, std::size_t last, std::size_t factor,
                  Setup setup, std::vector<Benchmark>& out) {
    for (std::size_t n = first; n <= last; n *= factor) {
        auto [fwd_work, bwd_work, shape, fwd, bwd] = setup(n);
        const Timed tf = time_calls(b, fwd, o.min_batch_s, host_gated(o));
        out.push_back(kernel_point<T>(kind, false, dim, shape, fwd_work, tf));
        const Timed tb = time_calls(b, bwd, o.min_batch_s, host_gated(o));
        out.push_back(kernel_point<T>(kind, true, dim, shape, bwd_work, tb));
        if (tf.seconds >= o.grow_until_s) break;
    }
}

template <class T>
struct KernelCall {
    double fwd_work = 0, bwd_work = 0;
    std::string shape;
    std::function<void()> fwd, bwd;
};

// Every kernel class the planner's ops map to (planner/graph/graph.hpp, KernelClass), with the
// work counted as the planner counts it: linear FLOPs 2·N·I·O forward and twice that backward;
// attention 4·B·A·D·S(S+1)/2 forward and 2.5 times that backward; the others' bytes, their
// inputs and outputs forward and twice that backward (OpBuilder::make's default traffic).
template <class T>
std::vector<Benchmark> kernel_timings(const Backend<T>& b, CountingAllocator& a,
                                      const CalibrateOptions& o) {
    using Acc = acc_t<T>;
    std::vector<Benchmark> out;
    std::vector<BufferRef> keep;  // one size's buffers, replaced at the next size
    const std::uint64_t e = sizeof(T);
    auto num = [](std::uint64_t x) { return static_cast<double>(x); };
    auto zeros = [&](std::uint64_t bytes) {
        keep.push_back(make_zeroed(a, std::max<std::uint64_t>(bytes, 1)));
        return keep.back();
    };
    // Inputs of T drawn from N(0, k_input_sigma²), the same sequence every time (transcendental
    // kernels take other paths on zeros, and on other spreads).
    auto data = [&](std::uint64_t bytes) {
        std::vector<T> host(bytes / sizeof(T));
        std::mt19937 rng(1234);
        std::normal_distribution<float> normal(0.0f, k_input_sigma);
        for (std::size_t i = 0; i < host.size(); ++i) {
            const float x = normal(rng);
            if constexpr (std::is_same_v<T, bf16>)
                host[i] = to_bf16(x);
            else
                host[i] = x;
        }
        keep.push_back(make_buffer(a, std::max<std::uint64_t>(bytes, 1)));
        b.upload(keep.back()->template as<void>(), host.data(), host.size() * sizeof(T));
        return keep.back();
    };
    // GEMMs by their narrow dimension d: (4d x d) · (d x 4d), d doubling from 32.
    for (std::size_t d = 32; d <= 8192; d *= 2) {
        const std::size_t N = 4 * d, I = d, O = 4 * d;
        keep.clear();
        const BufferRef x = zeros(N * I * e), w = zeros(O * I * e), y = zeros(N * O * e),
                        dy = zeros(N * O * e), dx = zeros(N * I * e), dw = zeros(O * I * e);
        const BufferRef wf = zeros(b.linear_forward_workspace(N, I, O)),
                        wb = zeros(b.linear_backward_workspace(N, I, O));
        const double flops = 2.0 * num(N * I * O);
        const Timed tf = time_calls(
            b,
            [&] {
                b.linear_forward(y->as<T>(), x->as<T>(), w->as<T>(), nullptr, N, I, O,
                                 wf->as<void>());
            },
            o.min_batch_s, host_gated(o));
        const std::string shape = fmt::format("{}x{}x{}", N, I, O);
        out.push_back(kernel_point<T>("gemm", false, d, shape, flops, tf));
        const Timed tb = time_calls(
            b,
            [&] {
                b.linear_backward(dx->as<T>(), dw->as<T>(), nullptr, dy->as<T>(), x->as<T>(),
                                  w->as<T>(), N, I, O, wb->as<void>());
            },
            o.min_batch_s, host_gated(o));
        out.push_back(kernel_point<T>("gemm", true, d, shape, 2 * flops, tb));
        if (tf.seconds >= o.grow_until_s) break;
    }
    // Causal attention by head size D (8 heads), the sequence doubling from 64.
    for (std::size_t D : {32, 64, 128}) {
        const std::size_t A = 8;
        kernel_curve(
            b, o, "attention", D, 64, 8192, 2,
            [&](std::size_t S) {
                keep.clear();
                const AttentionShape s{1, S, A, A, D, A * D, A * D, A * D};
                const std::uint64_t t = S * A * D * sizeof(T), l = A * S * sizeof(Acc);
                const BufferRef q = data(t), k = data(t), v = data(t), y = data(t), lse = zeros(l),
                                dy = data(t), dq = zeros(t), dk = zeros(t), dv = zeros(t);
                const BufferRef ws = zeros(
                    std::max(b.attention_forward_workspace(s), b.attention_backward_workspace(s)));
                const double f = 4.0 * num(A * D) * (num(S) * (num(S) + 1) / 2);
                return KernelCall<T>{
                    f, 2.5 * f, fmt::format("B1 S{} A{} D{}", S, A, D),
                    [&b, s, q, k, v, y, lse, ws] {
                        b.attention_forward(y->as<T>(), lse->as<Acc>(), q->as<T>(), k->as<T>(),
                                            v->as<T>(), s, DropoutKey{}, ws->as<void>());
                    },
                    [&b, s, q, k, v, y, lse, dy, dq, dk, dv, ws] {
                        b.attention_backward(dq->as<T>(), dk->as<T>(), dv->as<T>(), dy->as<T>(),
                                             q->as<T>(), k->as<T>(), v->as<T>(), y->as<T>(),
                                             lse->as<Acc>(), s, DropoutKey{}, ws->as<void>());
                    }};
            },
            out);
    }
    // Row-wise kernels over (rows, H = 256), rows growing 4x from 16.
    constexpr std::size_t H = 256;
    auto rows_shape = [](std::size_t rows, std::size_t cols) {
        return fmt::format("{}x{}", rows, cols);
    };
    // Norms: LayerNorm then RMSNorm in one call (GPT-2 and Llama), their bytes summed.
    kernel_curve(
        b, o, "norm", 0, 16, std::size_t{1} << 16, 4,
        [&](std::size_t N) {
            keep.clear();
            const BufferRef x = data(N * H * e), y = zeros(N * H * e), w = data(H * e),
                            bias = zeros(H * e), mean = zeros(N * sizeof(Acc)),
                            rstd = zeros(N * sizeof(Acc)), dy = data(N * H * e),
                            dx = zeros(N * H * e), dw = zeros(H * e), db = zeros(H * e);
            const double bytes =
                num(2 * N * H * e + 2 * N * sizeof(Acc)) + num(2 * N * H * e + N * sizeof(Acc));
            return KernelCall<T>{
                bytes, 2 * bytes, rows_shape(N, H),
                [=, &b] {
                    b.layernorm_forward(y->as<T>(), mean->as<Acc>(), rstd->as<Acc>(), x->as<T>(),
                                        w->as<T>(), bias->as<T>(), N, H);
                    b.rmsnorm_forward(y->as<T>(), rstd->as<Acc>(), x->as<T>(), w->as<T>(), N, H);
                },
                [=, &b] {
                    b.layernorm_backward(dx->as<T>(), dw->as<T>(), db->as<T>(), dy->as<T>(),
                                         x->as<T>(), w->as<T>(), mean->as<Acc>(), rstd->as<Acc>(),
                                         N, H);
                    b.rmsnorm_backward(dx->as<T>(), dw->as<T>(), dy->as<T>(), x->as<T>(),
                                       w->as<T>(), rstd->as<Acc>(), N, H);
                }};
        },
        out);
    // Elementwise: the residual add (backward: its two accumulations).
    kernel_curve(
        b, o, "elementwise", 0, 16, std::size_t{1} << 16, 4,
        [&](std::size_t N) {
            keep.clear();
            const std::size_t n = N * H;
            const BufferRef x = data(n * e), z = data(n * e), y = data(n * e), g1 = zeros(n * e),
                            g2 = zeros(n * e);
            return KernelCall<T>{3.0 * num(n * e), 6.0 * num(n * e), rows_shape(N, H),
                                 [=, &b] { b.add_forward(y->as<T>(), x->as<T>(), z->as<T>(), n); },
                                 [=, &b] {
                                     b.accumulate(g1->as<T>(), y->as<T>(), n);
                                     b.accumulate(g2->as<T>(), y->as<T>(), n);
                                 }};
        },
        out);
    // One-input kernels over (N rows, H): forward y = f(x), backward dx from dy (and x); their
    // bytes are x and y forward, twice that backward.
    auto unary = [&](const char* kind, auto forward, auto backward) {
        kernel_curve(
            b, o, kind, 0, 16, std::size_t{1} << 16, 4,
            [&](std::size_t N) {
                keep.clear();
                const std::size_t n = N * H;
                const BufferRef x = data(n * e), y = zeros(n * e), dy = data(n * e),
                                dx = data(n * e);
                return KernelCall<T>{
                    2.0 * num(n * e), 4.0 * num(n * e), rows_shape(N, H),
                    [=, &b] { forward(y->as<T>(), x->as<T>(), N); },
                    [=, &b] { backward(dx->as<T>(), dy->as<T>(), x->as<T>(), N); }};
            },
            out);
    };
    // GELU (GPT-2's MLP), SwiGLU (Llama's), dropout at p = 0.1 (GPT-2's) and rotary embeddings
    // over heads of 32 (the tables computed in the kernel), each its own class.
    unary(
        "gelu", [&](T* y, const T* x, std::size_t N) { b.gelu_forward(y, x, N * H); },
        [&](T* dx, const T* dy, const T* x, std::size_t N) { b.gelu_backward(dx, dy, x, N * H); });
    const DropoutKey key{0.1f, 1, 2, 0};
    unary(
        "dropout",
        [&, key](T* y, const T* x, std::size_t N) { b.dropout_forward(y, x, N * H, key); },
        [&, key](T* dx, const T* dy, const T*, std::size_t N) {
            b.dropout_backward(dx, dy, N * H, key);
        });
    unary(
        "rotary",
        [&](T* y, const T* x, std::size_t N) { b.rotary_forward(y, x, 1, N, H / 32, 32); },
        [&](T* dx, const T* dy, const T*, std::size_t N) {
            b.rotary_backward(dx, dy, 1, N, H / 32, 32);
        });
    kernel_curve(
        b, o, "activation", 0, 16, std::size_t{1} << 16, 4,
        [&](std::size_t N) {
            keep.clear();
            const std::size_t n = N * H;
            const BufferRef x = data(n * e), u = data(n * e), y = zeros(n * e), dy = data(n * e),
                            dx = data(n * e), du = data(n * e);
            return KernelCall<T>{
                3.0 * num(n * e), 6.0 * num(n * e), rows_shape(N, H),
                [=, &b] { b.swiglu_forward(y->as<T>(), x->as<T>(), u->as<T>(), n); },
                [=, &b] {
                    b.swiglu_backward(dx->as<T>(), du->as<T>(), dy->as<T>(), x->as<T>(), u->as<T>(),
                                      n);
                }};
        },
        out);
    // Cross-entropy over a vocabulary of 4096: logits, targets, loss and lse.
    kernel_curve(
        b, o, "softmax", 0, 4, std::size_t{1} << 14, 4,
        [&](std::size_t N) {
            keep.clear();
            constexpr std::size_t V = 4096;
            const BufferRef logits = data(N * V * e), lse = zeros(N * sizeof(Acc)),
                            targets = zeros(N * 4), dlogits = zeros(N * V * e);
            const double bytes = num(N * V * e + 4 * N + 4 + N * sizeof(Acc));
            return KernelCall<T>{bytes, 2 * bytes, rows_shape(N, V),
                                 [=, &b] {
                                     b.cross_entropy_forward(lse->as<Acc>(), logits->as<T>(),
                                                             targets->as<std::int32_t>(), N, V);
                                 },
                                 [=, &b] {
                                     b.cross_entropy_backward(
                                         dlogits->as<T>(), logits->as<T>(), lse->as<Acc>(),
                                         targets->as<std::int32_t>(), N, V, Acc(1));
                                 }};
        },
        out);
    // The embedding lookup (token ids into rows of H) and its backward into the table.
    kernel_curve(
        b, o, "embedding", 0, 16, std::size_t{1} << 16, 4,
        [&](std::size_t N) {
            keep.clear();
            constexpr std::size_t V = 4096;
            const BufferRef ids = zeros(N * 4), wte = zeros(V * H * e), y = zeros(N * H * e),
                            dwte = zeros(V * H * e), dy = data(N * H * e),
                            ws = zeros(b.embedding_backward_workspace(N));
            const double bytes = num(4 * N + N * H * e);
            return KernelCall<T>{bytes, 2 * bytes, rows_shape(N, H),
                                 [=, &b] {
                                     b.embedding_forward(y->as<T>(), ids->as<std::int32_t>(),
                                                         wte->as<T>(), nullptr, N, N, H);
                                 },
                                 [=, &b] {
                                     b.embedding_backward(dwte->as<T>(), nullptr, dy->as<T>(),
                                                          ids->as<std::int32_t>(), N, N, H,
                                                          ws->as<void>());
                                 }};
        },
        out);
    return out;
}

// AdamW over n fp32 parameters: 28 bytes each, as the planner counts the step
// (optimizer_bytes_per_param).
template <class T>
std::vector<Benchmark> optimizer_timings(const Backend<T>& b, CountingAllocator& a,
                                         const CalibrateOptions& o) {
    std::vector<Benchmark> out;
    for (std::size_t n = 4096; n <= (std::size_t{1} << 24); n *= 4) {
        const BufferRef p = make_zeroed(a, 4 * n), g = make_zeroed(a, 4 * n),
                        m = make_zeroed(a, 4 * n), v = make_zeroed(a, 4 * n),
                        d = make_zeroed(a, 4 * n);
        std::uint64_t step = 0;
        const Timed t = time_calls(
            b,
            [&] {
                b.adamw_step(p->as<float>(), g->as<float>(), m->as<float>(), v->as<float>(),
                             d->as<float>(), n, AdamW{}, ++step);
            },
            o.min_batch_s, host_gated(o));
        out.push_back(kernel_point<T>("optimizer", false, 0, fmt::format("{} params", n),
                                      28.0 * static_cast<double>(n), t));
        if (t.seconds >= o.grow_until_s) break;
    }
    return out;
}

// A memory-bound (add over 8 MiB arrays) or compute-bound (a 256-cube GEMM) call on `threads`
// threads at once, each on its own arrays: seconds per call, the slowest thread's.
double concurrent_s(const Backend<float>& b, CountingAllocator& a, std::size_t threads, bool gemm,
                    const CalibrateOptions& o) {
    const std::size_t n = gemm ? 256 * 256 : k_memory_elements / 4;
    std::vector<std::array<BufferRef, 3>> arrays;
    for (std::size_t t = 0; t < threads; ++t)
        arrays.push_back({make_zeroed(a, 4 * n), make_zeroed(a, 4 * n), make_zeroed(a, 4 * n)});
    std::vector<double> seconds(threads);
    std::vector<std::thread> pool;
    for (std::size_t t = 0; t < threads; ++t)
        pool.emplace_back([&, t] {
            // (Named, not a structured binding: clang 14 cannot capture those.)
            const BufferRef &x = arrays[t][0], &y = arrays[t][1], &z = arrays[t][2];
            auto call = [&] {
                if (gemm)
                    b.linear_forward(z->as<float>(), x->as<float>(), y->as<float>(), nullptr, 256,
                                     256, 256, nullptr);
                else
                    b.add_forward(z->as<float>(), x->as<float>(), y->as<float>(), n);
            };
            seconds[t] = time_calls(b, call, 4 * o.min_batch_s, false).seconds;
        });
    for (auto& th : pool) th.join();
    return *std::max_element(seconds.begin(), seconds.end());
}

// How much longer `threads` calls at once take than one alone: the fastest of five of each,
// alternated so that a slow stretch of the host weighs on both. Not judged by the host probe: two
// threads probing at once slow each other, so a concurrent batch would never count.
double sharing_slowdown(const Backend<float>& b, CountingAllocator& a, std::size_t threads,
                        bool gemm, const CalibrateOptions& o) {
    double alone = INFINITY, together = INFINITY;
    for (int k = 0; k < 5; ++k) {
        alone = std::min(alone, concurrent_s(b, a, 1, gemm, o));
        together = std::min(together, concurrent_s(b, a, threads, gemm, o));
    }
    return std::max(1.0, together / alone);
}

// The CPU runtime's in-process all-gather and reduce-scatter among `world` threads, at units of
// growing size: rank 0's seconds per call (every rank leaves a collective together).
std::vector<Benchmark> in_process_collectives(std::size_t world) {
    std::vector<Benchmark> out;
    for (std::size_t unit = std::size_t{1} << 12; unit <= (std::size_t{1} << 21); unit *= 8) {
        InProcessCollectives<float> coll(world);
        const std::size_t shard = (unit + world - 1) / world;
        const std::uint64_t calls = std::max<std::uint64_t>(4, (std::uint64_t{1} << 23) / unit);
        double gather_s = 0, scatter_s = 0;
        std::vector<std::thread> ranks;
        for (std::size_t r = 0; r < world; ++r)
            ranks.emplace_back([&, r] {
                std::vector<float> dst(unit), src(unit, 1.0f), mine(shard, 1.0f), part(shard);
                coll.all_gather(r, dst.data(), mine.data(), shard, unit);  // untimed
                auto t0 = Clock::now();
                for (std::uint64_t k = 0; k < calls; ++k)
                    coll.all_gather(r, dst.data(), mine.data(), shard, unit);
                auto t1 = Clock::now();
                for (std::uint64_t k = 0; k < calls; ++k)
                    coll.reduce_scatter(r, part.data(), src.data(), shard, unit);
                auto t2 = Clock::now();
                if (r == 0) {
                    gather_s = std::chrono::duration<double>(t1 - t0).count();
                    scatter_s = std::chrono::duration<double>(t2 - t1).count();
                }
            });
        for (auto& t : ranks) t.join();
        const std::string shape = fmt::format("{} elements over {} ranks", unit, world);
        const double bytes = 4.0 * static_cast<double>(unit);
        out.push_back(benchmark<float>("all_gather", shape, 0, bytes,
                                       {gather_s / static_cast<double>(calls), calls}));
        out.push_back(benchmark<float>("reduce_scatter", shape, 0, bytes,
                                       {scatter_s / static_cast<double>(calls), calls}));
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
    const std::vector<Benchmark> k = kernel_timings(*p.backend, a, o);
    log.insert(log.end(), k.begin(), k.end());
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
        if (b.kind == kind && b.direction.empty()) shape = b.shape;
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
    if (!cuda) {
        openblas_set_num_threads(1);  // as the CPU runtime runs each rank
        g_retry_left_s = k_retry_budget_s;
        // The host probe's yardstick before the first benchmark: its fastest over half a second,
        // in which even a busy host has given this core some moments at full speed.
        for (const auto t0 = Clock::now();
             std::chrono::duration<double>(Clock::now() - t0).count() < 0.5;)
            probe_host();
    }
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
        const std::vector<Benchmark> opt = optimizer_timings(*p.backend, a, o);
        r.benchmarks.insert(r.benchmarks.end(), opt.begin(), opt.end());
        if (!cuda) {
            // The CPU runtime runs W ranks as W threads: as many at once as this process has
            // cores, sharing the memory bus.
            cpu_set_t set;
            CPU_ZERO(&set);
            const int cores =
                sched_getaffinity(0, sizeof set, &set) == 0
                    ? CPU_COUNT(&set)
                    : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
            r.concurrent_ranks = cores;
            const auto C = static_cast<std::size_t>(cores);
            if (cores > 1) {
                r.shared_memory_slowdown = sharing_slowdown(*p.backend, a, C, false, o);
                r.shared_compute_slowdown = sharing_slowdown(*p.backend, a, C, true, o);
            }
            // Collectives: a least-squares line through seconds against bytes (each rank converts
            // or sums the whole unit).
            const std::size_t world = std::max(2, cores);
            const std::vector<Benchmark> coll = in_process_collectives(world);
            r.benchmarks.insert(r.benchmarks.end(), coll.begin(), coll.end());
            const double f = 1;
            double n = 0, sx = 0, sy = 0, sxx = 0, sxy = 0;
            for (const Benchmark& b : coll) {
                const double x = b.bytes * f, y = b.seconds;
                n += 1;
                sx += x;
                sy += y;
                sxx += x * x;
                sxy += x * y;
            }
            const double slope = (n * sxy - sx * sy) / (n * sxx - sx * sx);
            const double latency = (sy - slope * sx) / n;
            r.collective_bus_bandwidth = slope > 0 ? 1 / slope : 0;
            r.collective_latency_s = std::max(0.0, latency);
        }
    }
    if (fp32) r.fp32 = compute<float>(o.device, o, r.benchmarks);
    if (bf16_storage) r.bf16 = compute<bf16>(o.device, o, r.benchmarks);
    if (cuda) {
        const auto gpus = visible_gpus();
        r.device = gpus.empty() ? "GPU 0" : gpus.front().name;
    } else {
        r.device = cpu_model_name() + " (one BLAS thread)";
        r.host_probe_s = fastest_probe_s();
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
               "each rank, each timed batch bracketed by the host probe and kept only when the "
               "host ran at full speed",
        largest(r.benchmarks, "gemm"), largest(r.benchmarks, "attention"),
        largest(r.benchmarks, "memory"));
    return r;
}

}  // namespace remat::rt
