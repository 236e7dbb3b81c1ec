#include "tools/report_run.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <map>

#include "planner/config/units.hpp"
#include "runtime/devices.hpp"
#include "tools/report.hpp"

namespace remat::cli {

using nlohmann::json;

namespace {

std::string signed_pct(std::uint64_t measured, std::uint64_t predicted) {
    if (predicted == 0) return measured == 0 ? "+0.00%" : "inf";
    const double e = (static_cast<double>(measured) - static_cast<double>(predicted)) /
                     static_cast<double>(predicted);
    return fmt::format("{:+.2f}%", 100 * e);
}

// The commit of the source tree this binary was built from: asked of git at run time (the
// tree may have moved on since configure), else the configure-time value.
std::string source_commit() {
    std::string out;
    if (FILE* f = popen("git -C '" REMAT_SOURCE_DIR "' rev-parse HEAD 2>/dev/null", "r")) {
        char buf[64] = {};
        if (std::fgets(buf, sizeof buf, f)) out = buf;
        pclose(f);
    }
    while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
    return out.empty() ? REMAT_COMMIT : out;
}

json oom_json(const rt::OomReport& o) {
    return {{"message", o.message},
            {"requested_bytes", o.requested_bytes},
            {"live_bytes", o.live_bytes},
            {"cap_bytes", o.cap_bytes},
            {"action", o.action},
            {"op", o.op},
            {"rank", o.rank}};
}

// What each stage of rank 0 kept after its first forward, as the runtime allocated it.
json saved_json(const RunReport& r) {
    json stages = json::array();
    if (r.run.oom || r.run.ranks.empty()) return stages;
    const auto& saved = r.run.ranks.front().saved;
    for (std::size_t i = 0; i < saved.size(); ++i) {
        json tensors = json::array();
        std::uint64_t total = 0;
        for (const auto& t : saved[i]) {
            tensors.push_back({{"name", t.name},
                               {"shape", t.shape},
                               {"dtype", dtype_name(t.dtype)},
                               {"bytes", t.bytes}});
            total += t.bytes;
        }
        stages.push_back({{"stage", i},
                          {"name", r.prediction.chain.stages[i].name},
                          {"tensors", tensors},
                          {"total_bytes", total}});
    }
    return stages;
}

// The step-time model's seconds for each op's forward ("F name") and backward ("B name"),
// summed over the plan's actions as the replay sums them (recomputations included).
std::map<std::string, double> predicted_work(const Question& q, const Evaluation& e) {
    std::map<std::string, double> out;
    const StepTimeModel tm = for_ranks(q.context.time_model, q.options.world_size);
    for (const Action& a : e.plan.schedule.actions) {
        const StageGraph& g = e.chain.graph_of(a.stage);
        const bool backward = a.kind == ActionKind::B;
        for (OpVertex v : g.order()) {
            const Op& op = g.op(v);
            if (a.kind == ActionKind::R_sel && !op.attention_core) continue;
            out[(backward ? "B " : "F ") + op.name] +=
                op_time_s(op, backward, q.gpu, q.options.precision, tm);
        }
    }
    for (const CollectiveTotal& t : e.result.collectives)
        out[t.kind == Collective::all_gather       ? "all_gather"
            : t.kind == Collective::reduce_scatter ? "reduce_scatter"
                                                   : "all_reduce"] += t.seconds;
    out["optimizer"] = StepTerms(e.chain).optimizer_step_s(q.gpu, tm);
    return out;
}

json work_json(const std::vector<rt::WorkTime>& work) {
    json out = json::array();
    for (const auto& w : work)
        out.push_back({{"what", w.what}, {"seconds", w.seconds}, {"calls", w.calls}});
    return out;
}

}  // namespace

json run_json(const Question& q, const RunReport& r, const RunSettings& s) {
    json ranks = json::array(), timeline = json::array();
    for (std::size_t k = 0; k < r.run.ranks.size(); ++k)
        ranks.push_back({{"rank", k},
                         {"predicted_peak_bytes", r.prediction.result.allocator_peak_bytes},
                         {"measured_peak_bytes", measured_peak(r.run.ranks[k])},
                         {"counted_peak_bytes", r.run.ranks[k].peak_bytes},
                         {"measured_reserved_bytes", r.run.ranks[k].pool_reserved_high_bytes}});
    for (const auto& a : r.timeline)
        timeline.push_back({{"action", a.action},
                            {"predicted_bytes", a.predicted_bytes},
                            {"measured_bytes", a.measured_bytes},
                            {"predicted_peak_bytes", a.predicted_peak_bytes},
                            {"measured_peak_bytes", a.measured_peak_bytes}});
    return {{"question", question_json(q)},
            {"strategy", r.prediction.plan.strategy},
            {"device", device_name(s.device)},
            {"steps", s.steps},
            {"device_overhead_bytes", r.run.device_overhead_bytes},
            {"seed", s.seed},
            {"memory_cap_bytes", s.memory_cap_bytes},
            {"ranks", ranks},
            {"timeline", timeline},
            {"worst_peak_error", r.run.oom ? json(nullptr) : json(r.worst_peak_error())},
            {"worst_action_error", r.run.oom ? json(nullptr) : json(r.worst_action_error())},
            {"losses", r.run.losses},
            {"seconds", r.run.seconds},
            {"tokens_per_s", r.run.tokens_per_s},
            {"step_seconds", r.run.step_seconds},
            {"step_host_contention", step_contention(r.run)},
            {"predicted_step_time_s", r.prediction.result.step_time_s},
            {"work", work_json(r.run.work)},
            {"gradients_match", r.gradients_match ? json(*r.gradients_match) : json(nullptr)},
            {"gradient_difference",
             r.gradient_difference.empty() ? json(nullptr) : json(r.gradient_difference)},
            {"oom", r.run.oom ? oom_json(*r.run.oom) : json(nullptr)},
            {"saved", saved_json(r)}};
}

std::string run_text(const Question& q, const RunReport& r, const RunSettings& s, bool timeline,
                     bool work_times) {
    const auto& o = q.options;
    std::string out = fmt::format(
        "remat run: {} ({} params), micro-batch {} x seq {} per rank, {}, fsdp x{}, strategy {}, "
        "{}, {} step{}\n",
        q.model.name, fmt::group_digits(parameter_count(q.model)), o.micro_batch, o.seq,
        precision_name(o.precision), o.world_size, r.prediction.plan.strategy,
        device_name(s.device), s.steps, s.steps == 1 ? "" : "s");
    if (r.run.oom) return out;  // the out-of-memory line goes to stderr
    out += "\nrank  predicted peak   measured peak     error\n";
    for (std::size_t k = 0; k < r.run.ranks.size(); ++k)
        out += fmt::format(
            "{:>4}  {:>14}  {:>14}  {:>8}\n", k,
            format_bytes(r.prediction.result.allocator_peak_bytes),
            format_bytes(measured_peak(r.run.ranks[k])),
            signed_pct(measured_peak(r.run.ranks[k]), r.prediction.result.allocator_peak_bytes));
    if (s.device == rt::Device::cuda)
        out += fmt::format(
            "(the pool's used high-water mark over all steps; pool reserved {}; rank 0 of {} runs, "
            "its\n"
            "collectives emulated; context and libraries held {} before the first allocation,\n"
            "against a predicted reserve of {} + {} + {:.0f}% fragmentation)\n",
            format_bytes(r.run.ranks.front().pool_reserved_high_bytes), o.world_size,
            format_bytes(r.run.device_overhead_bytes),
            format_bytes(q.context.reserve.cuda_context_bytes),
            format_bytes(q.context.reserve.workspace_bytes), 100 * q.context.reserve.fragmentation);
    else
        out +=
            "(allocator-visible bytes, the peak over all steps; on the CPU the prediction has no "
            "reserve)\n";
    if (timeline) {
        out +=
            "\naction           predicted live   measured live   predicted peak   measured peak\n";
        for (const auto& a : r.timeline)
            out += fmt::format("{:<14} {:>16} {:>15} {:>16} {:>15}\n", a.action,
                               format_bytes(a.predicted_bytes), format_bytes(a.measured_bytes),
                               format_bytes(a.predicted_peak_bytes),
                               format_bytes(a.measured_peak_bytes));
    }
    out += fmt::format(
        "\n{} actions on rank 0: worst error {:.3f}% (live after and peak during each action){}\n",
        r.timeline.size(), 100 * r.worst_action_error(), timeline ? "" : "; --timeline lists them");
    std::string losses;
    for (double l : r.run.losses) losses += fmt::format(" {:.6f}", l);
    out += fmt::format("losses (mean over the global batch, per step):{}\n", losses);
    out += fmt::format("{:.0f} tokens/s per rank ({:.3f} s for {} steps)\n", r.run.tokens_per_s,
                       r.run.seconds, s.steps);
    if (r.run.step_seconds.size() > 1) {
        const SteadyStep steady = steady_step(r.run);
        out += fmt::format(
            "step time: predicted {}{}, measured {} (the fastest step after the first{})\n",
            format_seconds(r.prediction.result.step_time_s),
            q.context.time_model.fp32_measured || q.context.time_model.bf16_measured
                ? " from the calibration"
                : " from the --gpu preset (pass --calibration for this device's)",
            format_seconds(steady.seconds),
            r.run.step_probe_s.empty() ? ""
            : steady.uncontended
                ? " that the host ran at full speed"
                : "; the host slowed every step: run more --steps, or again later");
    }
    if (work_times && !r.run.work.empty()) {
        double total = 0, predicted_total = 0;
        const auto predicted = predicted_work(q, r.prediction);
        for (const auto& w : r.run.work) total += w.seconds;
        for (const auto& [what, sec] : predicted) predicted_total += sec;
        out += fmt::format(
            "\nwork on rank 0 in the last step ({:.2f} ms timed, each op between two "
            "synchronizations;\npredicted: the step-time model's ops, {:.2f} ms):\n"
            "{:<28} {:>6} {:>10} {:>7} {:>12}\n",
            1e3 * total, 1e3 * predicted_total, "what", "calls", "ms", "share", "predicted ms");
        for (const auto& w : r.run.work) {
            const auto p = predicted.find(w.what);
            out += fmt::format("{:<28} {:>6} {:>10.3f} {:>6.1f}% {:>12}\n", w.what, w.calls,
                               1e3 * w.seconds, total > 0 ? 100 * w.seconds / total : 0.0,
                               p == predicted.end() ? "-" : fmt::format("{:.3f}", 1e3 * p->second));
        }
    }
    if (r.gradients_match)
        out += *r.gradients_match
                   ? "gradients and losses: bitwise equal to none's\n"
                   : "gradients and losses differ from none's: " + r.gradient_difference + "\n";
    return out;
}

json validate_json(const std::vector<SweepResult>& rows, std::uint64_t steps, double tolerance,
                   rt::Device device, Attention attention) {
    json runs = json::array();
    double worst = 0;
    for (const auto& r : rows) {
        worst = std::max({worst, r.peak_error, r.action_error});
        runs.push_back({{"model", r.point.model},
                        {"strategy", r.strategy},
                        {"micro_batch", r.point.micro_batch},
                        {"world_size", r.point.world_size},
                        {"seq", r.point.seq},
                        {"precision", precision_name(r.point.precision)},
                        {"budget_bytes", r.budget_bytes ? json(r.budget_bytes) : json(nullptr)},
                        {"predicted_peak_bytes", r.predicted_peak_bytes},
                        {"measured_peak_bytes", r.measured_peak_bytes},
                        {"peak_error", r.peak_error},
                        {"action_error", r.action_error},
                        {"measured_reserved_bytes", r.measured_reserved_bytes},
                        {"predicted_step_time_s", r.predicted_step_time_s},
                        {"measured_step_time_s", r.measured_step_time_s},
                        {"step_error", r.step_error},
                        {"step_uncontended", r.step_uncontended},
                        {"attempts", r.attempts},
                        {"tokens_per_s", r.tokens_per_s},
                        {"model_flops", r.model_flops},
                        {"mfu", device == rt::Device::cuda ? json(r.mfu) : json(nullptr)}});
    }
    std::string gpu = "cpu", driver;
    if (device == rt::Device::cuda)
        if (const auto gpus = rt::visible_gpus(); !gpus.empty()) {
            gpu = gpus.front().name;
            driver = gpus.front().driver;
        }
    auto summary = [&] {
        const StepTimeSummary t = step_time_summary(rows);
        return json{{"runs", t.runs},
                    {"within_15_percent", t.within_15},
                    {"slowed_by_host", t.slowed},
                    {"reruns", t.reruns},
                    {"median_abs_error", t.median},
                    {"p90_abs_error", t.p90},
                    {"worst_abs_error", t.worst},
                    {"spearman_all_runs", t.spearman_all},
                    {"spearman_strategies_mean", t.spearman_strategies}};
    };
    return {{"device", device_name(device)},
            {"step_time", summary()},
            {"gpu", gpu},
            {"driver", driver.empty() ? json(nullptr) : json(driver)},
            {"commit", source_commit()},
            {"attention", attention_name(attention)},
            {"steps", steps},
            {"tolerance", tolerance},
            {"worst_error", worst},
            {"runs", runs}};
}

namespace {

std::string step_time_line(const std::vector<SweepResult>& rows) {
    const StepTimeSummary t = step_time_summary(rows);
    if (!t.runs) return {};
    return fmt::format(
        "step time: |error| median {:.1f}%, p90 {:.1f}%, worst {:.1f}%; {} of {} within 15%; "
        "rank correlation (Spearman) {:.3f} over all runs, {:.3f} among the strategies of a "
        "model, B, W, S and precision; {} run(s) measured only while the host slowed the cores, "
        "{} rerun(s)\n",
        100 * t.median, 100 * t.p90, 100 * t.worst, t.within_15, t.runs, t.spearman_all,
        t.spearman_strategies, t.slowed, t.reruns);
}

}  // namespace

std::string validate_text(const std::vector<SweepResult>& rows, double tolerance) {
    std::string out =
        "model       strategy        B  W     S  precision   predicted peak   measured peak   peak "
        "err  action err  pred step  meas step  step err\n";
    double worst = 0;
    const SweepResult* worst_row = nullptr;
    for (const auto& r : rows) {
        const double e = std::max(r.peak_error, r.action_error);
        if (!worst_row || e > worst) {
            worst = e;
            worst_row = &r;
        }
        out += fmt::format(
            "{:<11} {:<14} {:>2} {:>2} {:>5}  {:<10} {:>15} {:>15} {:>9.3f}% {:>10.3f}% {:>10} "
            "{:>10} {:>+8.1f}%{}\n",
            r.point.model, r.strategy, r.point.micro_batch, r.point.world_size, r.point.seq,
            precision_name(r.point.precision), format_bytes(r.predicted_peak_bytes),
            format_bytes(r.measured_peak_bytes), 100 * r.peak_error, 100 * r.action_error,
            format_seconds(r.predicted_step_time_s), format_seconds(r.measured_step_time_s),
            100 * r.step_error, r.step_uncontended ? "" : " slowed");
    }
    if (worst_row)
        out += fmt::format(
            "\n{} runs; worst relative error {:.3f}% ({} {} B={} W={} S={} {}), tolerance {:.1f}%: "
            "{}\n",
            rows.size(), 100 * worst, worst_row->point.model, worst_row->strategy,
            worst_row->point.micro_batch, worst_row->point.world_size, worst_row->point.seq,
            precision_name(worst_row->point.precision), 100 * tolerance,
            worst <= tolerance ? "pass" : "FAIL");
    out += step_time_line(rows);
    return out;
}

std::string validate_markdown(const std::vector<SweepResult>& rows, const nlohmann::json& doc) {
    std::string out = fmt::format("# Validation on {} ({})\n\n", doc["gpu"].get<std::string>(),
                                  doc["device"].get<std::string>());
    out += fmt::format(
        "Commit `{}`{}, {} step(s) per run, tolerance {:.1f}%: worst error {:.3f}%. Peaks are "
        "allocator-visible ({}); MFU counts 6·P·tokens + 12·L·H·S·tokens FLOPs against the GPU "
        "preset's peak. JSON beside this file.\n\n",
        doc["commit"].get<std::string>(),
        doc["driver"].is_null() ? std::string()
                                : ", driver CUDA " + doc["driver"].get<std::string>(),
        doc["steps"].get<std::uint64_t>(), 100 * doc["tolerance"].get<double>(),
        100 * doc["worst_error"].get<double>(),
        doc["device"] == "cuda" ? "the CUDA pool's used high-water mark"
                                : "the counting allocator's");
    const std::string steps = step_time_line(rows);
    if (!steps.empty())
        out +=
            "Step time: the prediction against the fastest step after the first that the host ran "
            "at full speed (runtime/host_speed.hpp; a run whose every step it slowed is run again, "
            "up to 3 times, and its error is marked *slowed*).\n\n" +
            steps + "\n";
    out +=
        "| model | strategy | B | W | S | precision | predicted peak | measured peak | reserved | "
        "error | "
        "predicted step | measured step | step error | tokens/s | MFU |\n";
    out +=
        "| --- | --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | "
        "---: | ---: |\n";
    for (const auto& r : rows)
        out += fmt::format(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.3f}% | {:.4f} s | {:.4f} s "
            "| {:+.1f}%{} | {:.0f} | {} |\n",
            r.point.model, r.strategy, r.point.micro_batch, r.point.world_size, r.point.seq,
            precision_name(r.point.precision), format_bytes(r.predicted_peak_bytes),
            format_bytes(r.measured_peak_bytes),
            r.measured_reserved_bytes ? format_bytes(r.measured_reserved_bytes) : std::string("-"),
            100 * std::max(r.peak_error, r.action_error), r.predicted_step_time_s,
            r.measured_step_time_s, 100 * r.step_error, r.step_uncontended ? "" : " *slowed*",
            r.tokens_per_s, r.mfu > 0 ? fmt::format("{:.1f}%", 100 * r.mfu) : std::string("-"));
    return out;
}

}  // namespace remat::cli
