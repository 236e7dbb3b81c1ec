// How many times a string occurs in a text (overlaps counted): the tests that read generated
// DOT, SVG and HTML count nodes, marks and sections with it.
#pragma once
#include <cstddef>
#include <string>

namespace test_text {

inline std::size_t count(const std::string& text, const std::string& what) {
    std::size_t n = 0;
    for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
    return n;
}

}  // namespace test_text
