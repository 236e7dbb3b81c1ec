// Fuzzes `--calibration FILE` (the file `remat calibrate -o` writes, docs/json.md), read as
// load_calibration reads it: parse_json_text, then calibration_from_json. An accepted file is
// checked against every precision (check_covers), written back and read again (it must be the
// same document), and its rates drive the step-time model of a plan of tiny-llama.
//
// Findings besides crashes: a file that does not survive its own round trip, and rates the
// reader accepted that give a step time that is not a finite positive number.
#include <fmt/format.h>

#include <cmath>

#include "fuzz/fuzz_common.hpp"
#include "planner/config/json_io.hpp"
#include "planner/search/search.hpp"
#include "planner/simulate/calibration.hpp"
#include "planner/simulate/memory.hpp"

namespace {

using namespace remat;

Chain tiny_chain(Precision p) {
    RunOptions o;
    o.seq = 32;
    o.precision = p;
    return build_chain(load_model("tiny-llama"), o);
}

const Chain& chain_for(Precision p) {
    static const Chain fp32 = tiny_chain(Precision::fp32), bf16 = tiny_chain(Precision::bf16_mixed);
    return p == Precision::fp32 ? fp32 : bf16;
}

void use(const Calibration& c, const std::string& origin) {
    const nlohmann::json written = calibration_json(c);
    if (calibration_json(calibration_from_json(parse_json_text(written.dump(2), origin), origin)) !=
        written)
        remat::fuzz::finding("calibration changes when written and read again: " + written.dump());

    static const GpuSpec gpu = load_gpu("h100-80gb");
    for (const Precision p : {Precision::fp32, Precision::bf16_mixed}) {
        try {
            check_covers(c, p, origin);
        } catch (const InputError&) {
            continue;  // no rates for this storage: the documented refusal
        }
        const Chain& chain = chain_for(p);
        PlanContext ctx;
        ctx.gpu = &gpu;
        ctx.capacity_bytes = gpu.capacity_bytes;
        ctx.reserve = default_reserve(gpu);
        ctx.time_model = calibrated_model(c);
        const Plan plan = make_plan(chain, parse_strategy("sqrt"), ctx);
        const SimResult r = simulate(chain, plan, gpu, ctx.reserve, ctx.time_model);
        if (!(std::isfinite(r.step_time_s) && r.step_time_s > 0) || !std::isfinite(r.tokens_per_s))
            remat::fuzz::finding(fmt::format("accepted rates give step time {} s, {} tokens/s ({})",
                                             r.step_time_s, r.tokens_per_s, written.dump()));
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    remat::fuzz::rejects_only_with_input_errors([&] {
        const std::string origin = "fuzz/calibration.json";
        const Calibration c = calibration_from_json(
            parse_json_text(remat::fuzz::as_text(data, size), origin), origin);
        use(c, origin);
    });
    return 0;
}
