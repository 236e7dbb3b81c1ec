// pickle.hpp. Hand-written: no Debian package writes pickles from C++, and the subset needed
// (the opcodes of Python's pickletools for protocol 2) is small and fixed.
#include "tools/pickle.hpp"

#include <bit>
#include <cstdint>
#include <cstring>
#include <stdexcept>

namespace remat::cli {
namespace {

constexpr char PROTO = '\x80', STOP = '.', MARK = '(', EMPTY_DICT = '}', EMPTY_LIST = ']',
               SETITEMS = 'u', APPENDS = 'e', BINUNICODE = 'X', BININT = 'J', LONG1 = '\x8a',
               BINFLOAT = 'G', NEWTRUE = '\x88', NEWFALSE = '\x89', NONE = 'N';
constexpr std::size_t batch = 1000;

void little_endian(std::string& out, std::uint64_t v, std::size_t n) {
    for (std::size_t k = 0; k < n; ++k) out += static_cast<char>((v >> (8 * k)) & 0xff);
}

void write_int(std::string& out, std::int64_t v) {
    if (v >= INT32_MIN && v <= INT32_MAX) {
        out += BININT;
        little_endian(out, static_cast<std::uint32_t>(static_cast<std::int32_t>(v)), 4);
        return;
    }
    out += LONG1;
    out += '\x08';  // two's complement, 8 bytes
    little_endian(out, static_cast<std::uint64_t>(v), 8);
}

void write_uint(std::string& out, std::uint64_t v) {
    if (v <= static_cast<std::uint64_t>(INT64_MAX))
        return write_int(out, static_cast<std::int64_t>(v));
    out += LONG1;
    out += '\x09';  // a ninth, zero byte keeps it positive
    little_endian(out, v, 8);
    out += '\0';
}

void write_string(std::string& out, const std::string& s) {
    out += BINUNICODE;
    little_endian(out, s.size(), 4);
    out += s;
}

void write(std::string& out, const nlohmann::json& j) {
    switch (j.type()) {
        case nlohmann::json::value_t::object: {
            out += EMPTY_DICT;
            std::size_t n = 0;
            for (auto it = j.begin(); it != j.end(); ++it, ++n) {
                if (n % batch == 0) out += MARK;
                write_string(out, it.key());
                write(out, it.value());
                if (n % batch == batch - 1) out += SETITEMS;
            }
            if (n % batch != 0) out += SETITEMS;
            return;
        }
        case nlohmann::json::value_t::array: {
            out += EMPTY_LIST;
            std::size_t n = 0;
            for (const auto& v : j) {
                if (n % batch == 0) out += MARK;
                write(out, v);
                if (++n % batch == 0) out += APPENDS;
            }
            if (n % batch != 0) out += APPENDS;
            return;
        }
        case nlohmann::json::value_t::string:
            return write_string(out, j.get_ref<const std::string&>());
        case nlohmann::json::value_t::boolean:
            out += j.get<bool>() ? NEWTRUE : NEWFALSE;
            return;
        case nlohmann::json::value_t::number_integer:
            return write_int(out, j.get<std::int64_t>());
        case nlohmann::json::value_t::number_unsigned:
            return write_uint(out, j.get<std::uint64_t>());
        case nlohmann::json::value_t::number_float: {
            out += BINFLOAT;  // big-endian IEEE 754 double
            const auto bits = std::bit_cast<std::uint64_t>(j.get<double>());
            for (int k = 7; k >= 0; --k) out += static_cast<char>((bits >> (8 * k)) & 0xff);
            return;
        }
        case nlohmann::json::value_t::null:
            out += NONE;
            return;
        case nlohmann::json::value_t::discarded:
        case nlohmann::json::value_t::binary:
            break;
    }
    throw std::invalid_argument("to_pickle: binary and discarded JSON values have no pickle here");
}

}  // namespace

std::string to_pickle(const nlohmann::json& document) {
    std::string out;
    out += PROTO;
    out += '\x02';
    write(out, document);
    out += STOP;
    return out;
}

}  // namespace remat::cli
