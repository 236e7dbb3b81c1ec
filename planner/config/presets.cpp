#include "planner/config/presets.hpp"

namespace remat {

std::vector<std::string> preset_names(std::string_view kind) {
    std::vector<std::string> names;
    for (const auto& p : embedded_presets())
        if (p.kind == kind) names.emplace_back(p.name);
    return names;
}

const EmbeddedPreset* find_preset(std::string_view kind, std::string_view name) {
    for (const auto& p : embedded_presets())
        if (p.kind == kind && p.name == name) return &p;
    return nullptr;
}

}  // namespace remat
