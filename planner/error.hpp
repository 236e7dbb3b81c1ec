// The one error type for bad user input. Its message names the input and says how to fix it;
// the CLI prints it as one line and exits with code 2. Broken invariants are asserts instead.
#pragma once
#include <stdexcept>
#include <string>
#include <vector>

namespace remat {

struct InputError : std::runtime_error {
    explicit InputError(const std::string& message) : std::runtime_error(message) {}
};

// "unknown model 'lama2-7b'; closest: llama2-7b, llama2-13b" — used for every named choice.
[[noreturn]] void throw_unknown(const std::string& what, const std::string& given,
                                const std::vector<std::string>& valid);

}  // namespace remat
