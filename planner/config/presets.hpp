// Presets from models/ compiled into the binary (see cmake/EmbedPresets.cmake), so the CLI
// needs no data files at run time.
#pragma once
#include <string>
#include <string_view>
#include <vector>

namespace remat {

struct EmbeddedPreset {
    std::string_view kind;  // "models", "gpus" or "networks": the folder under models/
    std::string_view name;  // file name without .json
    std::string_view json;
};

const std::vector<EmbeddedPreset>& embedded_presets();

// The names of one kind's presets ("models", "gpus", "networks"), in file order.
std::vector<std::string> preset_names(std::string_view kind);
// One preset of a kind by name; null when there is none.
const EmbeddedPreset* find_preset(std::string_view kind, std::string_view name);

}  // namespace remat
