#include "planner/error.hpp"

#include <fmt/format.h>

#include <algorithm>

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

}  // namespace

void throw_unknown(const std::string& what, const std::string& given,
                   const std::vector<std::string>& valid) {
    std::vector<std::pair<std::size_t, std::string>> ranked;
    for (const auto& v : valid) ranked.emplace_back(edit_distance(given, v), v);
    std::stable_sort(ranked.begin(), ranked.end(),
                     [](const auto& x, const auto& y) { return x.first < y.first; });
    std::vector<std::string> closest;
    for (std::size_t i = 0; i < ranked.size() && i < 3; ++i) closest.push_back(ranked[i].second);
    throw InputError(fmt::format("unknown {} '{}'; closest valid: {} (all: {})", what, given,
                                 fmt::join(closest, ", "), fmt::join(valid, ", ")));
}

}  // namespace remat
