#include "planner/simulate/calibration.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "planner/config/checked.hpp"
#include "planner/config/error.hpp"
#include "planner/config/json_io.hpp"

namespace remat {

namespace {

using nlohmann::json;

constexpr const char* k_format = "remat-calibration-1";
constexpr const char* k_rewrite = "fix it or write the file again with `remat calibrate`";

// Reads the fields of one JSON object, each at most once, and rejects keys it was not asked
// about (a misspelt rate would otherwise be silently ignored).
class Fields {
  public:
    Fields(const json& j, std::string origin, std::string where)
        : j_(j), origin_(std::move(origin)), where_(std::move(where)) {
        if (!j.is_object())
            throw InputError(
                fmt::format("{}: {} must be a JSON object; {}", origin_, label(), k_rewrite));
    }
    bool has(const char* key) {
        seen_.insert(key);
        return j_.contains(key);
    }
    const json& at(const char* key) {
        if (!has(key))
            throw InputError(fmt::format("{}: {} is missing; {}", origin_, name(key), k_rewrite));
        return j_.at(key);
    }
    std::string text(const char* key) {
        const json& v = at(key);
        if (!v.is_string())
            throw InputError(
                fmt::format("{}: {} must be a string; {}", origin_, name(key), k_rewrite));
        return v.get<std::string>();
    }
    // A finite number above zero, or at or above it where `zero_ok`.
    double number(const char* key, const char* unit, bool zero_ok = false) {
        const json& v = at(key);
        const double x = v.is_number() ? v.get<double>() : -1;
        if (!v.is_number() || !std::isfinite(x) || x < 0 || (x == 0 && !zero_ok))
            throw InputError(fmt::format("{}: {} must be a {} number of {}, not {}; {}", origin_,
                                         name(key), zero_ok ? "non-negative" : "positive", unit,
                                         v.dump(), k_rewrite));
        return x;
    }
    // A rate the step-time model divides by (FLOP/s, bytes/s): at least 1 per second. A device
    // slower than that is a typo, and a rate of 1e-300 makes every step time infinite.
    double rate(const char* key, const char* unit) {
        const double x = number(key, unit);
        if (x < 1)
            throw InputError(fmt::format("{}: {} must be at least 1 {}, not {}; {}", origin_,
                                         name(key), unit, at(key).dump(), k_rewrite));
        return x;
    }
    // Seconds per kernel launch: from 0 up to 1 s. More is a typo, and the step-time model adds
    // it once or twice per op (a launch of 1e307 s makes every step time infinite).
    double launch(const char* key) {
        const double x = number(key, "seconds", true);
        if (x > 1)
            throw InputError(fmt::format("{}: {} must be at most 1 second, not {}; {}", origin_,
                                         name(key), at(key).dump(), k_rewrite));
        return x;
    }
    // A non-negative integer, at most 2^63 - 1.
    std::uint64_t count_or_zero(const char* key) {
        const json& v = at(key);
        if (!v.is_number_unsigned() || v.get<std::uint64_t>() > max_count)
            throw InputError(fmt::format("{}: {} must be a non-negative integer, not {}; {}",
                                         origin_, name(key), v.dump(), k_rewrite));
        return v.get<std::uint64_t>();
    }
    // A number in [lo, hi]: figures the step-time model multiplies or divides by, bounded so that
    // every step time stays finite and positive.
    double within(const char* key, const char* unit, double lo, double hi) {
        const double x = number(key, unit);
        if (x < lo || x > hi)
            throw InputError(fmt::format("{}: {} must be from {} to {} {}, not {}; {}", origin_,
                                         name(key), lo, hi, unit, at(key).dump(), k_rewrite));
        return x;
    }
    // A positive integer (a count of calls), at most 2^63 - 1.
    std::uint64_t count(const char* key) {
        const json& v = at(key);
        if (!v.is_number_unsigned() || v.get<std::uint64_t>() == 0 ||
            v.get<std::uint64_t>() > max_count)
            throw InputError(fmt::format("{}: {} must be a positive integer, not {}; {}", origin_,
                                         name(key), v.dump(), k_rewrite));
        return v.get<std::uint64_t>();
    }
    void no_others() const {
        for (const auto& [key, value] : j_.items())
            if (!seen_.count(key)) {
                std::string known;
                for (const auto& k : seen_) known += (known.empty() ? "" : ", ") + k;
                throw InputError(fmt::format("{}: unknown key {} (the keys are {}); {}", origin_,
                                             name(key), known, k_rewrite));
            }
    }

