// Times the two attention cores through a backend, forward and backward apart, at one shape,
// and prints seconds per call and the rate with FLOPs counted as the planner counts each op:
// flash forward 4·B·A·D·S(S+1)/2 (the causal half) and backward 2.5 times that; eager forward
// 4·B·A·D·S² (whole S x S GEMMs) and backward twice that. For tuning the fused kernels on a GPU
// and for seeing what share of a step attention takes.
//
//   ./build/bin/bench_attention --device cuda --batch 4 --seq 1024 --heads 25 --head-dim 64
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <exception>
#include <string>
#include <utility>

#include "bench/timing.hpp"
#include "planner/config/error.hpp"
#include "runtime/allocator.hpp"
#include "runtime/device_parts.hpp"

namespace {

using namespace remat;
using namespace remat::rt;

struct Args {
    std::string device = "cpu", precision = "bf16-mixed";
    std::size_t batch = 1, seq = 1024, heads = 8, kv_heads = 0, head_dim = 64;
    double min_s = 0.2;  // time batches of calls until one lasts this long
};

// Seconds per call: one untimed call, then batches of 1, 2, 4, ... until one lasts min_s.
template <class T, class F>
double per_call(const Backend<T>& b, F&& call, double min_s) {
    call();
    b.synchronize();
    for (int n = 1;; n *= 2) {
        const double s = bench::seconds([&] {
            for (int k = 0; k < n; ++k) call();
            b.synchronize();
        });
        if (s >= min_s || n >= (1 << 20)) return s / n;
    }
}

void row(const char* core, const char* pass, double seconds, double flops) {
    const double r = flops / seconds;
    fmt::print("{:<6} {:<9} {:>10.3f} ms {:>10.2f} {}FLOP/s\n", core, pass, seconds * 1e3,
               r >= 1e12 ? r / 1e12 : r / 1e9, r >= 1e12 ? "T" : "G");
}

template <class T>
void run(const Args& args) {
    const DeviceParts<T> parts = args.device == "cuda" ? cuda_parts<T>(1) : cpu_parts<T>(1);
    const Backend<T>& b = *parts.backend;
    b.bind_thread();
    CountingAllocator a(0, b.memory());
    const std::size_t B = args.batch, S = args.seq, A = args.heads,
                      KV = args.kv_heads ? args.kv_heads : A, D = args.head_dim;
    for (const auto& [option, value] : {std::pair{"--batch", B}, std::pair{"--seq", S},
                                        std::pair{"--heads", A}, std::pair{"--head-dim", D}})
        if (value == 0) throw InputError(fmt::format("{} 0: use a positive integer", option));
    if (A % KV != 0) throw InputError(fmt::format("--kv-heads {} must divide --heads {}", KV, A));
    const AttentionShape s{B, S, A, KV, D, A * D, KV * D, KV * D};
    const std::uint64_t q_bytes = B * S * A * D * sizeof(T), kv_bytes = B * S * KV * D * sizeof(T);
    const BufferRef q = make_zeroed(a, q_bytes), k = make_zeroed(a, kv_bytes),
                    v = make_zeroed(a, kv_bytes);
    const BufferRef out = make_buffer(a, q_bytes), dout = make_zeroed(a, q_bytes);
    const BufferRef dq = make_zeroed(a, q_bytes), dk = make_zeroed(a, kv_bytes),
                    dv = make_zeroed(a, kv_bytes);
    const BufferRef lse = make_buffer(a, B * A * S * sizeof(acc_t<T>));
    const DropoutKey none{};
    using Acc = acc_t<T>;

    const double dS = static_cast<double>(S), bad = static_cast<double>(B * A * D);
    fmt::print("{} {}: B {} S {} heads {} kv-heads {} head-dim {}\n", args.device, args.precision,
               B, S, A, KV, D);
    fmt::print("{:<6} {:<9} {:>13} {:>18}\n", "core", "pass", "time/call", "rate");
    {
        const BufferRef ws = make_buffer(
            a, std::max(b.attention_forward_workspace(s), b.attention_backward_workspace(s)));
        const double fwd = 4.0 * bad * dS * (dS + 1) / 2;
        row("flash", "forward",
            per_call(
                b,
                [&] {
                    b.attention_forward(out->as<T>(), lse->as<Acc>(), q->as<T>(), k->as<T>(),
                                        v->as<T>(), s, none, ws->as<void>());
                },
                args.min_s),
            fwd);
        row("flash", "backward",
            per_call(
                b,
                [&] {
                    b.attention_backward(dq->as<T>(), dk->as<T>(), dv->as<T>(), dout->as<T>(),
                                         q->as<T>(), k->as<T>(), v->as<T>(), out->as<T>(),
                                         lse->as<Acc>(), s, none, ws->as<void>());
                },
                args.min_s),
            2.5 * fwd);
    }
    {
        const BufferRef probs = make_buffer(a, B * A * S * S * sizeof(T));
        const BufferRef ws = make_buffer(a, std::max(b.eager_attention_forward_workspace(s),
                                                     b.eager_attention_backward_workspace(s)));
        const double fwd = 4.0 * bad * dS * dS;
        row("eager", "forward",
            per_call(
                b,
                [&] {
                    b.eager_attention_forward(out->as<T>(), probs->as<T>(), q->as<T>(), k->as<T>(),
                                              v->as<T>(), s, none, ws->as<void>());
                },
                args.min_s),
            fwd);
        row("eager", "backward",
            per_call(
                b,
                [&] {
                    b.eager_attention_backward(dq->as<T>(), dk->as<T>(), dv->as<T>(), dout->as<T>(),
                                               q->as<T>(), k->as<T>(), v->as<T>(), probs->as<T>(),
                                               s, none, ws->as<void>());
                },
                args.min_s),
            2 * fwd);
    }
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"Time the flash and eager attention cores of a backend"};
    Args args;
    app.add_option("--device", args.device, "cpu | cuda")->capture_default_str();
    app.add_option("--precision", args.precision, "fp32 | bf16-mixed")->capture_default_str();
    app.add_option("--batch", args.batch, "B")->capture_default_str();
    app.add_option("--seq", args.seq, "S")->capture_default_str();
    app.add_option("--heads", args.heads, "A")->capture_default_str();
    app.add_option("--kv-heads", args.kv_heads, "KV (default: A)");
    app.add_option("--head-dim", args.head_dim, "D")->capture_default_str();
    app.add_option("--min-seconds", args.min_s, "Time batches of calls until one lasts this long")
        ->capture_default_str();
    CLI11_PARSE(app, argc, argv);
    try {
        if (!(args.min_s > 0))
            throw InputError(fmt::format(
                "--min-seconds {}: use a positive number of seconds, e.g. 0.2", args.min_s));
        if (args.device != "cpu" && args.device != "cuda")
            throw InputError(fmt::format("--device '{}': use cpu or cuda", args.device));
        if (args.precision == "fp32")
            run<float>(args);
        else if (args.precision == "bf16-mixed")
            run<bf16>(args);
        else
            throw InputError(
                fmt::format("--precision '{}': use fp32 or bf16-mixed", args.precision));
    } catch (const std::exception& e) {
        fmt::print(stderr, "bench_attention: {}\n", e.what());
        return 2;
    }
}
