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
                     "none | full | every-N | segments-K | sqrt | greedy-budget | selective")
        ->capture_default_str();
    plan->add_flag("--saved", saved, "List the tensors each stage saves for backward");
    plan->add_flag("--schedule", schedule, "Print the schedule's actions");
    plan->add_flag("--timeline", timeline, "Print live memory after each action");

    auto* max_batch = app.add_subcommand("max-batch", "Largest micro-batch that fits, per strategy");
    add_common_options(*max_batch, common);
    max_batch->add_option("--strategies", strategies, "Comma-separated strategies, or all")->capture_default_str();

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
