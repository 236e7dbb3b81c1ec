// The one error type for bad user input. Its message names the input and says how to fix it;
// the CLI prints it as one line and exits with code 2. Broken invariants are asserts instead.
#pragma once
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace remat {

struct InputError : std::runtime_error {
    explicit InputError(const std::string& message) : std::runtime_error(message) {}
};

// User text as it is echoed in a message: in single quotes, with control characters, quotes and
// backslashes escaped (a newline becomes \n), so that every message stays one line.
std::string quote(std::string_view text);
// A whole message made one line: control characters escaped as quote() escapes them.
std::string one_line(std::string_view message);

// "unknown model 'lama2-7b'; closest: llama2-7b, llama2-13b" — used for every named choice.
[[noreturn]] void throw_unknown(const std::string& what, const std::string& given,
                                const std::vector<std::string>& valid);

}  // namespace remat
