// html_report.hpp. The page is written by hand, SVG included (tools/chart), so it opens from
// disk with no network and no script needed to see it; one small script adds the fast tooltip
// and checks that every chart was drawn (the headless-browser test reads that check).
#include "tools/html_report.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <map>

#include "planner/config/checked.hpp"
#include "planner/config/error.hpp"
#include "planner/config/units.hpp"
#include "tools/plan_figure.hpp"
#include "tools/report.hpp"

namespace remat::cli {
namespace {

using json = nlohmann::json;

constexpr double gib = 1024.0 * 1024.0 * 1024.0;
double in_gib(std::uint64_t bytes) { return static_cast<double>(bytes) / gib; }

// The seed's colours for none (red) and checkpointing (blue); the rest distinct.
std::string strategy_color(const std::string& name) {
    static const std::vector<std::pair<std::string, std::string>> colors = {
        {"none", "#fa5252"},          {"full", "#228be6"},      {"every-2", "#40c057"},
        {"every-4", "#fab005"},       {"sqrt", "#7950f2"},      {"segments-4", "#e64980"},
        {"greedy-budget", "#15aabf"}, {"selective", "#fd7e14"}, {"optimal", "#212529"}};
    for (const auto& [n, c] : colors)
        if (n == name) return c;
    static const char* others[] = {"#5c940d", "#862e9c", "#0b7285", "#a61e4d", "#e67700"};
    return others[std::hash<std::string>{}(name) % std::size(others)];
}

constexpr std::string_view capacity_color = "#868e96";

// The step's chart draws at most this many bars (a 1,000-block model has 3,000 actions).
constexpr std::size_t max_timeline_bars = 400;

Question at_micro_batch(Question q, std::uint64_t b) {
    q.options.micro_batch = b;
    return q;
}

// Powers of two up to twice the largest micro-batch any strategy fits (at least 8, at most
// 4096); gather_report adds each strategy's own largest and stops a curve past twice the GPU.
std::vector<std::uint64_t> curve_micro_batches(const std::vector<MaxBatch>& maxes) {
    std::uint64_t largest = 0;
    for (const MaxBatch& m : maxes) largest = std::max(largest, m.max_micro_batch);
    std::uint64_t top = 8;
    while (top < 2 * largest && top < 4096) top *= 2;
    std::vector<std::uint64_t> bs;
    for (std::uint64_t b = 1; b <= top; b *= 2) bs.push_back(b);
    return bs;
}

}  // namespace

ReportData gather_report(const Question& q, const ReportRequest& request,
                         const std::function<void(const std::string&)>& progress) {
    const auto say = [&](const std::string& line) {
        if (progress) progress(line);
    };
    ReportData d;
    d.question = q;
    const std::size_t n = request.strategies.size();

    // (a) each strategy's largest micro-batch, then its peak at every micro-batch drawn.
    std::vector<MaxBatch> maxes;
    for (std::size_t k = 0; k < n; ++k) {
        say(fmt::format("report: largest micro-batch of {} [{}/{}]", request.strategies[k].name(),
                        k + 1, n));
        maxes.push_back(max_micro_batch(q, request.strategies[k]));
    }
    const std::vector<std::uint64_t> bs = curve_micro_batches(maxes);
    for (std::size_t k = 0; k < n; ++k) {
        StrategyCurve c{request.strategies[k], maxes[k], {}};
        std::vector<std::uint64_t> at = bs;
        const std::uint64_t m = maxes[k].max_micro_batch;
        if (m > 0 && m <= bs.back() && std::find(at.begin(), at.end(), m) == at.end()) {
            at.push_back(m);
            std::sort(at.begin(), at.end());
        }
        for (std::uint64_t b : at) {
            say(fmt::format("report: peak of {} at micro-batch {} [{}/{}]", c.strategy.name(), b,
                            k + 1, n));
            try {
                const Evaluation e = evaluate(at_micro_batch(q, b), c.strategy);
                c.points.push_back({b, e.result.peak_bytes, e.fits, e.result.tokens_per_s});
            } catch (const SizeOverflow&) {
                break;  // too large to count: larger ones are too
            }
            // Past twice the GPU a curve has made its point; drawing on would flatten the rest.
            if (c.points.back().peak_bytes / 2 > q.context.capacity_bytes) break;
        }
        d.curves.push_back(std::move(c));
    }

    // (e) the recommendation; it picks (b)-(d)'s plan unless the question pins one.
    say("report: recommending");
    RecommendOptions options;
    options.progress = [&](std::size_t done, std::size_t total) {
        say(fmt::format("report: recommending [{}/{}]", done, total));
    };
    d.recommendation = recommend(q, options);

    Question chosen = q;
    StrategySpec spec;
    // Each strategy evaluated once at the chosen question, once that is settled: the pinned
    // micro-batch's choice, the plan shown and the heuristics' points read the same ones.
    std::map<std::string, Evaluation> at_chosen;
    const auto evaluate_chosen = [&](const StrategySpec& s) -> const Evaluation& {
        auto it = at_chosen.find(s.name());
        if (it == at_chosen.end()) it = at_chosen.emplace(s.name(), evaluate(chosen, s)).first;
        return it->second;
    };
    if (request.micro_batch) {
        // The fastest that fits at that micro-batch (of the strategy asked for, or of all);
        // when none fits, the leanest, said so.
        chosen.options.micro_batch = *request.micro_batch;
        const std::vector<StrategySpec> tried =
            request.strategy ? std::vector<StrategySpec>{*request.strategy} : request.strategies;
        const Evaluation *fastest = nullptr, *leanest = nullptr;
        StrategySpec fastest_spec, leanest_spec;
        for (const StrategySpec& s : tried) {
            say(fmt::format("report: {} at micro-batch {}", s.name(), *request.micro_batch));
            const Evaluation& e = evaluate_chosen(s);
            if (e.fits && (!fastest || e.result.step_time_s < fastest->result.step_time_s)) {
                fastest = &e;
                fastest_spec = s;
            }
            if (!leanest || e.result.peak_bytes < leanest->result.peak_bytes) {
                leanest = &e;
                leanest_spec = s;
            }
        }
        spec = fastest ? fastest_spec : leanest_spec;
        d.chosen_why =
            fastest
                ? fmt::format("{} at micro-batch {}, as asked{}", spec.name(), *request.micro_batch,
                              request.strategy ? "" : " (the fastest strategy that fits there)")
                : fmt::format("NOTHING FITS at micro-batch {}{}; {} is shown, the leanest",
                              *request.micro_batch,
                              request.strategy ? " with " + request.strategy->name() : "",
                              spec.name());
    } else if (request.strategy) {
        // The strategy's fastest configuration that fits, as recommend ranks them.
        spec = *request.strategy;
        const auto it =
            std::find_if(d.recommendation.ranked.begin(), d.recommendation.ranked.end(),
                         [&](const Candidate& c) { return c.strategy.name() == spec.name(); });
        if (it != d.recommendation.ranked.end()) {
            chosen.options.micro_batch = it->micro_batch;
            chosen.options.grad_accumulation = it->grad_accumulation;
            chosen.context.offload_checkpoints = it->offload;
            d.chosen_why = fmt::format(
                "{} at micro-batch {}, as asked (its most tokens/s per GPU "
                "that fits)",
                variant_name(*it), it->micro_batch);
        } else {
            chosen.options.micro_batch = 1;
            d.chosen_why = fmt::format(
                "NOTHING FITS with {}, not even micro-batch 1; it is shown at micro-batch 1",
                spec.name());
        }
    } else if (!d.recommendation.ranked.empty()) {
        const Candidate& best = d.recommendation.ranked.front();
        chosen.options.micro_batch = best.micro_batch;
        chosen.options.grad_accumulation = best.grad_accumulation;
        chosen.context.offload_checkpoints = best.offload;
        spec = best.strategy;
        d.chosen_why = fmt::format(
            "{} at micro-batch {}: recommend's best (the most tokens/s "
            "per GPU that fits)",
            variant_name(best), best.micro_batch);
    } else {
        // Nothing fits: the leanest of the strategies at micro-batch 1.
        chosen.options.micro_batch = 1;
        spec = request.strategies.front();
        std::uint64_t leanest = UINT64_MAX;
        for (const StrategyCurve& c : d.curves)
            if (!c.points.empty() && c.points.front().peak_bytes < leanest) {
                leanest = c.points.front().peak_bytes;
                spec = c.strategy;
            }
        d.chosen_why =
            fmt::format("NOTHING FITS; {} at micro-batch 1, the leanest, is shown", spec.name());
    }
    say(fmt::format("report: planning {} at micro-batch {}", spec.name(),
                    chosen.options.micro_batch));
    d.chosen_question = chosen;
    d.chosen = evaluate_chosen(spec);

    // (c) the frontier at that micro-batch, and where the heuristics land.
    d.frontier =
        pareto_frontier(chosen, [&](std::string_view what, std::size_t done, std::size_t total) {
            say(fmt::format("report: pareto {} [{}/{}]", what, done, total));
        });
    for (const StrategySpec& s : request.strategies) {
        if (s.kind == StrategyKind::optimal) continue;  // the frontier is optimal's
        const Evaluation& e = evaluate_chosen(s);
        d.heuristics.push_back({s.name(), e.result.peak_bytes, e.result.step_time_s});
    }

    // (d)
    d.plan_dot = plan_dot(chosen, {d.chosen}, false, false);
    return d;
}

std::vector<Figure> report_figures(const ReportData& d) {
    std::vector<Figure> figures;
    const std::uint64_t capacity = d.question.context.capacity_bytes;

    // (a) The seed's chart, for this question.
    Figure a;
    a.id = "memory_vs_micro_batch";
    a.title = fmt::format("Peak memory vs micro-batch: {} on {}", d.question.model.name,
                          d.question.gpu.name);
    a.x_title = "micro-batch size (sequences per GPU)";
    a.y_title = "peak memory per GPU (GiB)";
    a.x_axis = Axis::log2;
    double x_lo = 1, x_hi = 1;
    for (const StrategyCurve& c : d.curves) {
        Series s = make_series(c.strategy.name(), strategy_color(c.strategy.name()));
        for (const CurvePoint& p : c.points) {
            s.x.push_back(static_cast<double>(p.micro_batch));
            s.y.push_back(in_gib(p.peak_bytes));
            s.hover.push_back(fmt::format(
                "{}, micro-batch {}: peak {} ({}){}", c.strategy.name(), p.micro_batch,
                format_bytes(p.peak_bytes), p.fits ? "fits" : "does not fit",
                p.fits ? fmt::format(", {:.0f} tokens/s per GPU", p.tokens_per_s) : std::string()));
            x_hi = std::max(x_hi, static_cast<double>(p.micro_batch));
        }
        a.series.push_back(std::move(s));
    }
    // Each strategy's largest micro-batch that fits, ringed.
    for (const StrategyCurve& c : d.curves) {
        const std::uint64_t m = c.max.max_micro_batch;
        const auto p = std::find_if(c.points.begin(), c.points.end(),
                                    [&](const CurvePoint& x) { return x.micro_batch == m; });
        if (m == 0 || p == c.points.end()) continue;
        Series ring = make_series(fmt::format("{}: largest that fits", c.strategy.name()),
                                  strategy_color(c.strategy.name()), SeriesKind::markers);
        ring.in_legend = false;
        ring.marker_size = 8;
        ring.hollow = true;
        ring.x = {static_cast<double>(m)};
        ring.y = {in_gib(p->peak_bytes)};
        ring.hover = {
            fmt::format("{}: largest micro-batch that fits: {}{} (peak {})", c.strategy.name(), m,
                        c.max.search_limit_reached ? " or more" : "", format_bytes(p->peak_bytes))};
        a.series.push_back(std::move(ring));
        if (d.curves.size() <= 3 || c.strategy.kind == StrategyKind::none ||
            c.strategy.name() == d.chosen.plan.strategy)
            a.notes.push_back({static_cast<double>(m), in_gib(p->peak_bytes),
                               fmt::format("{}: max {}", c.strategy.name(), m),
                               strategy_color(c.strategy.name())});
    }
    Series limit = make_series(fmt::format("GPU memory limit ({})", format_bytes(capacity)),
                               std::string(capacity_color), SeriesKind::line);
    limit.dashed = true;
    limit.x = {x_lo, x_hi};
    limit.y = {in_gib(capacity), in_gib(capacity)};
    a.series.push_back(std::move(limit));
    figures.push_back(std::move(a));

    // (b) The chosen plan's memory over one step, stacked by category.
    const SimResult& r = d.chosen.result;
    Figure b;
    b.id = "timeline";
    b.title = fmt::format("Memory over one step: {} at micro-batch {} (peak {} of {})",
                          d.chosen.plan.strategy, d.chosen_question.options.micro_batch,
                          format_bytes(r.peak_bytes), format_bytes(capacity));
    b.x_title = "schedule actions (F: forward, R: recompute, B: backward), in order";
    b.y_title = "memory at the action's high-water mark (GiB)";
    b.x_axis = Axis::categorical;
    // One bar per action; past max_timeline_bars, each bar is the highest of a run of actions.
    const std::size_t n_actions = r.timeline.size();
    const std::size_t per_bar =
        std::max<std::size_t>(1, (n_actions + max_timeline_bars - 1) / max_timeline_bars);
    std::vector<const TimelinePoint*> shown;
    for (std::size_t first = 0; first < n_actions; first += per_bar) {
        const std::size_t last = std::min(n_actions, first + per_bar) - 1;
        const TimelinePoint* top = &r.timeline[first];
        for (std::size_t i = first; i <= last; ++i)
            if (r.timeline[i].peak_bytes > top->peak_bytes) top = &r.timeline[i];
        shown.push_back(top);
        b.x_labels.push_back(first == last ? top->action
                                           : fmt::format("{}..{}", r.timeline[first].action,
                                                         r.timeline[last].action));
    }
    if (per_bar > 1)
        b.x_title += fmt::format(" ({} actions, each bar the highest of {})", n_actions, per_bar);
    struct Band {
        std::string name, color;
        std::uint64_t Breakdown::*field;
    };
    const Band bands[] = {
        {"parameters", "#4c6ef5", &Breakdown::parameters_bytes},
        {"optimizer state", "#82c91e", &Breakdown::optimizer_bytes},
        {"gradients", "#15aabf", &Breakdown::gradients_bytes},
        {"unsharded parameters", "#fab005", &Breakdown::unsharded_parameters_bytes},
        {"activations", "#fa5252", &Breakdown::activations_bytes},
        {"temporaries", "#be4bdb", &Breakdown::temporaries_bytes},
    };
    for (const Band& band : bands) {
        Series s = make_series(band.name, band.color, SeriesKind::bar);
        for (std::size_t i = 0; i < shown.size(); ++i) {
            const TimelinePoint& t = *shown[i];
            const std::uint64_t v = t.at_peak.*band.field;
            s.x.push_back(static_cast<double>(i));
            s.y.push_back(in_gib(v));
            s.hover.push_back(fmt::format("{}: {} {} (action's peak {})", t.action, band.name,
                                          format_bytes(v), format_bytes(t.peak_bytes)));
        }
        b.series.push_back(std::move(s));
    }
    Series reserve = make_series("reserve", "#ced4da", SeriesKind::bar);
    for (std::size_t i = 0; i < shown.size(); ++i) {
        reserve.x.push_back(static_cast<double>(i));
        reserve.y.push_back(in_gib(r.at_peak.reserve_bytes));
        reserve.hover.push_back(fmt::format("reserve {} (CUDA context, workspaces, fragmentation)",
                                            format_bytes(r.at_peak.reserve_bytes)));
    }
    b.series.push_back(std::move(reserve));
    for (std::size_t i = 0; i < shown.size(); ++i)
        if (shown[i]->peak_bytes == r.allocator_peak_bytes) {
            b.notes.push_back(
                {static_cast<double>(i), in_gib(r.peak_bytes),
                 fmt::format("peak {} at {}{}", format_bytes(r.peak_bytes), r.peak_action,
                             r.peak_op.empty() ? "" : " (" + r.peak_op + ")")});
            break;
        }
    figures.push_back(std::move(b));

    // (c) The frontier, the heuristics, the limit.
    Figure c;
    c.id = "pareto";
    c.title = fmt::format("Memory/time frontier at micro-batch {}",
                          d.chosen_question.options.micro_batch);
    c.x_title = "peak memory per GPU (GiB)";
    c.y_title = "step time (ms)";
    c.y_from_zero = false;
    Series frontier = make_series("optimal (the frontier)", strategy_color("optimal"));
    double t_hi = 0;
    for (const ParetoPoint& p : d.frontier.points) {
        frontier.x.push_back(in_gib(p.peak_bytes));
        frontier.y.push_back(p.step_time_s * 1e3);
        frontier.hover.push_back(fmt::format("{}: peak {}, step {}, {:.0f} tokens/s per GPU",
                                             p.source, format_bytes(p.peak_bytes),
                                             format_seconds(p.step_time_s), p.tokens_per_s));
        t_hi = std::max(t_hi, p.step_time_s * 1e3);
    }
    c.series.push_back(std::move(frontier));
    for (const HeuristicPoint& h : d.heuristics) {
        Series s = make_series(h.strategy, strategy_color(h.strategy), SeriesKind::markers);
        s.marker_size = 6;
        s.x = {in_gib(h.peak_bytes)};
        s.y = {h.step_time_s * 1e3};
        s.hover = {fmt::format("{}: peak {}, step {}", h.strategy, format_bytes(h.peak_bytes),
                               format_seconds(h.step_time_s))};
        t_hi = std::max(t_hi, h.step_time_s * 1e3);
        c.series.push_back(std::move(s));
    }
    Series chosen = make_series(fmt::format("chosen: {}", d.chosen.plan.strategy), "#212529",
                                SeriesKind::markers);
    chosen.marker_size = 9;
    chosen.hollow = true;
    chosen.x = {in_gib(r.peak_bytes)};
    chosen.y = {r.step_time_s * 1e3};
    chosen.hover = {fmt::format("chosen: {}, peak {}, step {}", d.chosen.plan.strategy,
                                format_bytes(r.peak_bytes), format_seconds(r.step_time_s))};
    c.series.push_back(std::move(chosen));
    Series wall = make_series(fmt::format("GPU memory limit ({})", format_bytes(capacity)),
                              std::string(capacity_color), SeriesKind::line);
    wall.dashed = true;
    double t_lo = t_hi;
    for (const Series& s : c.series)
        for (double y : s.y) t_lo = std::min(t_lo, y);
    wall.x = {in_gib(capacity), in_gib(capacity)};
    wall.y = {t_lo, t_hi};
    c.series.push_back(std::move(wall));
    figures.push_back(std::move(c));
    return figures;
}

json report_plotly(const ReportData& d) {
    json out = json::object();
    for (const Figure& f : report_figures(d)) out[f.id] = to_plotly(f);
    return out;
}

json report_json(const ReportData& d, const CandidateArgs& args) {
    json curves = json::array();
    for (const StrategyCurve& c : d.curves) {
        json points = json::array();
        for (const CurvePoint& p : c.points)
            points.push_back({{"micro_batch", p.micro_batch},
                              {"peak_bytes", p.peak_bytes},
                              {"fits", p.fits},
                              {"tokens_per_s", p.tokens_per_s}});
        curves.push_back({{"strategy", c.strategy.name()},
                          {"max_micro_batch", c.max.max_micro_batch},
                          {"search_limit_reached", c.max.search_limit_reached},
                          {"points", points}});
    }
    json heuristics = json::array();
    for (const HeuristicPoint& h : d.heuristics)
        heuristics.push_back({{"strategy", h.strategy},
                              {"peak_bytes", h.peak_bytes},
                              {"step_time_s", h.step_time_s}});
    return {{"question", question_json(d.question)},
            {"capacity_bytes", d.question.context.capacity_bytes},
            {"memory_vs_micro_batch", curves},
            {"chosen", {{"why", d.chosen_why}, {"plan", plan_json(d.chosen_question, d.chosen)}}},
            {"pareto", pareto_json(d.chosen_question, d.frontier)},
            {"heuristics", heuristics},
            {"recommend", recommend_json(d.question, d.recommendation, args)},
            {"dot", d.plan_dot}};
}

namespace {

constexpr std::string_view page_style = R"(
body { font-family: Helvetica, Arial, sans-serif; color: #212529; margin: 0; background: #f8f9fa; }
header, section, footer { max-width: 1000px; margin: 0 auto; padding: 12px 24px; }
header { padding-top: 24px; }
h1 { font-size: 24px; margin: 0 0 8px 0; }
h2 { font-size: 18px; margin: 8px 0; }
section { background: white; border: 1px solid #dee2e6; border-radius: 6px; margin-bottom: 16px; }
p { line-height: 1.45; }
.question { color: #495057; font-size: 14px; }
.verdict { font-size: 16px; }
.fits { color: #2b8a3e; font-weight: bold; }
.nofit { color: #c92a2a; font-weight: bold; }
.figure { overflow-x: auto; }
.figure svg { max-width: 100%; height: auto; }
#plan .figure svg { max-height: 900px; width: auto; }
table { border-collapse: collapse; font-size: 13px; width: 100%; }
th, td { border-bottom: 1px solid #dee2e6; padding: 4px 6px; text-align: right; }
th:nth-child(2), td:nth-child(2), td.cmd { text-align: left; }
td.cmd code { font-size: 11px; color: #495057; word-break: break-all; }
.chart .point:hover, .chart .bar:hover { stroke: #212529; stroke-width: 2; }
#tip { position: fixed; pointer-events: none; background: #212529; color: white; padding: 4px 8px;
       border-radius: 4px; font-size: 12px; display: none; max-width: 420px; }
nav a { margin-right: 12px; color: #1c7ed6; }
footer { color: #868e96; font-size: 12px; }
)";

// First in <head>: every error and console.error from here on is kept for the page's own check.
constexpr std::string_view error_capture = R"(
window.rematErrors = [];
window.addEventListener('error', function (e) { window.rematErrors.push(String(e.message)); });
(function () {
  var original = console.error;
  console.error = function () {
    window.rematErrors.push(Array.prototype.join.call(arguments, ' '));
    original.apply(console, arguments);
  };
})();
)";

// The fast tooltip, and the check: every figure present, drawn, with a size; the result in
// body[data-check] ("ok: 4 figures" or what is wrong) for tests/report_browser_test.sh.
constexpr std::string_view page_script = R"(
(function () {
  var tip = document.getElementById('tip');
  document.addEventListener('mousemove', function (e) {
    var t = e.target.closest ? e.target.closest('[data-tip]') : null;
    if (!t || !t.getAttribute('data-tip')) { tip.style.display = 'none'; return; }
    tip.textContent = t.getAttribute('data-tip');
    tip.style.left = (e.clientX + 14) + 'px';
    tip.style.top = (e.clientY + 14) + 'px';
    tip.style.display = 'block';
  });
  var problems = [];
  var figures = document.querySelectorAll('.figure');
  figures.forEach(function (f) {
    var svg = f.querySelector('svg');
    if (!svg) { problems.push(f.id + ': no svg'); return; }
    var box = svg.getBoundingClientRect();
    if (!(box.width > 0 && box.height > 0)) problems.push(f.id + ': empty box');
    var need = f.getAttribute('data-needs');
    var n = svg.querySelectorAll(need).length;
    if (n === 0) problems.push(f.id + ': nothing drawn (' + need + ')');
    f.setAttribute('data-drawn', String(n));
  });
  if (figures.length !== 4) problems.push(figures.length + ' figures, not 4');
  if (window.rematErrors.length) problems.push('errors: ' + window.rematErrors.join(' | '));
  document.body.setAttribute('data-check',
      problems.length ? 'FAIL: ' + problems.join('; ') : 'ok: ' + figures.length + ' figures');
})();
)";

std::string cell(const std::string& text) { return "<td>" + escape_xml(text) + "</td>"; }

std::string recommend_table(const ReportData& d, const CandidateArgs& args) {
    const Recommendation& r = d.recommendation;
    if (r.ranked.empty())
        return "<p class=\"nofit\">NOTHING FITS: not even micro-batch 1 with full recomputation "
               "and offload. Shard further (--sharding fsdp --world-size N), shorten --seq, or use "
               "a larger GPU.</p>\n";
    const auto top = best_per_variant(r);
    const Candidate& best = *top.front();
    std::string o = fmt::format(
        "<p>{} configurations planned and replayed; the peak must stay within {}. The best "
        "micro-batch of each strategy, fastest first:</p>\n<table>\n<tr><th>rank</th>"
        "<th>strategy</th><th>micro-batch</th><th>accumulation</th><th>peak</th>"
        "<th>recompute</th><th>step time</th><th>tokens/s per GPU</th><th>vs #1</th></tr>\n",
        r.evaluated, format_bytes(r.budget_bytes));
    for (std::size_t i = 0; i < top.size(); ++i) {
        const Candidate& c = *top[i];
        o += "<tr>" + cell(std::to_string(i + 1)) + cell(variant_name(c)) +
             cell(std::to_string(c.micro_batch)) + cell(std::to_string(c.grad_accumulation)) +
             cell(format_bytes(c.peak_bytes)) +
             cell(fmt::format("{:.1f}%", c.recompute_share * 100)) +
             cell(format_seconds(c.step_time_s)) + cell(fmt::format("{:.0f}", c.tokens_per_s)) +
             cell(fmt::format("{:+.1f}%", (c.tokens_per_s / best.tokens_per_s - 1) * 100)) +
             "</tr>\n";
        o += fmt::format(
            "<tr><td></td><td class=\"cmd\" colspan=\"8\">{}<br><code>remat plan {}</code></td>"
            "</tr>\n",
            escape_xml(i == 0 ? std::string("the most tokens/s per GPU that fits") : why(c, best)),
            escape_xml(fmt::format("{}", fmt::join(args(c), " "))));
    }
    return o + "</table>\n";
}

std::string figure_div(const std::string& id, const std::string& svg, const char* needs) {
    return fmt::format("<div class=\"figure\" id=\"figure-{}\" data-needs=\"{}\">\n{}</div>\n", id,
                       needs, svg);
}

}  // namespace

std::string report_html(const ReportData& d, const CandidateArgs& args,
                        const std::string& command) {
    const std::vector<Figure> figures = report_figures(d);
    const SimResult& r = d.chosen.result;
    const std::string question = question_title(d.question, false);
    std::string o = "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n";
    o += fmt::format("<title>remat report: {} on {}</title>\n", escape_xml(d.question.model.name),
                     escape_xml(d.question.gpu.name));
    o += fmt::format("<script>{}</script>\n<style>{}</style>\n</head>\n<body>\n", error_capture,
                     page_style);
    o += fmt::format("<header>\n<h1>remat report: {} on {}</h1>\n<p class=\"question\">{}</p>\n",
                     escape_xml(d.question.model.name), escape_xml(d.question.gpu.name),
                     escape_xml(question));
    o += fmt::format(
        "<p class=\"verdict\">Chosen plan: <b>{}</b>. Peak {} of {}: <span class=\"{}\">{}</span>; "
        "step time {} ({:.0f} tokens/s per GPU).</p>\n",
        escape_xml(d.chosen_why), format_bytes(r.peak_bytes),
        format_bytes(d.question.context.capacity_bytes), d.chosen.fits ? "fits" : "nofit",
        d.chosen.fits ? "fits" : "DOES NOT FIT", format_seconds(r.step_time_s), r.tokens_per_s);
    o += "<nav><a href=\"#memory\">memory vs micro-batch</a><a href=\"#timeline\">one step</a>"
         "<a href=\"#pareto\">memory/time frontier</a><a href=\"#plan\">the plan</a>"
         "<a href=\"#recommend\">recommendations</a></nav>\n</header>\n";

    o += "<section id=\"memory\">\n<h2>(a) Peak memory against micro-batch, every strategy</h2>\n";
    o += "<p>Each line is one strategy's predicted peak per GPU (reserve included) as the "
         "micro-batch grows; the dashed line is the GPU's memory. A ring marks each strategy's "
         "largest micro-batch that fits. Hover a point for its numbers.</p>\n";
    o += figure_div("memory", to_svg(figures[0]), "circle.point");
    o += "</section>\n";

    o += fmt::format(
        "<section id=\"timeline\">\n<h2>(b) Memory over one step: {} at micro-batch {}</h2>\n",
        escape_xml(d.chosen.plan.strategy), d.chosen_question.options.micro_batch);
    o += "<p>One bar per action of the schedule, at that action's high-water mark, stacked by "
         "what the bytes are. The reserve (CUDA context, workspaces, fragmentation margin) sits "
         "outside the allocator. `remat plan --memory-snapshot FILE.pickle` writes the same step "
         "for PyTorch's memory viewer.</p>\n";
    o += figure_div("timeline", to_svg(figures[1], 960, 480), "rect.bar");
    o += "</section>\n";

    o += fmt::format(
        "<section id=\"pareto\">\n<h2>(c) Memory/time frontier at micro-batch {}</h2>\n",
        d.chosen_question.options.micro_batch);
    o += fmt::format(
        "<p>Every schedule no other beats on both peak and step time (the optimal planner's "
        "frontier, {} points), the heuristics where they land, and the chosen plan ringed.</p>\n",
        d.frontier.points.size());
    o += figure_div("pareto", to_svg(figures[2]), "circle.point");
    o += "</section>\n";

    o += "<section id=\"plan\">\n<h2>(d) The plan</h2>\n<p>What each stage keeps after its "
         "forward; runs of identical blocks are drawn once (`remat dot` writes this figure's "
         "DOT).</p>\n";
    o += figure_div("plan", dot_to_svg(d.plan_dot), "g.node");
    o += "</section>\n";

    o += "<section id=\"recommend\">\n<h2>(e) Recommended configurations</h2>\n";
    o += recommend_table(d, args);
    o += "</section>\n";

    o += fmt::format(
        "<footer>Made by <code>{}</code>. Predictions, not measurements: `remat "
        "run` and `remat validate` hold them against real execution.</footer>\n",
        escape_xml(command));
    o +=
        fmt::format("<div id=\"tip\"></div>\n<script>{}</script>\n</body>\n</html>\n", page_script);
    return o;
}

}  // namespace remat::cli
