#include "planner/gpu.hpp"

#include <fmt/format.h>

#include <charconv>
#include <cmath>
#include <nlohmann/json.hpp>

#include "planner/error.hpp"
#include "planner/json_io.hpp"
#include "planner/presets.hpp"

namespace remat {

std::vector<std::string> gpu_preset_names() {
    std::vector<std::string> names;
    for (const auto& p : embedded_presets())
        if (p.kind == "gpus") names.emplace_back(p.name);
    return names;
}

GpuSpec load_gpu(const std::string& name) {
    for (const auto& p : embedded_presets()) {
        if (p.kind != "gpus" || p.name != name) continue;
        const auto j = parse_json_text(p.json, "models/gpus/" + name + ".json");
        GpuSpec g;
        g.name = j.at("name").get<std::string>();
        g.description = j.at("description").get<std::string>();
        g.capacity_bytes = j.at("capacity_bytes").get<std::uint64_t>();
        g.bf16_flops = j.at("bf16_flops").get<double>();
        g.fp32_flops = j.at("fp32_flops").get<double>();
        g.memory_bandwidth = j.at("memory_bandwidth_bytes_per_s").get<double>();
        g.host_link_bandwidth = j.at("host_link_bytes_per_s").get<double>();
        const auto cc = j.at("compute_capability").get<std::string>();
        g.compute_major = cc[0] - '0';
        g.compute_minor = cc[2] - '0';
        return g;
    }
    throw_unknown("GPU", name, gpu_preset_names());
}

std::uint64_t parse_bytes(const std::string& text, const std::string& option, bool allow_zero) {
    const auto bad = [&] {
        return InputError(fmt::format(
            "{} '{}' is not a size; write bytes or a number with a unit, e.g. 24GiB, 80GB, 512MiB",
            option, text));
    };
    double value = 0;
    const char* end = text.data() + text.size();
    auto [ptr, ec] = std::from_chars(text.data(), end, value);
    if (ec != std::errc() || ptr == text.data()) throw bad();
    const std::string unit(ptr, end);
    struct Unit { const char* name; double scale; };
    static constexpr Unit units[] = {{"", 1},       {"B", 1},         {"KiB", 1024.0},
                                     {"MiB", 1048576.0}, {"GiB", 1073741824.0},
                                     {"TiB", 1099511627776.0}, {"KB", 1e3}, {"MB", 1e6},
                                     {"GB", 1e9},   {"TB", 1e12}};
    for (const auto& u : units) {
        if (unit != u.name) continue;
        const double bytes = value * u.scale;
        if (!(bytes > 0 || (allow_zero && bytes == 0)) || !std::isfinite(bytes) || bytes > 1.8e19)
            throw InputError(fmt::format("{} '{}' must be a {} size", option, text,
                                         allow_zero ? "non-negative" : "positive"));
        return static_cast<std::uint64_t>(std::llround(bytes));
    }
    throw bad();
}

}  // namespace remat
