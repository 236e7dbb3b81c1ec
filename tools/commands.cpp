// The bodies of remat's subcommands but validate (tools/validation.cpp): each checks what
// only it refuses, asks the planner (planner/search, planner/dot) or the runtime, and prints.
#include "tools/commands.hpp"

#include <fmt/format.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>

#include "bench/timing.hpp"
#include "planner/config/error.hpp"
#include "planner/config/units.hpp"
#include "runtime/devices.hpp"
#include "tools/calibrate.hpp"
#include "tools/emit_torch.hpp"
#include "tools/html_report.hpp"
#include "tools/memory_snapshot.hpp"
#include "tools/pickle.hpp"
#include "tools/plan_figure.hpp"
#include "tools/progress.hpp"
#include "tools/report.hpp"
#include "tools/report_run.hpp"
#include "tools/validation.hpp"

namespace remat::cli {
namespace {

// The runtime's question: fsdp unless --sharding says otherwise, and the profile of the
// device's backend (remat, remat-cuda).
Question runtime_question_from(CommonArgs a, rt::Device device, bool sharding_given,
                               bool profile_given) {
    const std::string own = device == rt::Device::cuda ? "remat-cuda" : "remat";
    if (profile_given && a.profile != own)
        throw InputError(fmt::format(
            "--profile {}: remat run predicts its own runtime (profile {}); drop --profile",
            a.profile, own));
    if (!sharding_given) a.sharding = "fsdp";
    a.profile = own;
    return runtime_question(make_question(a), device);
}

// A file written whole or not at all, opened now so that a bad path fails before the work (one
// line naming the flag): the bytes go to PATH.part, renamed over PATH by commit(); a command
// that fails before that leaves neither an empty PATH nor a truncated one behind.
class OutputFile {
  public:
    OutputFile(std::string path, std::string flag)
        : path_(std::move(path)), flag_(std::move(flag)), part_(path_ + ".part") {
        out_.open(part_, std::ios::binary);
        if (!out_)
            throw InputError(fmt::format(
                "{} '{}': cannot open for writing (does the directory exist?)", flag_, path_));
    }
    OutputFile(const OutputFile&) = delete;
    OutputFile& operator=(const OutputFile&) = delete;
    ~OutputFile() {
        if (committed_) return;
        out_.close();
        std::error_code ignored;
        std::filesystem::remove(part_, ignored);
    }
    std::ostream& stream() { return out_; }
    void commit() {
        out_.close();
        if (!out_)
            throw InputError(fmt::format("{} '{}': the write failed (disk full?)", flag_, path_));
        std::error_code ec;
        std::filesystem::rename(part_, path_, ec);
        if (ec)
            throw InputError(
                fmt::format("{} '{}': cannot replace it: {}", flag_, path_, ec.message()));
        committed_ = true;
    }

