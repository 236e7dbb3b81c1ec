// What every harness shares: the line between an expected rejection and a finding.
//
//   extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
//       remat::fuzz::rejects_only_with_input_errors([&] { parse(as_text(data, size)); });
//       return 0;
//   }
//
// remat::InputError (planner/config/error.hpp) is the documented answer to bad input, and it must
// be one non-empty line (the CLI prints it as is). Anything else is a finding: another exception,
// a broken property (finding() aborts, so libFuzzer saves the input), or what the sanitizers,
// -timeout and -rss_limit_mb catch.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <string_view>
#include <typeinfo>

#include "planner/config/error.hpp"

namespace remat::fuzz {

inline std::string_view as_text(const std::uint8_t* data, std::size_t size) {
    return {reinterpret_cast<const char*>(data), size};
}

[[noreturn]] inline void finding(const std::string& what) {
    std::fprintf(stderr, "==remat-fuzz== FINDING: %s\n", what.c_str());
    std::abort();
}

// Runs `parse`; an InputError with a one-line message is fine, everything else is a finding.
template <typename F>
void rejects_only_with_input_errors(F&& parse) {
    try {
        parse();
    } catch (const InputError& e) {
        const std::string_view m = e.what();
        if (m.empty()) finding("InputError with an empty message");
        if (m.find_first_of("\n\r") != std::string_view::npos)
            finding("InputError message is not one line: " + std::string(m));
    } catch (const std::exception& e) {
        finding(
            std::string("exception that is not an InputError (the CLI's \"internal error\"): ") +
            typeid(e).name() + ": " + e.what());
    }
}

}  // namespace remat::fuzz
