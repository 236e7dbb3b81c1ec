// remat: plans activation checkpointing, predicts per-GPU peak memory, finds the largest
// micro-batch, draws the plan, and runs plans on real blocks to check the predictions. Thin
// glue: every decision lives in planner/, every execution in runtime/.
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <cctype>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <unistd.h>

#include "planner/config/checked.hpp"
#include "planner/dot/dot.hpp"
#include "planner/config/error.hpp"
#include "planner/config/units.hpp"
#include "runtime/devices.hpp"
#include "tools/calibrate.hpp"
#include "tools/cli_options.hpp"
#include "tools/report.hpp"
#include "tools/report_run.hpp"
#include "tools/validation.hpp"

namespace {

using namespace remat;
using namespace remat::cli;

void print_json(const nlohmann::json& j) { std::cout << j.dump(2) << "\n"; }


// Progress on stderr while a command works, only when stderr is a terminal and the answer is
// not --json (pipes and scripts stay clean); each show() rewrites the line, and the line is
// cleared when the Progress goes out of scope.
class Progress {
public:
    explicit Progress(bool json) : on_(!json && isatty(STDERR_FILENO)) {}
    Progress(const Progress&) = delete;
    Progress& operator=(const Progress&) = delete;
    ~Progress() {
        if (width_) std::cerr << "\r" << std::string(width_, ' ') << "\r" << std::flush;
    }
    explicit operator bool() const { return on_; }
    void show(const std::string& line) {
        std::cerr << "\r" << line << std::string(width_ > line.size() ? width_ - line.size() : 0, ' ') << std::flush;
        width_ = std::max(width_, line.size());
    }

private:
    bool on_;
    std::size_t width_ = 0;
};

int run_plan(const CommonArgs& a, const std::string& strategy, bool saved, bool schedule, bool timeline) {
    Question q = make_question(a);
    const StrategySpec spec = parse_strategy(strategy);
    validate_strategy(spec, q.model.n_layers);
    Progress progress(a.json);
    if (progress && spec.kind == StrategyKind::optimal)
        q.context.progress = [&](std::size_t done, std::size_t total) {
            progress.show(fmt::format("optimal: subproblem {}/{}", done, total));
        };
    const Evaluation e = evaluate(q, spec);
    if (a.json) {
        auto j = plan_json(q, e);
        if (saved) j["saved"] = saved_json(e.chain);
        print_json(j);
    } else {
        std::cout << plan_text(q, e, saved, schedule, timeline);
    }
    return 0;
}

int run_max_batch(const CommonArgs& a, const std::string& strategies, bool micro_batch_given) {
    if (micro_batch_given) throw InputError("remat max-batch searches the micro-batch; drop --micro-batch");
    const Question q = make_question(a);
    // `all` is every strategy that applies to this model (every-4 and segments-4 need 4 blocks);
    // a strategy named on its own must apply.
    auto specs = parse_strategy_list(strategies);
    if (strategies == "all")
        std::erase_if(specs, [&](const StrategySpec& s) { return !strategy_applies(s, q.model.n_layers); });
    for (const auto& s : specs) validate_strategy(s, q.model.n_layers);
    std::vector<MaxBatch> results;
    {
        Progress progress(a.json);
        for (std::size_t k = 0; k < specs.size(); ++k) {
            if (progress) progress.show(fmt::format("searching {} [{}/{}]", specs[k].name(), k + 1, specs.size()));
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

int run_recommend(const CommonArgs& a, bool micro_batch_given, std::optional<std::int64_t> global_batch) {
    if (micro_batch_given) throw InputError("remat recommend searches the micro-batch; drop --micro-batch");
    if (a.offload_checkpoints)
        throw InputError("remat recommend tries every strategy with and without offload; drop --offload-checkpoints");
    const Question q = make_question(a);
    RecommendOptions options;
    if (global_batch) {
        if (*global_batch <= 0)
            throw InputError(fmt::format("--global-batch {} must be a positive integer", *global_batch));
        if (a.grad_accumulation != 1)
            throw InputError("--global-batch sets the gradient accumulation per micro-batch; drop --grad-accumulation");
        options.global_batch = static_cast<std::uint64_t>(*global_batch);
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
    auto args = [&](const Candidate& c) {
        return plan_args(a, q, c.micro_batch, c.grad_accumulation, c.strategy.name(), c.offload);
    };
    if (a.json)
        print_json(recommend_json(q, r, args));
    else
        std::cout << recommend_text(q, r, options.global_batch, args);
    return r.ranked.empty() ? 3 : 0;
}

int run_dot(const CommonArgs& a, const std::string& strategies, const std::string& output, bool ops) {
    if (a.json) throw InputError("remat dot writes DOT, not JSON; drop --json (use `remat plan --json` for data)");
    const Question q = make_question(a);
    const auto specs = parse_strategy_list(strategies);
    Chain chain = build_chain(q.model, q.options);
    PlanContext ctx = q.context;
    ctx.gpu = &q.gpu;
    std::vector<Plan> plans;
    for (const auto& s : specs) plans.push_back(make_plan(chain, s, ctx));
    DotOptions options;
    options.ops = ops;
    if (output.empty()) {
        write_dot(std::cout, chain, plans, options);
        return 0;
    }
    std::ofstream out(output);
    if (!out) throw InputError(fmt::format("-o '{}': cannot open for writing", output));
    write_dot(out, chain, plans, options);
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
    for (const auto& x : backends) std::cout << fmt::format("  {:<6} {}\n", x.name, x.compiled ? "compiled" : "not compiled");
    std::cout << "gpus\n";
    if (gpus.empty()) std::cout << "  none: " << rt::gpu_unavailable_reason() << "\n";
    for (std::size_t k = 0; k < gpus.size(); ++k)
        std::cout << fmt::format("  {}  {}  {}  compute capability {}.{}  driver CUDA {}\n", k, gpus[k].name,
                                 format_bytes(gpus[k].memory_bytes), gpus[k].major, gpus[k].minor, gpus[k].driver);
    return 0;
}

// The runtime's question: fsdp unless --sharding says otherwise, and the profile of the
// device's backend (remat, remat-cuda).
Question runtime_question_from(CommonArgs a, rt::Device device, bool sharding_given, bool profile_given) {
    const std::string own = device == rt::Device::cuda ? "remat-cuda" : "remat";
    if (profile_given && a.profile != own)
        throw InputError(fmt::format("--profile {}: remat run predicts its own runtime (profile {}); drop --profile",
                                     a.profile, own));
    if (!sharding_given) a.sharding = "fsdp";
    a.profile = own;
    return runtime_question(make_question(a), device);
}

struct RunFlags {
    std::string strategy = "none", device = "cpu", memory_cap, data;
    std::int64_t steps = 2;
    std::uint64_t seed = 1234;
    bool check_gradients = false, timeline = false;
};

int run_run(const CommonArgs& a, const RunFlags& f, bool sharding_given, bool profile_given) {
    const rt::Device device = parse_device(f.device);
    const Question q = runtime_question_from(a, device, sharding_given, profile_given);
    const StrategySpec spec = parse_strategy(f.strategy);
    validate_strategy(spec, q.model.n_layers);
    if (f.steps <= 0) throw InputError(fmt::format("--steps {} must be a positive integer", f.steps));
    RunSettings s;
    s.device = device;
    s.steps = static_cast<std::uint64_t>(f.steps);
    s.seed = f.seed;
    s.data_path = f.data;
    s.check_gradients = f.check_gradients;
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
        std::cout << run_text(q, r, s, f.timeline);
    if (r.run.oom) {
        std::cerr << "remat: " << r.run.oom->message << "\n";
        return 3;
    }
    return r.gradients_match.value_or(true) ? 0 : 4;
}

// "1,2,4" -> items, each through `parse`; an empty item is an error.
template <class F>
auto parse_list(const std::string& text, const char* option, F parse) {
    std::vector<decltype(parse(std::string()))> out;
    std::size_t start = 0;
    while (start <= text.size()) {
        const std::size_t comma = std::min(text.find(',', start), text.size());
        const std::string item = text.substr(start, comma - start);
        if (item.empty()) throw InputError(fmt::format("{} '{}': an empty item; use a comma-separated list", option, text));
        out.push_back(parse(item));
        start = comma + 1;
    }
    return out;
}

// Empty fields take the device's defaults: the tiny models' full sweep on the CPU; on CUDA the
// GPU issue's core set (gpt2-xl and llama-1b at sequence 1024, none/full/sqrt, W 1 and 8).
struct ValidateFlags {
    std::string models, strategies, micro_batches, world_sizes, precisions, seqs, output, calibration, device = "cpu",
                gpu = "h100-80gb", attention = "flash";
    std::int64_t steps = 0;
    double tolerance = 0;
    bool json = false;
};

ValidateFlags with_defaults(ValidateFlags f, rt::Device device) {
    const bool cuda = device == rt::Device::cuda;
    auto fill = [](std::string& s, const char* v) {
        if (s.empty()) s = v;
    };
    fill(f.models, cuda ? "gpt2-xl,llama-1b" : "tiny-gpt2,tiny-llama");
    fill(f.strategies, cuda ? "none,full,sqrt" : "all");
    fill(f.micro_batches, cuda ? "1" : "1,2");
    fill(f.world_sizes, cuda ? "1,8" : "1,2,4");
    fill(f.precisions, cuda ? "bf16-mixed" : "fp32,bf16-mixed");
    fill(f.seqs, cuda ? "1024" : "64,256");
    if (f.steps == 0) f.steps = cuda ? 3 : 1;
    if (f.tolerance == 0) f.tolerance = cuda ? 0.02 : 0.01;
    return f;
}

// "NVIDIA H200" -> "nvidia-h200": the name of a validation file.
std::string slug(const std::string& name) {
    std::string out;
    for (char c : name) {
        if (std::isalnum(static_cast<unsigned char>(c)))
            out += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        else if (!out.empty() && out.back() != '-')
            out += '-';
    }
    while (!out.empty() && out.back() == '-') out.pop_back();
    return out;
}

int run_validate(ValidateFlags f) {
    const rt::Device device = parse_device(f.device);
    f = with_defaults(f, device);
    if (device == rt::Device::cuda) {
        const auto gpus = rt::visible_gpus();
        if (gpus.empty()) throw InputError("--device cuda: " + rt::gpu_unavailable_reason() + "; use --device cpu");
        // One file per GPU and attention core: an eager sweep does not overwrite the flash one.
        if (f.output.empty())
            f.output = "docs/validation/" + slug(gpus.front().name) + (f.attention == "eager" ? "-eager" : "") + ".json";
    }
    if (f.steps <= 0) throw InputError(fmt::format("--steps {} must be a positive integer", f.steps));
    if (!(f.tolerance > 0)) throw InputError(fmt::format("--tolerance {} must be a positive fraction, e.g. 0.01", f.tolerance));
    auto positive = [](const char* option) {
        return [option](const std::string& s) -> std::uint64_t {
            const auto v = decimal_count(s);
            if (!v || *v == 0)
                throw InputError(fmt::format("{} {}: use positive decimal integers, e.g. 1,2,4", option, quote(s)));
            return *v;
        };
    };
    const auto models = parse_list(f.models, "--models", [](const std::string& m) { load_model(m); return m; });
    const auto strategies = parse_strategy_list(f.strategies);
    const auto bs = parse_list(f.micro_batches, "--micro-batches", positive("--micro-batches"));
    const auto ws = parse_list(f.world_sizes, "--world-sizes", positive("--world-sizes"));
    const auto ss = parse_list(f.seqs, "--seqs", positive("--seqs"));
    const auto ps = parse_list(f.precisions, "--precisions", parse_precision);
    CommonArgs base_args;
    base_args.model = models.front();
    base_args.sharding = "fsdp";
    base_args.profile = device == rt::Device::cuda ? "remat-cuda" : "remat";
    base_args.calibration = f.calibration;
    base_args.attention = f.attention;
    base_args.gpu = f.gpu;
    const Question base = make_question(base_args);
    std::vector<SweepPoint> points;
    for (const auto& m : models)
        for (const auto& st : strategies) {
            // `all` means every strategy that applies (segments-4 needs 4 blocks); a strategy
            // named on its own must apply to every model.
            try {
                validate_strategy(st, load_model(m).n_layers);
            } catch (const InputError&) {
                if (f.strategies == "all") continue;
                throw;
            }
            for (auto p : ps)
                for (auto w : ws)
                    for (auto b : bs)
                        for (auto seq : ss) points.push_back({m, st, b, w, seq, p});
        }
    std::vector<SweepResult> rows;
    {
        Progress progress(false);  // validate's answer goes to files; the terminal may show progress
        for (std::size_t k = 0; k < points.size(); ++k) {
            if (progress) {
                const std::size_t width = 30, filled = width * k / points.size();
                progress.show(fmt::format("[{}{}] {}/{} {} {}", std::string(filled, '#'),
                                          std::string(width - filled, '.'), k, points.size(), points[k].model,
                                          points[k].strategy.name()));
            }
            rows.push_back(validate_point(base, points[k], static_cast<std::uint64_t>(f.steps), device));
        }
    }
    const auto doc = validate_json(rows, static_cast<std::uint64_t>(f.steps), f.tolerance, device, base.options.attention);
    if (!f.output.empty()) {
        // The JSON, and a markdown table beside it (same name, .md).
        std::ofstream out(f.output);
        if (!out) throw InputError(fmt::format("-o '{}': cannot open for writing", f.output));
        out << doc.dump(2) << "\n";
        const std::string md = f.output.substr(0, f.output.rfind('.')) + ".md";
        std::ofstream table(md);
        if (!table) throw InputError(fmt::format("'{}': cannot open for writing", md));
        table << validate_markdown(rows, doc);
    }
    if (f.json)
        print_json(doc);
    else
        std::cout << validate_text(rows, f.tolerance);
    return doc["worst_error"].get<double>() <= f.tolerance ? 0 : 4;
}

struct CalibrateFlags {
    std::string device = "cpu", precision, output;
    bool json = false;
};

int run_calibrate(const CalibrateFlags& f) {
    rt::CalibrateOptions options;
    options.device = parse_device(f.device);
    if (!f.precision.empty()) options.precisions = {parse_precision(f.precision)};
    // A bad -o fails now rather than after the benchmarks.
    const std::filesystem::path dir = std::filesystem::path(f.output).parent_path();
    if (!dir.empty() && !std::filesystem::is_directory(dir))
        throw InputError(fmt::format("-o '{}': directory '{}' does not exist", f.output, dir.string()));
    const auto t0 = std::chrono::steady_clock::now();
    const Calibration c = to_calibration(rt::measure_device(options));
    save_calibration(c, f.output);
    if (f.json)
        print_json(calibration_json(c));
    else
        std::cout << calibrate_text(c, f.output, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{
        "remat: plan activation checkpointing, predict per-GPU peak memory under mixed precision\n"
        "and FSDP/ZeRO sharding, find the largest micro-batch, and draw the plan.\n\n"
        "examples:\n"
        "  remat models\n"
        "  remat plan --model llama2-7b --sharding fsdp --world-size 8 --strategy sqrt\n"
        "  remat max-batch --model llama2-7b --sharding fsdp --world-size 8 --strategies all\n"
        "  remat recommend --model llama2-7b --sharding fsdp --world-size 8 --global-batch 512\n"
        "  remat pareto --model llama2-7b --sharding fsdp --world-size 8 --micro-batch 8\n"
        "  remat dot --model gpt2 --strategies none,sqrt | dot -Tsvg > plan.svg\n"
        "  remat run --model tiny-gpt2 --world-size 2 --micro-batch 2 --seq 128 --strategy sqrt --check-gradients\n"
        "  remat validate --device cpu\n"
        "  remat calibrate --device cuda -o h200.json && remat plan --model llama2-7b --calibration h200.json\n"
        "  remat devices\n",
        "remat"};
    app.require_subcommand(1);
    app.set_version_flag("--version", "remat 0.1.0");

    CommonArgs common;
    std::string strategy = "none", strategies = "all", output;
    bool saved = false, schedule = false, timeline = false, ops = false, models_json_flag = false;

    auto* models = app.add_subcommand("models", "List the built-in model and GPU presets");
    models->add_flag("--json", models_json_flag, "Machine-readable output");

    bool devices_json = false;
    auto* devices = app.add_subcommand("devices", "List the backends compiled in and the GPUs visible");
    devices->add_flag("--json", devices_json, "Machine-readable output");

    auto* plan = app.add_subcommand("plan", "Predict peak memory, step time and the schedule of one strategy");
    add_common_options(*plan, common);
    plan->add_option("--strategy", strategy,
                     "none | full | every-N | segments-K | sqrt | greedy-budget | selective | optimal")
        ->capture_default_str();
    plan->add_flag("--saved", saved, "List the tensors each stage saves for backward");
    plan->add_flag("--schedule", schedule, "Print the schedule's actions");
    plan->add_flag("--timeline", timeline, "Print live memory after each action");

    auto* max_batch = app.add_subcommand("max-batch", "Largest micro-batch that fits, per strategy");
    add_common_options(*max_batch, common);
    max_batch->add_option("--strategies", strategies, "Comma-separated strategies, or all")->capture_default_str();

    std::optional<std::int64_t> global_batch;
    auto* rec = app.add_subcommand(
        "recommend", "The fastest configuration that fits: every micro-batch x every strategy (+ offload), top five");
    add_common_options(*rec, common);
    rec->add_option("--global-batch", global_batch,
                    "Sequences per optimizer step over all ranks: each micro-batch b accumulates N/(b*W) micro-steps")
        ->check(decimal());

    bool all_points = false;
    auto* pareto = app.add_subcommand(
        "pareto", "The memory/time frontier: every non-dominated (peak, step time) schedule, leanest to none");
    add_common_options(*pareto, common);
    pareto->add_flag("--all", all_points, "Print every point (default: at most 24, evenly spaced)");

    auto* dot = app.add_subcommand("dot", "Draw the plan as Graphviz DOT (blue: kept, red: recomputed)");
    add_common_options(*dot, common);
    dot->add_option("--strategies,--strategy", strategies, "Comma-separated strategies (one cluster each), or all")
        ->capture_default_str();
    dot->add_option("-o,--output", output, "Write to FILE instead of stdout");
    dot->add_flag("--ops", ops, "Expand blocks into their op graphs, saved tensors marked");

    RunFlags run_flags;
    auto* run = app.add_subcommand(
        "run", "Execute a plan on real blocks (W ranks as threads) and hold the measured memory against the prediction");
    add_common_options(*run, common);
    run->add_option("--strategy", run_flags.strategy, "As for plan: none | full | every-N | ... | optimal")
        ->capture_default_str();
    run->add_option("--device", run_flags.device, "cpu (the reference backend, all W ranks) | cuda (rank 0 of W on GPU 0)")
        ->capture_default_str();
    run->add_option("--steps", run_flags.steps, "Optimizer steps to run")->check(decimal())->capture_default_str();
    run->add_option("--seed", run_flags.seed, "Weights, synthetic tokens and dropout masks")
        ->check(decimal())
        ->capture_default_str();
    run->add_option("--data", run_flags.data, "Token file: little-endian int32 ids (default: a synthetic stream)");
    run->add_option("--memory-cap", run_flags.memory_cap,
                    "Cap each rank's allocator, e.g. 64MiB: an allocation beyond it stops the run (exit 3)");
    run->add_flag("--check-gradients", run_flags.check_gradients,
                  "Also run none; losses and every gradient must be bitwise equal (exit 4 if not)");
    run->add_flag("--timeline", run_flags.timeline, "Print predicted and measured bytes for every action");
    run->footer(
        "The run uses --sharding fsdp unless told otherwise (--world-size 1 included). It predicts with --profile remat\n"
        "and no reserve on the CPU, and with --profile remat-cuda and the GPU's reserve on CUDA. Exit codes: 0 done,\n"
        "2 bad input, 3 out of memory under --memory-cap (or, before starting, predicted to need more host memory\n"
        "than this machine has available), 4 gradients differ.");

    ValidateFlags vf;
    auto* validate = app.add_subcommand(
        "validate", "Sweep strategies x micro-batches x world sizes x precisions x sequence lengths: predicted vs measured");
    validate->add_option("--device", vf.device, "cpu | cuda")->capture_default_str();
    validate->add_option("--models", vf.models, "Comma-separated models (cpu: tiny-gpt2,tiny-llama; cuda: gpt2-xl,llama-1b)");
    validate->add_option("--strategies", vf.strategies, "Comma-separated strategies, or all (cpu: all; cuda: none,full,sqrt)");
    validate->add_option("--micro-batches", vf.micro_batches, "Per-rank micro-batches (cpu: 1,2; cuda: 1)");
    validate->add_option("--world-sizes", vf.world_sizes, "fsdp ranks (cpu: 1,2,4 as threads; cuda: 1,8, rank 0 emulated)");
    validate->add_option("--precisions", vf.precisions, "fp32, bf16-mixed (cpu: both; cuda: bf16-mixed)");
    validate->add_option("--seqs", vf.seqs, "Sequence lengths (cpu: 64,256; cuda: 1024)");
    validate->add_option("--steps", vf.steps, "Optimizer steps per run (cpu: 1; cuda: 3)")->check(decimal());
    validate->add_option("--tolerance", vf.tolerance, "Largest relative error that passes, exit 4 beyond (cpu: 0.01; cuda: 0.02)");
    validate->add_option("--gpu", vf.gpu, "GPU preset for the predicted step times, the reserve and MFU's peak")
        ->capture_default_str();
    validate->add_option("--attention", vf.attention, "The blocks' attention core: flash | eager (saves the S x S probabilities)")
        ->capture_default_str();
    validate->add_option("--calibration", vf.calibration,
                         "Predict step times from a `remat calibrate` file (of this device) instead of the GPU preset");
    validate->add_option("-o,--output", vf.output,
                         "Also write the JSON document to FILE and a markdown table beside it (cuda default: "
                         "docs/validation/<gpu>.json, <gpu>-eager.json with --attention eager)");
    validate->add_flag("--json", vf.json, "Print the JSON document instead of the table");

    CalibrateFlags cf;
    auto* calibrate = app.add_subcommand(
        "calibrate", "Measure the device's GEMM, attention and memory rates; write a file for --calibration");
    calibrate->add_option("--device", cf.device, "cpu (one BLAS thread, as each rank of remat run) | cuda (GPU 0)")
        ->capture_default_str();
    calibrate->add_option("--precision", cf.precision, "fp32 | bf16-mixed (default: both)");
    calibrate->add_option("-o,--output", cf.output, "The calibration file to write (JSON, docs/json.md)")->required();
    calibrate->add_flag("--json", cf.json, "Print the file's document instead of the table");

    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForHelp& e) {
        return app.exit(e);
    } catch (const CLI::CallForAllHelp& e) {
        return app.exit(e);
    } catch (const CLI::CallForVersion& e) {
        return app.exit(e);
    } catch (const CLI::ParseError& e) {
        std::cerr << "remat: " << one_line(e.what()) << " (see remat --help)\n";
        return 2;
    }
    try {
        if (*models) {
            if (models_json_flag)
                print_json(models_json());
            else
                std::cout << models_text();
            return 0;
        }
        if (*devices) return run_devices(devices_json);
        if (*plan) return run_plan(common, strategy, saved, schedule, timeline);
        if (*max_batch) return run_max_batch(common, strategies, max_batch->count("--micro-batch") > 0);
        if (*rec) return run_recommend(common, rec->count("--micro-batch") > 0, global_batch);
        if (*pareto) return run_pareto(common, all_points);
        if (*dot) return run_dot(common, strategies, output, ops);
        if (*run) return run_run(common, run_flags, run->count("--sharding") > 0, run->count("--profile") > 0);
        if (*validate) return run_validate(vf);
        if (*calibrate) return run_calibrate(cf);
    } catch (const cli::HostMemoryError& e) {
        std::cerr << "remat: " << one_line(e.what()) << "\n";
        return 3;
    } catch (const SizeOverflow& e) {
        // Sizes grow with the micro-batch and the sequence: name them as the question had them.
        std::cerr << "remat: " << one_line(e.what())
                  << fmt::format("; the question is too large to count (--micro-batch {}, --seq {}); use smaller values",
                                 common.micro_batch, common.seq ? std::to_string(*common.seq) : "defaulting to the model's context")
                  << "\n";
        return 2;
    } catch (const InputError& e) {
        std::cerr << "remat: " << one_line(cli::flagged(e)) << "\n";
        return 2;
    } catch (const std::exception& e) {
        std::cerr << "remat: internal error: " << one_line(e.what()) << "\n";
        return 1;
    }
    return 0;
}