  private:
    std::string path_, flag_, part_;
    std::ofstream out_;
    bool committed_ = false;
};

// The `remat plan` arguments that reproduce a candidate of q (recommend's and report's rows).
CandidateArgs candidate_args(const CommonArgs& a, const Question& q) {
    return [&a, &q](const Candidate& c) {
        return plan_args(a, q, c.micro_batch, c.grad_accumulation, c.strategy.name(), c.offload);
    };
}

}  // namespace

int run_models(bool json) {
    if (json)
        print_json(models_json());
    else
        std::cout << models_text();
    return 0;
}

int run_devices(bool json) {
    const auto backends = rt::backends();
    const auto gpus = rt::visible_gpus();
    if (json) {
        nlohmann::json b = nlohmann::json::array(), g = nlohmann::json::array();
        for (const auto& x : backends) b.push_back({{"name", x.name}, {"compiled", x.compiled}});
        for (const auto& x : gpus)
            g.push_back({{"name", x.name},
                         {"memory_bytes", x.memory_bytes},
                         {"compute_capability", fmt::format("{}.{}", x.major, x.minor)},
                         {"driver", x.driver}});
        print_json({{"backends", b}, {"gpus", g}});
        return 0;
    }
    std::cout << "backends\n";
    for (const auto& x : backends)
        std::cout << fmt::format("  {:<6} {}\n", x.name, x.compiled ? "compiled" : "not compiled");
    std::cout << "gpus\n";
    if (gpus.empty()) std::cout << "  none: " << rt::gpu_unavailable_reason() << "\n";
    for (std::size_t k = 0; k < gpus.size(); ++k)
        std::cout << fmt::format("  {}  {}  {}  compute capability {}.{}  driver CUDA {}\n", k,
                                 gpus[k].name, format_bytes(gpus[k].memory_bytes), gpus[k].major,
                                 gpus[k].minor, gpus[k].driver);
    return 0;
}

int run_plan(const CommonArgs& a, const PlanFlags& f) {
    if (!f.emit.empty() && f.emit != "torch")
        throw InputError(
            fmt::format("--emit {}: the one target is torch (--emit torch)", quote(f.emit)));
    if (!f.emit.empty() && a.json)
        throw InputError("--emit torch prints Python, --json prints JSON: choose one");
    Question q = make_question(a);
    const StrategySpec spec = parse_strategy(f.strategy);
    validate_strategy(spec, q.model.n_layers);
    // A bad path fails before the planning, not after.
    std::optional<OutputFile> snapshot;
    if (!f.memory_snapshot.empty()) snapshot.emplace(f.memory_snapshot, "--memory-snapshot");
    Progress progress(a.json);
    if (progress && spec.kind == StrategyKind::optimal)
        q.context.progress = [&](std::size_t done, std::size_t total) {
            progress.show(fmt::format("optimal: subproblem {}/{}", done, total));
        };
    const Evaluation e = evaluate(q, spec);
    if (snapshot) {
        const SimResult traced =
            simulate_traced(e.chain, e.plan, q.gpu, q.context.reserve, q.context.time_model);
        snapshot->stream() << to_pickle(memory_snapshot(e.chain, traced, e.plan.strategy));
        snapshot->commit();
    }
    if (!f.emit.empty()) {
        std::cout << torch_code(q, e);
    } else if (a.json) {
        auto j = plan_json(q, e);
        if (f.saved) j["saved"] = saved_json(e.chain);
        print_json(j);
    } else {
        std::cout << plan_text(q, e, f.saved, f.schedule, f.timeline);
        if (!f.memory_snapshot.empty())
            std::cout << fmt::format(
                "\nmemory snapshot written to {}: open it at https://pytorch.org/memory_viz "
                "(Active Memory Timeline)\n",
                f.memory_snapshot);
    }
    return 0;
}

int run_max_batch(const CommonArgs& a, const std::string& strategies, bool micro_batch_given) {
    if (micro_batch_given)
        throw InputError("remat max-batch searches the micro-batch; drop --micro-batch");
    const Question q = make_question(a);
    const auto specs = strategies_for(strategies, q.model.n_layers);
    std::vector<MaxBatch> results;
    {
        Progress progress(a.json);
        for (std::size_t k = 0; k < specs.size(); ++k) {
            if (progress)
                progress.show(
                    fmt::format("searching {} [{}/{}]", specs[k].name(), k + 1, specs.size()));
            results.push_back(max_micro_batch(q, specs[k]));
        }
    }
    if (a.json)
        print_json(max_batch_json(q, results));
    else
        std::cout << max_batch_text(q, results);
    return 0;
}

int run_pareto(const CommonArgs& a, bool all_points) {
    const Question q = make_question(a);
    ParetoFrontier f;
    {
        Progress progress(a.json);
        ParetoProgress shown;
        if (progress)
            shown = [&](std::string_view what, std::size_t done, std::size_t total) {
                progress.show(fmt::format("pareto: {} [{}/{}]", what, done, total));
            };
        f = pareto_frontier(q, shown);
    }
    if (a.json)
        print_json(pareto_json(q, f));
    else
        std::cout << pareto_text(q, f, all_points);
    return 0;
}

namespace {

int run_gpus(const CommonArgs& a, const Question& q, std::uint64_t max_gpus,
             std::optional<Sharding> only, const RecommendOptions& base) {
    GpuCountSweep s;
    {
        Progress progress(a.json);
        RecommendOptions options = base;
        if (progress)
            options.progress = [&](std::size_t done, std::size_t total) {
                progress.show(fmt::format("GPU counts x shardings [{}/{}]", done, total));
            };
        s = gpus_needed(q, max_gpus, only, options);
    }
    auto args = [&](const Question& t, const Candidate& c) {
        return plan_args(a, t, c.micro_batch, c.grad_accumulation, c.strategy.name(), c.offload);
    };
    if (a.json)
        print_json(gpus_json(q, s, args));
    else
        std::cout << gpus_text(q, s, max_gpus, args);
    return s.fewest ? 0 : 3;
}

}  // namespace

int run_recommend(const CommonArgs& a, bool micro_batch_given,
                  std::optional<std::int64_t> global_batch, const GpuCountFlags& gpus) {
    if (micro_batch_given)
        throw InputError("remat recommend searches the micro-batch; drop --micro-batch");
    if (a.offload_checkpoints)
        throw InputError(
            "remat recommend tries every strategy with and without offload; drop "
            "--offload-checkpoints");
    const Question q = make_question(a);
    RecommendOptions options;
    if (global_batch) {
        if (*global_batch <= 0)
            throw InputError(
                fmt::format("--global-batch {} must be a positive integer", *global_batch));
        if (a.grad_accumulation != 1)
            throw InputError(
                "--global-batch sets the gradient accumulation per micro-batch; drop "
                "--grad-accumulation");
        options.global_batch = static_cast<std::uint64_t>(*global_batch);
    }
    if (gpus.max_gpus) {
        if (*gpus.max_gpus <= 0)
            throw InputError(fmt::format(
                "--max-gpus {} must be a positive integer (the largest world size to try)",
                *gpus.max_gpus));
        if (gpus.world_size_given)
            throw InputError(
                "--max-gpus tries world sizes 1, 2, 4, 8, 16, 24, ...; drop --world-size");
        std::optional<Sharding> only;
        if (gpus.sharding_given) only = q.options.sharding;
        return run_gpus(a, q, static_cast<std::uint64_t>(*gpus.max_gpus), only, options);
    }
    Recommendation r;
    {
        Progress progress(a.json);
        if (progress)
            options.progress = [&](std::size_t done, std::size_t total) {
                progress.show(fmt::format("planning strategies [{}/{}]", done, total));
            };
        r = recommend(q, options);
    }
    const CandidateArgs args = candidate_args(a, q);
    if (a.json)
        print_json(recommend_json(q, r, args));
    else
        std::cout << recommend_text(q, r, options.global_batch, args);
    return r.ranked.empty() ? 3 : 0;
}

int run_dot(const CommonArgs& a, const std::string& strategies, const std::string& output,
            const DotFlags& flags) {
    if (a.json)
        throw InputError(
            "remat dot writes DOT, not JSON; drop --json (use `remat plan --json` for data)");
    const Question q = make_question(a);
    const auto specs = strategies_for(strategies, q.model.n_layers);
    std::vector<Evaluation> evaluations;
    for (const auto& s : specs) evaluations.push_back(evaluate(q, s));
    const std::string text = plan_dot(q, evaluations, flags.ops, flags.transparent);
    if (output.empty()) {
        std::cout << text;
        return 0;
    }
    OutputFile out(output, "-o");
    out.stream() << text;
    out.commit();
    return 0;
}

int run_report(const CommonArgs& a, const ReportFlags& f) {
    if (f.output.empty() && f.plotly.empty() && !a.json)
        throw InputError(
            "remat report writes a file: give -o report.html (and/or --plotly figures.json, or "
            "--json for the data on stdout)");
    if (a.offload_checkpoints)
        throw InputError(
            "remat report tries every strategy with and without offload (as recommend); drop "
            "--offload-checkpoints");
    const Question q = make_question(a);
    ReportRequest request;
    request.strategies = strategies_for(f.strategies, q.model.n_layers);
    if (!f.strategy.empty()) {
        request.strategy = parse_strategy(f.strategy);
        validate_strategy(*request.strategy, q.model.n_layers);
    }
    if (f.micro_batch_given) request.micro_batch = q.options.micro_batch;
    // Bad paths fail now, before the work.
    std::optional<OutputFile> html, plotly;
    if (!f.output.empty()) html.emplace(f.output, "-o");
    if (!f.plotly.empty()) plotly.emplace(f.plotly, "--plotly");

    ReportData d;
    {
        Progress progress(a.json);
        d = gather_report(q, request, [&](const std::string& line) {
            if (progress) progress.show(line);
        });
    }
    const CandidateArgs args = candidate_args(a, q);
    if (html) {
        html->stream() << report_html(d, args, f.command);
        html->commit();
    }
    if (plotly) {
        plotly->stream() << report_plotly(d).dump(1) << "\n";
        plotly->commit();
    }
    if (a.json) {
        print_json(report_json(d, args));
        return 0;
    }
    std::cout << "remat report: " << question_header(q, false);
    std::cout << fmt::format("chosen plan: {}; {}\n", d.chosen_why,
                             peak_verdict(d.chosen_question, d.chosen));
    if (!f.output.empty())
        std::cout << fmt::format(
            "wrote {}: (a) peak vs micro-batch for {} strategies, (b) one step's memory by "
            "category, (c) the memory/time frontier ({} points), (d) the plan, (e) {} "
            "configurations ranked; open it in a browser\n",
            f.output, d.curves.size(), d.frontier.points.size(), d.recommendation.ranked.size());
    if (!f.plotly.empty())
        std::cout << fmt::format(
            "wrote {}: the three charts as Plotly figures ({{data, layout}} "
            "each, keyed memory_vs_micro_batch, timeline, pareto)\n",
            f.plotly);
    return 0;
}

int run_run(const CommonArgs& a, const RunFlags& f, bool sharding_given, bool profile_given) {
    const rt::Device device = parse_device(f.device);
    const Question q = runtime_question_from(a, device, sharding_given, profile_given);
    const StrategySpec spec = parse_strategy(f.strategy);
    validate_strategy(spec, q.model.n_layers);
    if (f.steps <= 0)
        throw InputError(fmt::format("--steps {} must be a positive integer", f.steps));
    RunSettings s;
    s.device = device;
    s.steps = static_cast<std::uint64_t>(f.steps);
    s.seed = f.seed;
    s.data_path = f.data;
    s.check_gradients = f.check_gradients;
    s.time_work = f.work_times;
    if (!f.memory_cap.empty()) s.memory_cap_bytes = parse_bytes(f.memory_cap, "--memory-cap");
    RunReport r;
    {
        Progress progress(a.json);
        if (progress)
            s.progress = [&](std::uint64_t done, std::uint64_t total) {
                progress.show(fmt::format("running step {}/{}", done, total));
            };
        r = run_and_compare(q, spec, s);
    }
    if (a.json)
        print_json(run_json(q, r, s));
    else
        std::cout << run_text(q, r, s, f.timeline, f.work_times);
    if (r.run.oom) {
        std::cerr << "remat: " << r.run.oom->message << "\n";
        return 3;
    }
    return r.gradients_match.value_or(true) ? 0 : 4;
}

int run_calibrate(const CalibrateFlags& f) {
    rt::CalibrateOptions options;
    options.device = parse_device(f.device);
    if (!f.precision.empty()) options.precisions = {parse_precision(f.precision)};
    // A bad -o fails now rather than after the benchmarks.
    const std::filesystem::path dir = std::filesystem::path(f.output).parent_path();
    if (!dir.empty() && !std::filesystem::is_directory(dir))
        throw InputError(
            fmt::format("-o '{}': directory '{}' does not exist", f.output, dir.string()));
    Calibration c;
    const double wall_s = bench::seconds([&] {
        c = to_calibration(rt::measure_device(options));
        save_calibration(c, f.output);
    });
    if (f.json)
        print_json(calibration_json(c));
    else
        std::cout << calibrate_text(c, f.output, wall_s);
    return 0;
}

}  // namespace remat::cli
