// `remat report`: one question answered in pictures. It gathers (a) peak memory against the
// micro-batch for every strategy, with the GPU's capacity and each strategy's largest that fits
// (the seed's chart, for this question); (b) the chosen plan's memory over one step, by
// category, action by action; (c) the memory/time frontier with the heuristics' points; (d) the
// plan drawn (DOT through Graphviz); (e) recommend's table with the commands that reproduce it.
// Then writes one self-contained HTML file (inline SVG, no network), the same figures as Plotly
// JSON, or the data as JSON.
//
//   ReportData d = gather_report(q, {}, progress);
//   std::ofstream("report.html") << report_html(d, args);
#pragma once
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "planner/search/pareto.hpp"
#include "planner/search/recommend.hpp"
#include "planner/search/search.hpp"
#include "tools/chart.hpp"

namespace remat::cli {

struct CurvePoint {
    std::uint64_t micro_batch = 0;
    std::uint64_t peak_bytes = 0;
    bool fits = false;
    double tokens_per_s = 0;
};

struct StrategyCurve {
    StrategySpec strategy;
    MaxBatch max;                    // the largest micro-batch that fits
    std::vector<CurvePoint> points;  // powers of two, and the largest that fits
};

// A (strategy, peak, step time) of the heuristics at the chosen micro-batch.
struct HeuristicPoint {
    std::string strategy;
    std::uint64_t peak_bytes = 0;
    double step_time_s = 0;
};

struct ReportData {
    Question question;  // as asked
    std::vector<StrategyCurve> curves;
    Recommendation recommendation;
    // The plan shown in (b), (c) and (d): recommend's best, the strategy and micro-batch asked
    // for, or when nothing fits the leanest plan at micro-batch 1.
    Question chosen_question;
    Evaluation chosen;
    std::string chosen_why;  // how it was chosen, in words
    ParetoFrontier frontier;
    std::vector<HeuristicPoint> heuristics;
    std::string plan_dot;
};

struct ReportRequest {
    std::vector<StrategySpec> strategies;      // the curves' (and the heuristics') strategies
    std::optional<StrategySpec> strategy;      // pin the chosen plan's strategy
    std::optional<std::uint64_t> micro_batch;  // pin its micro-batch
};

// progress: a line saying what is being computed (for stderr); may be empty.
ReportData gather_report(const Question& q, const ReportRequest& request,
                         const std::function<void(const std::string&)>& progress);

// The figures, by id: memory_vs_micro_batch, timeline, pareto.
std::vector<Figure> report_figures(const ReportData& d);

using CandidateArgs = std::function<std::vector<std::string>(const Candidate&)>;
// The HTML page; `command` is how it was made (shown at the bottom).
std::string report_html(const ReportData& d, const CandidateArgs& args, const std::string& command);
// --plotly: {"memory_vs_micro_batch": {"data": [...], "layout": {...}}, ...}
nlohmann::json report_plotly(const ReportData& d);
// --json: the numbers behind every figure (the timeline is the chosen plan's, plan --json's).
nlohmann::json report_json(const ReportData& d, const CandidateArgs& args);

}  // namespace remat::cli
