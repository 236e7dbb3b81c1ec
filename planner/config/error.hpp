// The one error type for bad user input. Its message names the input and says how to fix it;
// the CLI prints it as one line and exits with code 2. Broken invariants are asserts instead.
//
// Libraries (planner/, runtime/) know no command line: a message names an input by what it is,
// never by the flag that sets it. Where the message names an input, it holds a placeholder,
// named(input); what() reads each placeholder as the input's words, and a caller with names
// of its own (the CLI: its flags) reads the same message with message(names):
//
//   throw InputError(fmt::format("{} {}: cannot open the file", named(Input::data), quote(path)));
//   e.what()                // "token file '/tmp/x': cannot open the file"
//   e.message(cli::flag_of) // "--data '/tmp/x': cannot open the file"
//
// A placeholder is the input's key between two U+001F (unit separator) characters, e.g.
// "\x1f" "data" "\x1f": a control character, which quote() escapes in user text, and only a
// known key between two of them is read as one. Text that is not about an input (including a
// command to run, such as `remat calibrate --device cpu -o FILE`) stays as it is written.
#pragma once
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace remat {

// The inputs library messages name. Each has its words (input_words), and the CLI a flag.
enum class Input {
    attention,
    base_dtype,
    calibration,
    data,
    device,
    global_batch,
    grad_accumulation,
    lora_dropout,
    lora_rank,
    lora_targets,
    memory_cap,
    memory_slots,
    micro_batch,
    moe_capacity_factor,
    offload_checkpoints,
    optimizer,
    output,
    precision,
    profile,
    recipe,
    seq,
    sharding,
    steps,
    strategies,
    train,
    world_size,  // the last: error.cpp checks its table against it
};

// The placeholder for `input` in a message.
std::string named(Input input);
// The input as a message names it in words: "the sequence length", "token file", "precision".
std::string_view input_words(Input input);
// How a caller names inputs: a function from an input to its name.
using InputNames = std::string_view (*)(Input);
// `text` with each placeholder replaced by the input's name.
std::string name_inputs(std::string_view text, InputNames names = input_words);
// Whether `text` holds a placeholder.
bool names_inputs(std::string_view text);

struct InputError : std::runtime_error {
    // `message` may hold placeholders; what() names their inputs in words.
    explicit InputError(const std::string& message)
        : std::runtime_error(name_inputs(message)), text_(message) {}
    // The message with each input it names spelled by `names`.
    std::string message(InputNames names) const { return name_inputs(text_, names); }
    // The message with its placeholders, as it was thrown.
    const std::string& text() const { return text_; }

  private:
    std::string text_;
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
