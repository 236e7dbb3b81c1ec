// What the CLI prints: human tables (binary units, aligned) and --json documents (docs/json.md).
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "planner/search.hpp"

namespace remat::cli {

nlohmann::json question_json(const Question& q);
nlohmann::json plan_json(const Question& q, const Evaluation& e);
std::string plan_text(const Question& q, const Evaluation& e, bool saved, bool schedule, bool timeline);
nlohmann::json saved_json(const Chain& c);
nlohmann::json max_batch_json(const Question& q, const std::vector<MaxBatch>& results);
std::string max_batch_text(const Question& q, const std::vector<MaxBatch>& results);
std::string models_text();
nlohmann::json models_json();

}  // namespace remat::cli
