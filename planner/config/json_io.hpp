// Reading JSON text with errors that name the file and line, as users need to fix it.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace remat {

// A key as JSON writes it, for messages: in double quotes, a newline escaped (one line), bytes
// that are not UTF-8 replaced instead of thrown on.
std::string json_key(const std::string& key);

// Throws InputError "<origin>:<line>:<column>: malformed JSON: <reason>; <fix>".
nlohmann::json parse_json_text(std::string_view text, const std::string& origin,
                               std::string_view fix = "fix the file or pass a preset name");
// Throws InputError if the path is missing or a directory, cannot be read or is malformed; `fix`
// ends a malformed file's message.
nlohmann::json read_json_file(const std::string& path,
                              std::string_view fix = "fix the file or pass a preset name");

}  // namespace remat
