// The benchmarks' clock: wall seconds of a call and the median of repeated ones. One home for
// bench_max_batch, bench_optimal and bench_attention (issue 14: "the benchmarks' timing helpers"),
// and for the wall time that `remat calibrate` prints (tools/commands.cpp).
#pragma once
#include <algorithm>
#include <chrono>
#include <vector>

namespace remat::bench {

// Wall-clock seconds that f() takes.
template <typename F>
double seconds(F&& f) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// The median of v (the upper one of an even count); v must not be empty.
inline double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

}  // namespace remat::bench
