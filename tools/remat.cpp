// remat: plans activation checkpointing, predicts per-GPU peak memory, finds the largest
// micro-batch, draws the plan, and runs plans on real blocks to check the predictions. Thin
// glue: every decision lives in planner/, every execution in runtime/. This file holds the
// options and their help; each subcommand's body is in tools/commands.cpp (validate's sweep in
// tools/validation.cpp).
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <iostream>

#include "planner/config/checked.hpp"
#include "planner/config/error.hpp"
#include "tools/cli_options.hpp"
#include "tools/commands.hpp"
#include "tools/validation.hpp"

namespace {

using namespace remat;
using namespace remat::cli;

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
        "  remat report --model llama2-7b --sharding fsdp --world-size 8 -o report.html\n"
        "  remat run --model tiny-gpt2 --world-size 2 --micro-batch 2 --seq 128 --strategy sqrt "
        "--check-gradients\n"
        "  remat validate --device cpu\n"
        "  remat calibrate --device cuda -o h200.json && remat plan --model llama2-7b "
        "--calibration h200.json\n"
        "  remat devices\n",
        "remat"};
    app.require_subcommand(1);
    app.set_version_flag("--version", "remat 0.1.0");

    CommonArgs common;
    std::string strategies = "all", output;
    bool models_json_flag = false;

    auto* models = app.add_subcommand("models", "List the built-in model and GPU presets");
    models->add_flag("--json", models_json_flag, "Machine-readable output");

    bool devices_json = false;
    auto* devices =
        app.add_subcommand("devices", "List the backends compiled in and the GPUs visible");
    devices->add_flag("--json", devices_json, "Machine-readable output");

    PlanFlags plan_flags;
    auto* plan = app.add_subcommand(
        "plan", "Predict peak memory, step time and the schedule of one strategy");
    add_common_options(*plan, common);
    plan->add_option(
            "--strategy", plan_flags.strategy,
            "none | full | every-N | segments-K | sqrt | greedy-budget | selective | optimal")
        ->capture_default_str();
    plan->add_flag("--saved", plan_flags.saved, "List the tensors each stage saves for backward");
    plan->add_flag("--schedule", plan_flags.schedule, "Print the schedule's actions");
    plan->add_flag("--timeline", plan_flags.timeline, "Print live memory after each action");
    plan->add_option("--emit", plan_flags.emit,
                     "torch: print the Python lines that apply this plan to a model "
                     "(python/remat_torch, the bridge)");
    plan->add_option("--memory-snapshot", plan_flags.memory_snapshot,
                     "Also write the predicted step as a PyTorch memory snapshot (FILE.pickle, "
                     "as torch.cuda.memory._dump_snapshot writes): open it in PyTorch's viewer, "
                     "https://pytorch.org/memory_viz, beside a measured one");

    auto* max_batch =
        app.add_subcommand("max-batch", "Largest micro-batch that fits, per strategy");
    add_common_options(*max_batch, common);
    max_batch->add_option("--strategies", strategies, "Comma-separated strategies, or all")
        ->capture_default_str();

    std::optional<std::int64_t> global_batch;
    auto* rec = app.add_subcommand("recommend",
                                   "The fastest configuration that fits: every micro-batch x every "
                                   "strategy (+ offload), top five");
    add_common_options(*rec, common);
    rec->add_option("--global-batch", global_batch,
                    "Sequences per optimizer step over all ranks: each micro-batch b accumulates "
                    "N/(b*W) micro-steps")
        ->check(decimal());
    GpuCountFlags gpu_counts;
    rec->add_option("--max-gpus", gpu_counts.max_gpus,
                    "How many GPUs: try world sizes 1, 2, 4, 8, 16, 24, ... up to N, every "
                    "sharding (or the --sharding given); print the fastest layout per count and "
                    "the fewest GPUs that fit")
        ->check(decimal());

    bool all_points = false;
    auto* pareto = app.add_subcommand("pareto",
                                      "The memory/time frontier: every non-dominated (peak, step "
                                      "time) schedule, leanest to none");
    add_common_options(*pareto, common);
    pareto->add_flag("--all", all_points, "Print every point (default: at most 24, evenly spaced)");

    DotFlags dot_flags;
    auto* dot = app.add_subcommand(
        "dot",
        "Draw the plan as Graphviz DOT: blue kept whole, violet checkpoint (input kept, stage "
        "recomputed), red discarded (recomputed); runs of identical blocks folded");
    add_common_options(*dot, common);
    dot->add_option("--strategies,--strategy", strategies,
                    "Comma-separated strategies (one cluster each), or all")
        ->capture_default_str();
    dot->add_option("-o,--output", output, "Write to FILE instead of stdout");
    dot->add_flag("--ops", dot_flags.ops,
                  "Expand the first blocks into their op graphs, saved tensors marked");
    dot->add_flag("--transparent", dot_flags.transparent,
                  "No background (default: white, so the figure reads on any page)");

    ReportFlags report_flags;
    auto* report = app.add_subcommand(
        "report",
        "One self-contained HTML page: peak vs micro-batch for every strategy against the GPU's "
        "limit, the chosen plan's memory over one step, the memory/time frontier, the plan drawn, "
        "and recommend's table");
    add_common_options(*report, common);
    report->add_option("-o,--output", report_flags.output, "The HTML file to write");
    report->add_option("--plotly", report_flags.plotly,
                       "Also write the charts as Plotly JSON (FILE), for your own dashboards");
    report
        ->add_option("--strategies", report_flags.strategies,
                     "Comma-separated strategies for the curves, or all")
        ->capture_default_str();
    report->add_option("--strategy", report_flags.strategy,
                       "Show this strategy's plan (default: recommend's best; with "
                       "--micro-batch, the fastest at that micro-batch)");
    report->footer(
        "Without --micro-batch and --strategy the plan shown is recommend's best. --json prints "
        "the numbers behind\n"
        "every figure. Progress goes to stderr when it is a terminal.\n"
        "example:\n"
        "  remat report --model llama2-7b --sharding fsdp --world-size 8 -o report.html");

    RunFlags run_flags;
    auto* run = app.add_subcommand("run",
                                   "Execute a plan on real blocks (W ranks as threads) and hold "
                                   "the measured memory against the prediction");
    add_common_options(*run, common);
    run->add_option("--strategy", run_flags.strategy,
                    "As for plan: none | full | every-N | ... | optimal")
        ->capture_default_str();
    run->add_option("--device", run_flags.device,
                    "cpu (the reference backend, all W ranks) | cuda (rank 0 of W on GPU 0)")
        ->capture_default_str();
    run->add_option("--steps", run_flags.steps, "Optimizer steps to run")
        ->check(decimal())
        ->capture_default_str();
    run->add_option("--seed", run_flags.seed, "Weights, synthetic tokens and dropout masks")
        ->check(decimal())
        ->capture_default_str();
    run->add_flag(
        "--work-times", run_flags.work_times,
        "Time rank 0's every op, collective and optimizer step (synchronized around each) "
        "and list where the last step's time went");
    run->add_option("--data", run_flags.data,
                    "Token file: little-endian int32 ids (default: a synthetic stream)");
    run->add_option(
        "--memory-cap", run_flags.memory_cap,
        "Cap each rank's allocator, e.g. 64MiB: an allocation beyond it stops the run (exit 3)");
    run->add_flag("--check-gradients", run_flags.check_gradients,
                  "Also run none; losses and every gradient must be bitwise equal (exit 4 if not)");
    run->add_flag("--timeline", run_flags.timeline,
                  "Print predicted and measured bytes for every action");
    run->footer(
        "The run uses --sharding fsdp unless told otherwise (--world-size 1 included). It predicts "
        "with --profile remat\n"
        "and no reserve on the CPU, and with --profile remat-cuda and the GPU's reserve on CUDA. "
        "Exit codes: 0 done,\n"
        "2 bad input, 3 out of memory under --memory-cap (or, before starting, predicted to need "
        "more host memory\n"
        "than this machine has available), 4 gradients differ.");

    ValidateFlags vf;
    auto* validate = app.add_subcommand("validate",
                                        "Sweep strategies x micro-batches x world sizes x "
                                        "precisions x sequence lengths: predicted vs measured");
    validate->add_option("--device", vf.device, "cpu | cuda")->capture_default_str();
    validate->add_option(
        "--models", vf.models,
        "Comma-separated models (cpu: tiny-gpt2,tiny-llama; cuda: gpt2-xl,llama-1b)");
    validate->add_option("--strategies", vf.strategies,
                         "Comma-separated strategies, or all (cpu: all; cuda: none,full,sqrt)");
    validate->add_option("--micro-batches", vf.micro_batches,
                         "Per-rank micro-batches (cpu: 1,2; cuda: 1)");
    validate->add_option("--world-sizes", vf.world_sizes,
                         "fsdp ranks (cpu: 1,2,4 as threads; cuda: 1,8, rank 0 emulated)");
    validate->add_option("--precisions", vf.precisions,
                         "fp32, bf16-mixed (cpu: both; cuda: bf16-mixed)");
    validate->add_option("--seqs", vf.seqs, "Sequence lengths (cpu: 64,256; cuda: 1024)");
    validate->add_option("--steps", vf.steps, "Optimizer steps per run (cpu: 1; cuda: 3)")
        ->check(decimal());
    validate->add_option(
        "--tolerance", vf.tolerance,
        "Largest relative error that passes, exit 4 beyond (cpu: 0.01; cuda: 0.02)");
    validate
        ->add_option("--gpu", vf.gpu,
                     "GPU preset for the predicted step times, the reserve and MFU's peak")
        ->capture_default_str();
    validate
        ->add_option("--attention", vf.attention,
                     "The blocks' attention core: flash | eager (saves the S x S probabilities)")
        ->capture_default_str();
    validate->add_option("--calibration", vf.calibration,
                         "Predict step times from a `remat calibrate` file (of this device) "
                         "instead of the GPU preset");
    validate->add_option(
        "-o,--output", vf.output,
        "Also write the JSON document to FILE and a markdown table beside it (cuda default: "
        "docs/validation/<gpu>.json, <gpu>-eager.json with --attention eager)");
    validate->add_flag("--json", vf.json, "Print the JSON document instead of the table");

    CalibrateFlags cf;
    auto* calibrate = app.add_subcommand(
        "calibrate",
        "Measure the device's GEMM, attention and memory rates; write a file for --calibration");
    calibrate
        ->add_option("--device", cf.device,
                     "cpu (one BLAS thread, as each rank of remat run) | cuda (GPU 0)")
        ->capture_default_str();
    calibrate->add_option("--precision", cf.precision, "fp32 | bf16-mixed (default: both)");
    calibrate
        ->add_option("-o,--output", cf.output, "The calibration file to write (JSON, docs/json.md)")
        ->required();
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
        if (*models) return run_models(models_json_flag);
        if (*devices) return run_devices(devices_json);
        if (*plan) return run_plan(common, plan_flags);
        if (*max_batch)
            return run_max_batch(common, strategies, max_batch->count("--micro-batch") > 0);
        if (*rec) {
            gpu_counts.world_size_given = rec->count("--world-size") > 0;
            gpu_counts.sharding_given = rec->count("--sharding") > 0;
            return run_recommend(common, rec->count("--micro-batch") > 0, global_batch, gpu_counts);
        }
        if (*pareto) return run_pareto(common, all_points);
        if (*report) {
            report_flags.micro_batch_given = report->count("--micro-batch") > 0;
            report_flags.command = "remat";
            for (int k = 1; k < argc; ++k) report_flags.command += std::string(" ") + argv[k];
            return run_report(common, report_flags);
        }
        if (*dot) return run_dot(common, strategies, output, dot_flags);
        if (*run)
            return run_run(common, run_flags, run->count("--sharding") > 0,
                           run->count("--profile") > 0);
        if (*validate) return run_validate(vf);
        if (*calibrate) return run_calibrate(cf);
    } catch (const cli::HostMemoryError& e) {
        std::cerr << "remat: " << one_line(e.what()) << "\n";
        return 3;
    } catch (const SizeOverflow& e) {
        // Sizes grow with the micro-batch and the sequence: name them as the question had them.
        std::cerr << "remat: " << one_line(e.what())
                  << fmt::format(
                         "; the question is too large to count (--micro-batch {}, --seq {}); use "
                         "smaller values",
                         common.micro_batch,
                         common.seq ? std::to_string(*common.seq)
                                    : "defaulting to the model's context")
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