  private:
    std::string label() const { return where_.empty() ? "the document" : "\"" + where_ + "\""; }
    // The key as JSON writes it: quoted, with a newline in an unknown key escaped, so that the
    // message stays one line.
    std::string name(const std::string& key) const {
        return json_key(where_.empty() ? key : where_ + "." + key);
    }
    const json& j_;
    std::string origin_, where_;
    std::set<std::string> seen_;
};

MeasuredCompute compute_from(const json& j, const std::string& origin, const std::string& where) {
    Fields f(j, origin, where);
    MeasuredCompute m;
    m.gemm_flops = f.rate("gemm_flops", "FLOP/s");
    m.attention_flops = f.rate("attention_flops", "FLOP/s");
    f.no_others();
    return m;
}

std::optional<KernelClass> kernel_of(const std::string& name) {
    for (KernelClass k :
         {KernelClass::gemm, KernelClass::attention, KernelClass::norm, KernelClass::elementwise,
          KernelClass::dropout, KernelClass::gelu, KernelClass::activation, KernelClass::rotary,
          KernelClass::softmax, KernelClass::embedding})
        if (name == kernel_name(k)) return k;
    return std::nullopt;
}

// Adds a sample to the timing of its kernel, direction and dimension (made on first sight).
void add_point(std::vector<KernelTiming>& timings, KernelClass kernel, const CalibrationSample& s) {
    const bool backward = s.direction == "backward";
    auto it = std::find_if(timings.begin(), timings.end(), [&](const KernelTiming& t) {
        return t.kernel == kernel && t.backward == backward && t.dim == s.dim;
    });
    if (it == timings.end())
        it = timings.insert(timings.end(), KernelTiming{kernel, backward, s.dim, {}});
    it->curve.emplace_back(s.work, s.seconds);
}

void sort_curve(TimeCurve& c) { std::sort(c.begin(), c.end()); }

}  // namespace

std::string_view calibration_storage(Precision p) { return p == Precision::fp32 ? "fp32" : "bf16"; }

json calibration_json(const Calibration& c) {
    json j = {{"format", k_format},
              {"backend", c.backend},
              {"device", c.device},
              {"source", c.source},
              {"memory_bandwidth_bytes_per_s", c.memory_bandwidth},
              {"launch_s", c.launch_s}};
    if (c.concurrent_ranks > 0) j["concurrent_ranks"] = c.concurrent_ranks;
    if (c.shared_memory_slowdown != 1) j["shared_memory_slowdown"] = c.shared_memory_slowdown;
    if (c.shared_compute_slowdown != 1) j["shared_compute_slowdown"] = c.shared_compute_slowdown;
    if (c.collective_bus_bandwidth > 0)
        j["collectives"] = {{"bus_bytes_per_s", c.collective_bus_bandwidth},
                            {"latency_s", c.collective_latency_s}};
    if (c.host_probe_s > 0) j["host_probe_s"] = c.host_probe_s;
    auto rates = [](const MeasuredCompute& m) {
        return json{{"gemm_flops", m.gemm_flops}, {"attention_flops", m.attention_flops}};
    };
    if (c.fp32) j["fp32"] = rates(*c.fp32);
    if (c.bf16) j["bf16"] = rates(*c.bf16);
    json samples = json::array();
    for (const CalibrationSample& s : c.measurements) {
        json one = {{"benchmark", s.benchmark}, {"storage", s.storage}, {"shape", s.shape},
                    {"flops", s.flops},         {"bytes", s.bytes},     {"seconds", s.seconds},
                    {"calls", s.calls}};
        if (!s.direction.empty()) {
            one["direction"] = s.direction;
            one["dim"] = s.dim;
            one["work"] = s.work;
        }
        if (s.contended) one["contended"] = true;
        samples.push_back(std::move(one));
    }
    j["measurements"] = samples;
    return j;
}

Calibration calibration_from_json(const json& j, const std::string& origin) {
    if (!j.is_object() || !j.contains("format") || j.at("format") != k_format)
        throw InputError(
            fmt::format("{}: not a remat calibration file (it needs \"format\": \"{}\"); "
                        "write one with `remat calibrate --device cpu|cuda -o FILE`",
                        origin, k_format));
    Fields f(j, origin, "");
    f.text("format");
    Calibration c;
    c.backend = f.text("backend");
    c.device = f.text("device");
    c.source = f.has("source") ? f.text("source") : "";
    if (f.has("fp32")) c.fp32 = compute_from(j.at("fp32"), origin, "fp32");
    if (f.has("bf16")) c.bf16 = compute_from(j.at("bf16"), origin, "bf16");
    if (!c.fp32 && !c.bf16)
        throw InputError(fmt::format(
            "{}: no compute rates; add \"fp32\" or \"bf16\" ({{\"gemm_flops\": ..., "
            "\"attention_flops\": ...}}) or write the file again with `remat calibrate`",
            origin));
    c.memory_bandwidth = f.rate("memory_bandwidth_bytes_per_s", "bytes/s");
    c.launch_s = f.launch("launch_s");
    if (f.has("concurrent_ranks"))
        c.concurrent_ranks = f.within("concurrent_ranks", "ranks", 1, 1e6);
    if (f.has("shared_memory_slowdown"))
        c.shared_memory_slowdown = f.within("shared_memory_slowdown", "times", 1, 1000);
    if (f.has("shared_compute_slowdown"))
        c.shared_compute_slowdown = f.within("shared_compute_slowdown", "times", 1, 1000);
    if (f.has("collectives")) {
        Fields n(j.at("collectives"), origin, "collectives");
        c.collective_bus_bandwidth = n.rate("bus_bytes_per_s", "bytes/s");
        c.collective_latency_s = n.launch("latency_s");
        n.no_others();
    }
    if (f.has("host_probe_s")) c.host_probe_s = f.within("host_probe_s", "seconds", 1e-9, 1);
    if (f.has("measurements")) {
        const json& list = j.at("measurements");
        if (!list.is_array())
            throw InputError(
                fmt::format("{}: \"measurements\" must be an array; {}", origin, k_rewrite));
        for (std::size_t k = 0; k < list.size(); ++k) {
            Fields s(list[k], origin, fmt::format("measurements[{}]", k));
            CalibrationSample m;
            m.benchmark = s.text("benchmark");
            m.storage = s.text("storage");
            m.shape = s.text("shape");
            m.flops = s.number("flops", "FLOPs", true);
            m.bytes = s.number("bytes", "bytes", true);
            m.seconds = s.number("seconds", "seconds");
            m.calls = s.count("calls");
            if (s.has("direction")) {
                m.direction = s.text("direction");
                if (m.direction != "forward" && m.direction != "backward")
                    throw InputError(
                        fmt::format("{}: \"measurements[{}].direction\" must be \"forward\" or "
                                    "\"backward\", not {}; {}",
                                    origin, k, json(m.direction).dump(), k_rewrite));
                if (!kernel_of(m.benchmark) && m.benchmark != "optimizer")
                    throw InputError(fmt::format(
                        "{}: \"measurements[{}].benchmark\" {} is not a kernel class (gemm, "
                        "attention, norm, elementwise, dropout, gelu, activation, rotary, "
                        "softmax, embedding) or optimizer; {}",
                        origin, k, json(m.benchmark).dump(), k_rewrite));
                m.dim = s.has("dim") ? s.count_or_zero("dim") : 0;
                m.work = s.within("work", "FLOPs or bytes", 1, 1e30);
                // A kernel call between a picosecond and an hour: the model reads its rate.
                m.seconds = s.within("seconds", "seconds", 1e-12, 3600);
            }
            if (s.has("contended")) {
                if (!list[k].at("contended").is_boolean())
                    throw InputError(
                        fmt::format("{}: \"measurements[{}].contended\" must be true or false, "
                                    "not {}; {}",
                                    origin, k, list[k].at("contended").dump(), k_rewrite));
                m.contended = list[k].at("contended").get<bool>();
            }
            s.no_others();
            c.measurements.push_back(std::move(m));
        }
    }
    f.no_others();
    return c;
}

Calibration load_calibration(const std::string& path) {
    std::error_code ec;
    if (!std::filesystem::exists(path, ec))
        throw InputError(fmt::format(
            "cannot read calibration file {}: no such file; check the path, or write it "
            "with `remat calibrate --device cpu|cuda -o {}`",
            quote(path), path));
    return calibration_from_json(read_json_file(path, k_rewrite), path);
}

void save_calibration(const Calibration& c, const std::string& path) {
    std::ofstream out(path);
    if (!out)
        throw InputError(fmt::format("{} '{}': cannot open for writing; check the directory",
                                     named(Input::output), path));
    out << calibration_json(c).dump(2) << "\n";
    if (!out)
        throw InputError(
            fmt::format("{} '{}': writing failed; check the disk", named(Input::output), path));
}

void check_covers(const Calibration& c, Precision precision, const std::string& origin) {
    const bool fp32 = precision == Precision::fp32;
    if (fp32 ? c.fp32.has_value() : c.bf16.has_value()) return;
    const std::string p = named(Input::precision);
    throw InputError(fmt::format(
        "{} '{}' has no {} rates, which {} {} needs; calibrate with {} {}, or plan with {} {}",
        named(Input::calibration), origin, calibration_storage(precision), p,
        precision_name(precision), p, fp32 ? "fp32" : "bf16-mixed", p,
        fp32 ? "bf16-mixed" : "fp32"));
}

StepTimeModel calibrated_model(const Calibration& c) {
    StepTimeModel m;
    m.launch_s = c.launch_s;
    m.fp32_measured = c.fp32;
    m.bf16_measured = c.bf16;
    m.measured_bandwidth = c.memory_bandwidth;
    m.concurrent_ranks = c.concurrent_ranks;
    m.shared_memory_slowdown = std::max(1.0, c.shared_memory_slowdown);
    m.shared_compute_slowdown = std::max(1.0, c.shared_compute_slowdown);
    if (c.collective_bus_bandwidth > 0) {
        // One node of threads: every step in-process, one latency per collective.
        NetworkSpec n;
        n.name = "in-process";
        n.description = "the CPU runtime's collectives between rank threads (remat calibrate)";
        n.gpus_per_node = std::uint64_t{1} << 40;
        n.intra_bus_bandwidth = n.intra_all_reduce_bus_bandwidth = n.inter_bus_bandwidth =
            c.collective_bus_bandwidth;
        n.base_latency_s = c.collective_latency_s;
        n.in_process = true;
        m.network = n;
    }
    for (const CalibrationSample& s : c.measurements) {
        if (s.direction.empty() || !(s.work > 0)) continue;
        if (s.benchmark == "optimizer") {
            m.measured_optimizer.emplace_back(s.work, s.seconds);
            continue;
        }
        std::optional<MeasuredCompute>& row =
            s.storage == "fp32" ? m.fp32_measured : m.bf16_measured;
        if (row) add_point(row->kernels, *kernel_of(s.benchmark), s);
    }
    sort_curve(m.measured_optimizer);
    for (auto* row : {&m.fp32_measured, &m.bf16_measured})
        if (*row)
            for (KernelTiming& t : (*row)->kernels) sort_curve(t.curve);
    return m;
}

}  // namespace remat
