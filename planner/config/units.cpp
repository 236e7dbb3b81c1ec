#include "planner/config/units.hpp"

#include <fmt/format.h>

namespace remat {

std::string format_bytes(std::uint64_t bytes) {
    static constexpr const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
    double v = static_cast<double>(bytes);
    int u = 0;
    while (v >= 1024.0 && u < 5) {
        v /= 1024.0;
        ++u;
    }
    return u == 0 ? fmt::format("{} B", bytes) : fmt::format("{:.2f} {}", v, units[u]);
}

std::string format_flops(double flops) {
    static constexpr const char* units[] = {"FLOP",  "kFLOP", "MFLOP", "GFLOP",
                                            "TFLOP", "PFLOP", "EFLOP"};
    int u = 0;
    while (flops >= 1000.0 && u < 6) {
        flops /= 1000.0;
        ++u;
    }
    return fmt::format("{:.2f} {}", flops, units[u]);
}

std::string format_seconds(double s) {
    if (s >= 1.0) return fmt::format("{:.3f} s", s);
    if (s >= 1e-3) return fmt::format("{:.2f} ms", s * 1e3);
    return fmt::format("{:.1f} us", s * 1e6);
}

}  // namespace remat
