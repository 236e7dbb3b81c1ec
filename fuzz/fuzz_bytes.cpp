// Fuzzes byte sizes (`--gpu-memory`, `--memory-budget`, `--reserve-context`,
// `--reserve-workspace`, `run --memory-cap`): parse_bytes, with zero refused and allowed.
//
// Findings besides crashes: zero returned where zero is refused; the two modes disagreeing on
// a size both accept; and, for text of the plain form <digits>[.<digits>]<unit> with a unit
// spelt as docs and README spell it, an answer more than rounding away from the number times
// the unit (what 2^63 wraparound looks like), or a refusal of such a size between 1 byte and
// 10^18 bytes.
#include <fmt/format.h>

#include <cmath>
#include <cstdlib>
#include <optional>
#include <regex>

#include "fuzz/fuzz_common.hpp"
#include "planner/simulate/gpu.hpp"

namespace {

using namespace remat;

std::optional<std::uint64_t> parsed(const std::string& text, bool allow_zero) {
    std::optional<std::uint64_t> out;
    remat::fuzz::rejects_only_with_input_errors(
        [&] { out = parse_bytes(text, "--gpu-memory", allow_zero); });
    return out;
}

// The exact value of a plain-form size, or nothing when the text is not of that form.
std::optional<long double> reference(const std::string& text) {
    static const std::regex plain(
        R"(([0-9]{1,24}(\.[0-9]{1,24})?)(B|KiB|MiB|GiB|TiB|KB|MB|GB|TB))");
    std::smatch m;
    if (!std::regex_match(text, m, plain)) return std::nullopt;
    const std::string unit = m[3].str();
    long double scale = 1;
    if (unit == "KiB") scale = 1024.0L;
    if (unit == "MiB") scale = 1048576.0L;
    if (unit == "GiB") scale = 1073741824.0L;
    if (unit == "TiB") scale = 1099511627776.0L;
    if (unit == "KB") scale = 1e3L;
    if (unit == "MB") scale = 1e6L;
    if (unit == "GB") scale = 1e9L;
    if (unit == "TB") scale = 1e12L;
    return std::strtold(m[1].str().c_str(), nullptr) * scale;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string text(remat::fuzz::as_text(data, size));
    const auto positive = parsed(text, false);
    const auto non_negative = parsed(text, true);
    if (positive && *positive == 0)
        remat::fuzz::finding(fmt::format("'{}' read as 0 bytes where zero is refused", text));
    if (positive && non_negative && *positive != *non_negative)
        remat::fuzz::finding(
            fmt::format("'{}' read as {} and as {} bytes", text, *positive, *non_negative));
    if (const auto exact = reference(text)) {
        // A double carries 53 bits: the number times the unit, then rounding to whole bytes.
        const long double tolerance = 1.0L + *exact * 1e-15L;
        for (const auto& got : {positive, non_negative})
            if (got && std::fabs(static_cast<long double>(*got) - *exact) > tolerance)
                remat::fuzz::finding(fmt::format("'{}' read as {} bytes, but it is {:.0f}", text,
                                                 *got, static_cast<double>(*exact)));
        if (*exact >= 1 && *exact <= 1e18L && !positive)
            remat::fuzz::finding(
                fmt::format("'{}' refused although it is a plain size of {:.0f} bytes", text,
                            static_cast<double>(*exact)));
    }
    return 0;
}
