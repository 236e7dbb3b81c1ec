#include "tools/validation.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>

#include "planner/config/checked.hpp"
#include "planner/config/error.hpp"
#include "planner/config/units.hpp"
#include "planner/simulate/calibration.hpp"
#include "runtime/calibrate.hpp"
#include "runtime/devices.hpp"
#include "runtime/host_memory.hpp"
#include "runtime/host_speed.hpp"
#include "runtime/limits.hpp"
#include "tools/calibrate.hpp"
#include "tools/cli_options.hpp"
#include "tools/progress.hpp"
#include "tools/report.hpp"
#include "tools/report_run.hpp"

namespace remat::cli {
namespace {

double rel(std::uint64_t measured, std::uint64_t predicted) {
    if (predicted == 0) return measured == 0 ? 0.0 : INFINITY;
    return std::fabs(static_cast<double>(measured) - static_cast<double>(predicted)) /
           static_cast<double>(predicted);
}

rt::RunConfig run_config(const Question& q, const Schedule& schedule, const RunSettings& s) {
    rt::RunConfig c;
    c.device = s.device;
    c.model = q.model;
    c.micro_batch = q.options.micro_batch;
    c.seq = q.options.seq;
    c.world = q.options.world_size;
    c.precision = q.options.precision;
    c.attention = q.options.attention;
    c.schedule = schedule;
    c.steps = s.steps;
    c.seed = s.seed;
    c.memory_cap_bytes = s.memory_cap_bytes;
    c.data_path = s.data_path;
    c.probe_host = true;  // CPU only: tells steps timed while the host slowed the cores
    c.progress = s.progress;
    return c;
}

// The first gradient element (or loss) where two runs differ, or empty when they agree bitwise.
std::string first_difference(const rt::RunResult& a, const rt::RunResult& b) {
    for (std::size_t s = 0; s < a.losses.size(); ++s)
        if (a.losses[s] != b.losses[s])
            return fmt::format("step {} loss {:.9g} vs none's {:.9g}", s, a.losses[s], b.losses[s]);
    for (std::size_t s = 0; s < a.grads.size(); ++s)
        for (std::size_t r = 0; r < a.grads[s].size(); ++r)
            for (std::size_t u = 0; u < a.grads[s][r].size(); ++u)
                for (std::size_t j = 0; j < a.grads[s][r][u].size(); ++j)
                    if (a.grads[s][r][u][j] != b.grads[s][r][u][j])
                        return fmt::format(
                            "step {} rank {} unit {} gradient element {}: {:.9g} vs none's {:.9g}",
                            s, r, u, j, a.grads[s][r][u][j], b.grads[s][r][u][j]);
    return {};
}

}  // namespace

std::vector<double> step_contention(const rt::RunResult& run) {
    std::vector<double> out;
    for (double p : run.step_probe_s) out.push_back(rt::host_contention(p));
    return out;
}

SteadyStep steady_step(const rt::RunResult& run) {
    const auto& st = run.step_seconds;
    if (st.empty()) return {};
    const std::size_t first = st.size() < 2 ? 0 : 1;
    const bool probed = run.step_probe_s.size() == st.size();
    SteadyStep any, clean;
    clean.seconds = INFINITY;
    any.seconds = INFINITY;
    for (std::size_t s = first; s < st.size(); ++s) {
        any.seconds = std::min(any.seconds, st[s]);
        if (!probed || rt::uncontended(run.step_probe_s[s]))
            clean.seconds = std::min(clean.seconds, st[s]);
    }
    if (std::isfinite(clean.seconds)) return clean;
    any.uncontended = false;
    return any;
}

std::uint64_t measured_peak(const rt::RankResult& r) {
    return r.pool_used_high_bytes ? r.pool_used_high_bytes : r.peak_bytes;
}

double RunReport::worst_peak_error() const {
    double worst = 0;
    for (const auto& r : run.ranks)
        worst = std::max(worst, rel(measured_peak(r), prediction.result.allocator_peak_bytes));
    return worst;
}

double RunReport::worst_action_error() const {
    double worst = 0;
    for (const auto& a : timeline)
        worst = std::max({worst, rel(a.measured_bytes, a.predicted_bytes),
                          rel(a.measured_peak_bytes, a.predicted_peak_bytes)});
    return worst;
}

rt::Device parse_device(const std::string& name) {
    if (name == "cpu") return rt::Device::cpu;
    if (name == "cuda") return rt::Device::cuda;
    throw InputError(fmt::format("--device '{}': use cpu or cuda", name));
}

std::string_view device_name(rt::Device d) { return d == rt::Device::cuda ? "cuda" : "cpu"; }

Question runtime_question(Question q, rt::Device device) {
    rt::check_run_options(q.options, q.context.offload_checkpoints);
    if (device == rt::Device::cuda) {
        q.options.profile = Profile::remat_cuda;
    } else {
        q.options.profile = Profile::remat;
        q.context.reserve = Reserve{};
    }
    return q;
}

namespace {

void check_host_memory(const Question& q, const Evaluation& prediction, const RunSettings& s) {
    const auto available = rt::host_memory_available_bytes();
    if (!available) return;
    const std::uint64_t peak = prediction.result.allocator_peak_bytes;
    const std::uint64_t per_rank = s.memory_cap_bytes ? std::min(peak, s.memory_cap_bytes) : peak;
    const std::uint64_t need = checked_mul(per_rank, q.options.world_size);
    if (need <= *available) return;
    throw HostMemoryError(fmt::format(
        "the run needs {} of host memory ({} rank{} x {} {}) and this machine has {} available; "
        "use a smaller "
        "--micro-batch, --seq, --world-size or model, or bound each rank with --memory-cap",
        format_bytes(need), q.options.world_size, q.options.world_size == 1 ? "" : "s",
        format_bytes(per_rank), per_rank == peak ? "predicted peak" : "--memory-cap",
        format_bytes(*available)));
}

}  // namespace

RunReport run_and_compare(const Question& q, const StrategySpec& strategy, const RunSettings& s) {
    RunReport report;
    report.prediction = evaluate(q, strategy);
    rt::RunConfig c = run_config(q, report.prediction.plan.schedule, s);
    rt::check_buildable(c.model, {c.micro_batch, c.seq, c.world, c.seed, c.attention});
    if (s.device == rt::Device::cpu) check_host_memory(q, report.prediction, s);
    c.keep_gradients = s.check_gradients;
    c.time_work = s.time_work;
    report.run = rt::run_schedule(c);
    if (report.run.oom) {
        report.run.oom->message =
            flagged(report.run.oom->text);  // the CLI's line names the cap's flag
        return report;
    }
    const auto& predicted = report.prediction.result.timeline;
    const auto& measured = report.run.ranks.front().timeline;
    if (predicted.size() != measured.size())
        throw std::logic_error(fmt::format("prediction has {} actions, the run {}",
                                           predicted.size(), measured.size()));
    for (std::size_t a = 0; a < predicted.size(); ++a)
        report.timeline.push_back({measured[a].action, predicted[a].live_bytes,
                                   measured[a].live_bytes, predicted[a].peak_bytes,
                                   measured[a].peak_bytes});
    if (s.check_gradients) {
        rt::RunConfig reference = run_config(q,
                                             schedule_from_keeps(std::vector<Keep>(
                                                 report.prediction.chain.stages.size(), Keep::all)),
                                             s);
        reference.keep_gradients = true;
        reference.progress = nullptr;
        const rt::RunResult none = rt::run_schedule(reference);
        report.gradient_difference =
            none.oom ? "the `none` reference ran out of memory under --memory-cap"
                     : first_difference(report.run, none);
        report.gradients_match = report.gradient_difference.empty();
    }
    return report;
}

}  // namespace remat::cli

