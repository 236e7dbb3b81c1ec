#include "planner/config/json_io.hpp"

#include <fmt/format.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "planner/config/error.hpp"

namespace remat {

namespace {

// The last key the parser read before it stopped: an out_of_range error (a number past a
// double's range) carries no position, so the text is parsed again, on that rare path only,
// with a callback that records keys.
std::string key_being_read(std::string_view text) {
    std::string last_key;
    const nlohmann::json::parser_callback_t track = [&](int, nlohmann::json::parse_event_t event,
                                                        nlohmann::json& parsed) {
        if (event == nlohmann::json::parse_event_t::key) last_key = parsed.get<std::string>();
        return true;
    };
    try {
        [[maybe_unused]] const nlohmann::json whole = nlohmann::json::parse(text, track);
    } catch (const nlohmann::json::exception&) {
    }
    return last_key;
}

}  // namespace

std::string json_key(const std::string& key) {
    return nlohmann::json(key).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

nlohmann::json parse_json_text(std::string_view text, const std::string& origin,
                               std::string_view fix) {
    try {
        return nlohmann::json::parse(text);
    } catch (const nlohmann::json::parse_error& e) {
        // e.byte is 1-based and points just past the offending character.
        std::size_t offset = e.byte == 0 ? 0 : std::min<std::size_t>(e.byte - 1, text.size());
        std::size_t line = 1, column = 1;
        for (std::size_t i = 0; i < offset; ++i) {
            if (text[i] == '\n') {
                ++line;
                column = 1;
            } else {
                ++column;
            }
        }
        std::string reason = e.what();
        if (auto p = reason.find("syntax error"); p != std::string::npos) reason = reason.substr(p);
        throw InputError(
            fmt::format("{}:{}:{}: malformed JSON: {}; {}", origin, line, column, reason, fix));
    } catch (const nlohmann::json::exception& e) {
        // Numbers past a double's range (1e400) are out_of_range errors, not parse errors.
        std::string reason = e.what();
        if (auto p = reason.find("] "); p != std::string::npos) reason = reason.substr(p + 2);
        const std::string key = key_being_read(text);
        const std::string where =
            key.empty() ? "" : fmt::format(" in the value of {}", json_key(key));
        throw InputError(fmt::format("{}: malformed JSON{}: {} (a number must fit a double); {}",
                                     origin, where, reason, fix));
    }
}

nlohmann::json read_json_file(const std::string& path, std::string_view fix) {
    std::error_code ec;
    if (std::filesystem::is_directory(path, ec))
        throw InputError(fmt::format("{} is a directory; pass a JSON file", quote(path)));
    if (!std::filesystem::exists(path, ec))
        throw InputError(fmt::format("cannot open {}: no such file; check the path", quote(path)));
    std::ifstream in(path, std::ios::binary);
    if (!in) throw InputError(fmt::format("cannot read {}; check its permissions", quote(path)));
    std::stringstream buffer;
    buffer << in.rdbuf();
    if (in.bad()) throw InputError(fmt::format("cannot read {}", quote(path)));
    return parse_json_text(buffer.str(), path, fix);
}

}  // namespace remat
