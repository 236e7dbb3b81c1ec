// What the CLI prints: human tables (binary units, aligned) and --json documents (docs/json.md).
#pragma once
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "planner/search/gpus.hpp"
#include "planner/search/pareto.hpp"
#include "planner/search/recommend.hpp"
#include "planner/search/search.hpp"

namespace remat::cli {

nlohmann::json question_json(const Question& q);
// The question in one line (and a second for LoRA or DPO), ending in a newline; max-batch and
// recommend search the micro-batch, so they leave it out; recommend --max-gpus, the layout.
std::string question_header(const Question& q, bool with_micro_batch = true,
                            bool with_layout = true);
// The same without the final newline, for titles.
std::string question_title(const Question& q, bool with_micro_batch = true);
// "peak 20.71 GiB of 79.65 GiB: fits" (or DOES NOT FIT): a plan against the GPU.
std::string peak_verdict(const Question& q, const Evaluation& e);
nlohmann::json plan_json(const Question& q, const Evaluation& e);
std::string plan_text(const Question& q, const Evaluation& e, bool saved, bool schedule,
                      bool timeline);
nlohmann::json saved_json(const Chain& c);
nlohmann::json max_batch_json(const Question& q, const std::vector<MaxBatch>& results);
std::string max_batch_text(const Question& q, const std::vector<MaxBatch>& results);
std::string models_text();
// args(candidate): the `remat plan` arguments that reproduce it.
nlohmann::json recommend_json(
    const Question& q, const Recommendation& r,
    const std::function<std::vector<std::string>(const Candidate&)>& args);
std::string recommend_text(const Question& q, const Recommendation& r,
                           std::optional<std::uint64_t> global_batch,
                           const std::function<std::vector<std::string>(const Candidate&)>& args);
// "sqrt +offload": a candidate's strategy and whether it offloads checkpoints.
std::string variant_name(const Candidate& c);
// The best candidate of each (strategy, offload), in rank order; a strategy already shown
// through an identical schedule is not shown again.
std::vector<const Candidate*> best_per_variant(const Recommendation& r);
// Why a candidate trails the best: what differs, in the terms of the step-time model.
std::string why(const Candidate& c, const Candidate& best);
// recommend --max-gpus: one row per world size. `args(question at that size, candidate)`.
using GpuArgs = std::function<std::vector<std::string>(const Question&, const Candidate&)>;
nlohmann::json gpus_json(const Question& q, const GpuCountSweep& s, const GpuArgs& args);
std::string gpus_text(const Question& q, const GpuCountSweep& s, std::uint64_t max_gpus,
                      const GpuArgs& args);
nlohmann::json pareto_json(const Question& q, const ParetoFrontier& f);
std::string pareto_text(const Question& q, const ParetoFrontier& f, bool all_points);
nlohmann::json models_json();
// A --json document on stdout, indented by two.
void print_json(const nlohmann::json& j);

}  // namespace remat::cli
