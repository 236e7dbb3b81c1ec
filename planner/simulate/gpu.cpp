#include "planner/simulate/gpu.hpp"

#include <fmt/format.h>

#include <cctype>
#include <charconv>
#include <cmath>
#include <nlohmann/json.hpp>

#include "planner/config/error.hpp"
#include "planner/config/json_io.hpp"
#include "planner/config/presets.hpp"

namespace remat {

std::vector<std::string> gpu_preset_names() { return preset_names("gpus"); }

GpuSpec load_gpu(const std::string& name) {
    if (const EmbeddedPreset* p = find_preset("gpus", name)) {
        const auto j = parse_json_text(p->json, "models/gpus/" + name + ".json");
        GpuSpec g;
        g.name = j.at("name").get<std::string>();
        g.description = j.at("description").get<std::string>();
        g.capacity_bytes = j.at("capacity_bytes").get<std::uint64_t>();
        g.bf16_flops = j.at("bf16_flops").get<double>();
        g.fp32_flops = j.at("fp32_flops").get<double>();
        g.memory_bandwidth = j.at("memory_bandwidth_bytes_per_s").get<double>();
        g.host_link_bandwidth = j.at("host_link_bytes_per_s").get<double>();
        g.network = j.at("network").get<std::string>();
        const auto cc = j.at("compute_capability").get<std::string>();
        g.compute_major = cc[0] - '0';
        g.compute_minor = cc[2] - '0';
        return g;
    }
    throw_unknown("GPU", name, gpu_preset_names());
}

std::uint64_t parse_bytes(const std::string& text, const std::string& option, bool allow_zero) {
    const std::string given = quote(text);
    auto fail = [&](const std::string& why) {
        return InputError(
            fmt::format("{} {}: {}; write a number and a unit, e.g. 24GiB (2^30 bytes each), 80GB "
                        "(10^9), 512MiB, 4096B",
                        option, given, why));
    };
    const char* begin = text.data();
    const char* end = begin + text.size();
    double value = 0;
    auto [ptr, ec] = std::from_chars(begin, end, value,
                                     std::chars_format::fixed | std::chars_format::scientific);
    if (ec == std::errc::result_out_of_range) throw fail("the number is out of range");
    if (ec != std::errc() || ptr == begin) throw fail("not a size");
    while (ptr != end && *ptr == ' ') ++ptr;  // "24 GiB" as well as "24GiB"
    std::string unit;
    for (; ptr != end; ++ptr)
        unit += static_cast<char>(std::tolower(static_cast<unsigned char>(*ptr)));
    if (unit.empty() && value == 0 && allow_zero) return 0;  // zero is zero in any unit
    if (unit.empty()) throw fail("a size needs a unit");
    // Case-insensitive. Binary: KiB, MiB, GiB, TiB, PiB and the short K, M, G, T, P (as Slurm and
    // Docker read them). Decimal: KB, MB, GB, TB, PB.
    struct Unit {
        const char* name;
        double scale;
    };
    static constexpr Unit units[] = {
        {"b", 1},        {"kib", 0x1p10}, {"mib", 0x1p20}, {"gib", 0x1p30},
        {"tib", 0x1p40}, {"pib", 0x1p50}, {"k", 0x1p10},   {"m", 0x1p20},
        {"g", 0x1p30},   {"t", 0x1p40},   {"p", 0x1p50},   {"kb", 1e3},
        {"mb", 1e6},     {"gb", 1e9},     {"tb", 1e12},    {"pb", 1e15}};
    for (const auto& u : units) {
        if (unit != u.name) continue;
        const double bytes = value * u.scale;
        if (!std::isfinite(bytes) || bytes < 0)
            throw fail(allow_zero ? "must not be negative" : "must be positive");
        if (bytes >= 0x1p63) throw fail("more than 2^63 - 1 bytes");
        const auto rounded = static_cast<std::uint64_t>(std::llround(bytes));
        if (rounded == 0 && !allow_zero)
            throw fail(bytes > 0 ? "rounds to 0 bytes" : "must be positive");
        return rounded;
    }
    throw fail(fmt::format("unknown unit {}", quote(unit)));
}

}  // namespace remat
