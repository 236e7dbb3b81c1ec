// What `remat run` and `remat validate` print: predicted against measured, as tables and as
// --json documents (docs/json.md).
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tools/validation.hpp"

namespace remat::cli {

nlohmann::json run_json(const Question& q, const RunReport& r, const RunSettings& s);
std::string run_text(const Question& q, const RunReport& r, const RunSettings& s, bool timeline,
                     bool work_times = false);
nlohmann::json validate_json(const std::vector<SweepResult>& rows, std::uint64_t steps,
                             double tolerance, rt::Device device, Attention attention);
std::string validate_text(const std::vector<SweepResult>& rows, double tolerance);
// The markdown table written beside a validation JSON file.
std::string validate_markdown(const std::vector<SweepResult>& rows, const nlohmann::json& doc);

}  // namespace remat::cli
