// remat: plans activation checkpointing, predicts per-GPU peak memory, finds the largest
// micro-batch, draws the plan. Thin glue: every decision lives in planner/.
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <fstream>
#include <iostream>
#include <unistd.h>

#include "planner/dot.hpp"
#include "planner/error.hpp"
#include "tools/cli_options.hpp"
#include "tools/report.hpp"

namespace {

using namespace remat;
using namespace remat::cli;

void print_json(const nlohmann::json& j) { std::cout << j.dump(2) << "\n"; }

int run_plan(const CommonArgs& a, const std::string& strategy, bool saved, bool schedule, bool timeline) {
    const Question q = make_question(a);
    const StrategySpec spec = parse_strategy(strategy);
    validate_strategy(spec, q.model.n_layers);
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

int run_max_batch(const CommonArgs& a, const std::string& strategies) {
    const Question q = make_question(a);
    const auto specs = parse_strategy_list(strategies);
    for (const auto& s : specs) validate_strategy(s, q.model.n_layers);
    std::vector<MaxBatch> results;
    // Progress on a terminal only; pipes and --json stay clean.
    const bool progress = !a.json && isatty(STDERR_FILENO);
    for (std::size_t k = 0; k < specs.size(); ++k) {
        if (progress)
            std::cerr << fmt::format("\rsearching {:<16} [{}/{}]", specs[k].name(), k + 1, specs.size()) << std::flush;
        results.push_back(max_micro_batch(q, specs[k]));
    }
    if (progress) std::cerr << "\r" << std::string(40, ' ') << "\r" << std::flush;
    if (a.json)
        print_json(max_batch_json(q, results));
    else
        std::cout << max_batch_text(q, results);
    return 0;
}

int run_pareto(const CommonArgs& a, bool all_points) {
    const Question q = make_question(a);
    const ParetoFrontier f = pareto_frontier(q);
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
    const bool progress = !a.json && isatty(STDERR_FILENO);
    if (progress)
        options.progress = [](std::size_t done, std::size_t total) {
            std::cerr << fmt::format("\rplanning strategies [{}/{}]", done, total) << std::flush;
        };
    const Recommendation r = recommend(q, options);
    if (progress) std::cerr << "\r" << std::string(40, ' ') << "\r" << std::flush;
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
        "  remat dot --model gpt2 --strategies none,sqrt | dot -Tsvg > plan.svg\n",
        "remat"};
    app.require_subcommand(1);
    app.set_version_flag("--version", "remat 0.1.0");

    CommonArgs common;
    std::string strategy = "none", strategies = "all", output;
    bool saved = false, schedule = false, timeline = false, ops = false, models_json_flag = false;

    auto* models = app.add_subcommand("models", "List the built-in model and GPU presets");
    models->add_flag("--json", models_json_flag, "Machine-readable output");

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
                    "Sequences per optimizer step over all ranks: each micro-batch b accumulates N/(b*W) micro-steps");

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

    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForHelp& e) {
        return app.exit(e);
    } catch (const CLI::CallForAllHelp& e) {
        return app.exit(e);
    } catch (const CLI::CallForVersion& e) {
        return app.exit(e);
    } catch (const CLI::ParseError& e) {
        std::cerr << "remat: " << e.what() << " (see remat --help)\n";
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
        if (*plan) return run_plan(common, strategy, saved, schedule, timeline);
        if (*max_batch) return run_max_batch(common, strategies);
        if (*rec) return run_recommend(common, rec->count("--micro-batch") > 0, global_batch);
        if (*pareto) return run_pareto(common, all_points);
        if (*dot) return run_dot(common, strategies, output, ops);
    } catch (const InputError& e) {
        std::cerr << "remat: " << e.what() << "\n";
        return 2;
    } catch (const std::exception& e) {
        std::cerr << "remat: internal error: " << e.what() << "\n";
        return 1;
    }
    return 0;
}
