#include "runtime/host_memory.hpp"

#include <algorithm>
#include <fstream>
#include <string>

namespace remat::rt {
namespace {

std::optional<std::uint64_t> read_number(const char* path) {
    std::ifstream in(path);
    std::uint64_t v = 0;
    if (in >> v) return v;
    return std::nullopt;  // missing, or "max" (no limit)
}

std::optional<std::uint64_t> meminfo_available() {
    std::ifstream in("/proc/meminfo");
    std::string key;
    std::uint64_t kib = 0;
    std::string unit;
    while (in >> key >> kib >> unit)
        if (key == "MemAvailable:") return kib * 1024;
    return std::nullopt;
}

std::optional<std::uint64_t> cgroup_available() {
    auto left = [](const char* limit, const char* usage) -> std::optional<std::uint64_t> {
        const auto l = read_number(limit), u = read_number(usage);
        if (!l || !u) return std::nullopt;
        return *l > *u ? *l - *u : 0;
    };
    if (auto v2 = left("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current")) return v2;
    return left("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                "/sys/fs/cgroup/memory/memory.usage_in_bytes");
}

}  // namespace

std::optional<std::uint64_t> host_memory_available_bytes() {
    const auto mem = meminfo_available(), cg = cgroup_available();
    if (mem && cg) return std::min(*mem, *cg);
    return mem ? mem : cg;
}

}  // namespace remat::rt
