#include "planner/config/error.hpp"

#include <fmt/format.h>

#include <algorithm>

#include "planner/config/checked.hpp"

namespace remat {
namespace {

std::size_t edit_distance(const std::string& a, const std::string& b) {
    std::vector<std::size_t> row(b.size() + 1);
    for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
    for (std::size_t i = 1; i <= a.size(); ++i) {
        std::size_t diagonal = row[0];
        row[0] = i;
        for (std::size_t j = 1; j <= b.size(); ++j) {
            std::size_t up = row[j];
            row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] != b[j - 1])});
            diagonal = up;
        }
    }
    return row[b.size()];
}

// Control characters as escapes (\n, \t, \r, else \xNN); with `quotes`, single quotes and
// backslashes too, so that a quoted echo reads unambiguously.
void append_escaped(std::string& out, std::string_view text, bool quotes) {
    for (const char ch : text) {
        const auto c = static_cast<unsigned char>(ch);
        if (c == '\n') out += "\\n";
        else if (c == '\t') out += "\\t";
        else if (c == '\r') out += "\\r";
        else if (quotes && (c == '\'' || c == '\\')) { out += '\\'; out += ch; }
        else if (c < 0x20 || c == 0x7f) out += fmt::format("\\x{:02x}", c);
        else out += ch;
    }
}

}  // namespace

std::string quote(std::string_view text) {
    std::string out = "'";
    append_escaped(out, text, true);
    return out + "'";
}

std::string one_line(std::string_view message) {
    std::string out;
    append_escaped(out, message, false);
    return out;
}

void throw_size_overflow() {
    throw SizeOverflow("a size exceeds 2^63 - 1 bytes or elements");
}

void throw_unknown(const std::string& what, const std::string& given,
                   const std::vector<std::string>& valid) {
    std::vector<std::pair<std::size_t, std::string>> ranked;
    for (const auto& v : valid) ranked.emplace_back(edit_distance(given, v), v);
    std::stable_sort(ranked.begin(), ranked.end(),
                     [](const auto& x, const auto& y) { return x.first < y.first; });
    std::vector<std::string> closest;
    for (std::size_t i = 0; i < ranked.size() && i < 3; ++i) closest.push_back(ranked[i].second);
    throw InputError(fmt::format("unknown {} {}; closest valid: {} (all: {})", what, quote(given),
                                 fmt::join(closest, ", "), fmt::join(valid, ", ")));
}

}  // namespace remat