namespace remat::cli {

double model_flops_per_step(const ModelConfig& m, std::uint64_t micro_batch, std::uint64_t seq) {
    const double tokens = flop_product(micro_batch, seq);
    return 6.0 * static_cast<double>(parameter_count(m)) * tokens +
           flop_product(12, m.n_layers, m.hidden, seq) * tokens;
}

SweepResult validate_point(const Question& base, const SweepPoint& p, std::uint64_t steps,
                           rt::Device device, std::uint64_t attempts) {
    Question q = base;
    q.model = load_model(p.model);
    q.options.micro_batch = p.micro_batch;
    q.options.world_size = p.world_size;
    q.options.seq = p.seq;
    q.options.precision = p.precision;
    q = runtime_question(q, device);
    SweepResult r;
    r.point = p;
    if (p.strategy.kind == StrategyKind::greedy_budget ||
        p.strategy.kind == StrategyKind::optimal) {
        const std::uint64_t lo = evaluate(q, parse_strategy("full")).result.peak_bytes;
        const std::uint64_t hi = evaluate(q, parse_strategy("none")).result.peak_bytes;
        q.context.budget_bytes = r.budget_bytes = lo + (hi - lo) / 2;
    }
    RunSettings s;
    s.steps = steps;
    s.device = device;
    // A run whose every step the host slowed (steady_step) measured the neighbour: run it again,
    // up to `attempts` times in all, and keep the fastest step the host ran at full speed. Every
    // run's memory is checked: the errors are the worst of them.
    const RunReport rep = run_and_compare(q, p.strategy, s);
    r.strategy = rep.prediction.plan.strategy;
    r.predicted_peak_bytes = rep.prediction.result.allocator_peak_bytes;
    r.tokens_per_s = rep.run.tokens_per_s;
    SteadyStep steady = steady_step(rep.run);
    auto absorb = [&r](const RunReport& run) {
        for (const auto& rank : run.run.ranks) {
            r.measured_peak_bytes = std::max(r.measured_peak_bytes, measured_peak(rank));
            r.measured_reserved_bytes =
                std::max(r.measured_reserved_bytes, rank.pool_reserved_high_bytes);
        }
        r.peak_error = std::max(r.peak_error, run.worst_peak_error());
        r.action_error = std::max(r.action_error, run.worst_action_error());
    };
    absorb(rep);
    for (r.attempts = 1; !steady.uncontended && r.attempts < attempts && !rep.run.oom;
         ++r.attempts) {
        const RunReport again = run_and_compare(q, p.strategy, s);
        absorb(again);
        const SteadyStep next = steady_step(again.run);
        if (next.uncontended || next.seconds < steady.seconds) {
            steady = next;
            r.tokens_per_s = again.run.tokens_per_s;
        }
    }
    r.predicted_step_time_s = rep.prediction.result.step_time_s;
    r.measured_step_time_s = steady.seconds;
    r.step_uncontended = steady.uncontended;
    if (r.measured_step_time_s > 0)
        r.step_error = (r.predicted_step_time_s - r.measured_step_time_s) / r.measured_step_time_s;
    r.model_flops = model_flops_per_step(q.model, p.micro_batch, p.seq);
    const double peak = p.precision == Precision::fp32 ? q.gpu.fp32_flops : q.gpu.bf16_flops;
    if (device == rt::Device::cuda && r.measured_step_time_s > 0)
        r.mfu = r.model_flops / (r.measured_step_time_s * peak);
    return r;
}

namespace {

// Ranks with ties averaged.
std::vector<double> ranks_of(const std::vector<double>& v) {
    std::vector<std::size_t> idx(v.size());
    for (std::size_t i = 0; i < idx.size(); ++i) idx[i] = i;
    std::sort(idx.begin(), idx.end(), [&](std::size_t a, std::size_t b) { return v[a] < v[b]; });
    std::vector<double> r(v.size());
    for (std::size_t i = 0; i < idx.size();) {
        std::size_t j = i;
        while (j + 1 < idx.size() && v[idx[j + 1]] == v[idx[i]]) ++j;
        for (std::size_t k = i; k <= j; ++k) r[idx[k]] = (static_cast<double>(i + j) / 2) + 1;
        i = j + 1;
    }
    return r;
}

}  // namespace

double spearman(const std::vector<double>& a, const std::vector<double>& b) {
    if (a.size() != b.size() || a.size() < 2) return 1;
    const std::vector<double> ra = ranks_of(a), rb = ranks_of(b);
    const double n = static_cast<double>(a.size()), mean = (n + 1) / 2;
    double num = 0, da = 0, db = 0;
    for (std::size_t i = 0; i < ra.size(); ++i) {
        num += (ra[i] - mean) * (rb[i] - mean);
        da += (ra[i] - mean) * (ra[i] - mean);
        db += (rb[i] - mean) * (rb[i] - mean);
    }
    return da > 0 && db > 0 ? num / std::sqrt(da * db) : 1;
}

StepTimeSummary step_time_summary(const std::vector<SweepResult>& rows) {
    StepTimeSummary s;
    std::vector<double> errors, predicted, measured;
    for (const SweepResult& r : rows) {
        if (!(r.measured_step_time_s > 0)) continue;
        const double e = std::fabs(r.step_error);
        errors.push_back(e);
        s.within_15 += e <= 0.15;
        s.slowed += !r.step_uncontended;
        s.reruns += r.attempts - 1;
        predicted.push_back(r.predicted_step_time_s);
        measured.push_back(r.measured_step_time_s);
    }
    s.runs = errors.size();
    if (errors.empty()) return s;
    std::sort(errors.begin(), errors.end());
    auto quantile = [&](double q) {
        return errors[std::min(errors.size() - 1,
                               static_cast<std::size_t>(q * static_cast<double>(errors.size())))];
    };
    s.median = quantile(0.5);
    s.p90 = quantile(0.9);
    s.worst = errors.back();
    s.spearman_all = spearman(predicted, measured);
    // Per group of the same model, B, W, S and precision: how the strategies rank.
    std::map<std::string, std::pair<std::vector<double>, std::vector<double>>> groups;
    for (const SweepResult& r : rows) {
        if (!(r.measured_step_time_s > 0)) continue;
        auto& g =
            groups[fmt::format("{} {} {} {} {}", r.point.model, r.point.micro_batch,
                               r.point.world_size, r.point.seq, precision_name(r.point.precision))];
        g.first.push_back(r.predicted_step_time_s);
        g.second.push_back(r.measured_step_time_s);
    }
    double sum = 0;
    std::size_t n = 0;
    for (const auto& [key, g] : groups)
        if (g.first.size() >= 3) {
            sum += spearman(g.first, g.second);
            ++n;
        }
    s.spearman_strategies = n ? sum / static_cast<double>(n) : 1;
    return s;
}

namespace {

// "1,2,4" -> items, each through `parse`; an empty item is an error.
template <class F>
auto parse_list(const std::string& text, const char* option, F parse) {
    std::vector<decltype(parse(std::string()))> out;
    std::size_t start = 0;
    while (start <= text.size()) {
        const std::size_t comma = std::min(text.find(',', start), text.size());
        const std::string item = text.substr(start, comma - start);
        if (item.empty())
            throw InputError(
                fmt::format("{} '{}': an empty item; use a comma-separated list", option, text));
        out.push_back(parse(item));
        start = comma + 1;
    }
    return out;
}

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
    // Steps: the first pays first-touch costs, so a step time needs at least two; the fastest of
    // the later ones is the measurement.
    if (f.steps == 0) f.steps = 3;
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

}  // namespace

int run_validate(ValidateFlags f) {
    const rt::Device device = parse_device(f.device);
    f = with_defaults(f, device);
    if (device == rt::Device::cuda) {
        const auto gpus = rt::visible_gpus();
        if (gpus.empty())
            throw InputError("--device cuda: " + rt::gpu_unavailable_reason() +
                             "; use --device cpu");
        // One file per GPU and attention core: an eager sweep does not overwrite the flash one.
        if (f.output.empty())
            f.output = "docs/validation/" + slug(gpus.front().name) +
                       (f.attention == "eager" ? "-eager" : "") + ".json";
    }
    if (f.steps <= 0)
        throw InputError(fmt::format("--steps {} must be a positive integer", f.steps));
    if (!(f.tolerance > 0))
        throw InputError(
            fmt::format("--tolerance {} must be a positive fraction, e.g. 0.01", f.tolerance));
    auto positive = [](const char* option) {
        return [option](const std::string& s) -> std::uint64_t {
            const auto v = decimal_count(s);
            if (!v || *v == 0)
                throw InputError(fmt::format("{} {}: use positive decimal integers, e.g. 1,2,4",
                                             option, quote(s)));
            return *v;
        };
    };
    const auto models = parse_list(f.models, "--models", [](const std::string& m) {
        load_model(m);
        return m;
    });
    const auto strategies = parse_strategy_list(f.strategies);
    const auto bs = parse_list(f.micro_batches, "--micro-batches", positive("--micro-batches"));
    const auto ws = parse_list(f.world_sizes, "--world-sizes", positive("--world-sizes"));
    const auto ss = parse_list(f.seqs, "--seqs", positive("--seqs"));
    const auto ps = parse_list(f.precisions, "--precisions", parse_precision);
    CommonArgs base_args;
    base_args.model = models.front();
    base_args.sharding = "fsdp";
    base_args.profile = device == rt::Device::cuda ? "remat-cuda" : "remat";
    // --calibration auto: calibrate this device now (beside -o's file when there is one).
    if (f.calibration == "auto") {
        rt::CalibrateOptions co;
        co.device = device;
        f.calibration = f.output.empty()
                            ? (std::filesystem::temp_directory_path() /
                               fmt::format("remat-validate-{}.calibration.json", ::getpid()))
                                  .string()
                            : f.output.substr(0, f.output.rfind('.')) + ".calibration.json";
        std::cerr << "remat validate: calibrating " << device_name(device) << " into "
                  << f.calibration << "\n";
        save_calibration(to_calibration(rt::measure_device(co)), f.calibration);
    }
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
        // validate's answer goes to files; the terminal may show progress
        Progress progress(false);
        for (std::size_t k = 0; k < points.size(); ++k) {
            if (progress) {
                const std::size_t width = 30, filled = width * k / points.size();
                progress.show(fmt::format("[{}{}] {}/{} {} {}", std::string(filled, '#'),
                                          std::string(width - filled, '.'), k, points.size(),
                                          points[k].model, points[k].strategy.name()));
            }
            rows.push_back(validate_point(base, points[k], static_cast<std::uint64_t>(f.steps),
                                          device,
                                          device == rt::Device::cpu ? k_validate_attempts : 1));
        }
    }
    const auto doc = validate_json(rows, static_cast<std::uint64_t>(f.steps), f.tolerance, device,
                                   base.options.attention);
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

}  // namespace remat::cli
