// The pickle writer (tools/pickle) byte for byte, against what Python's pickle writes at
// protocol 2 for the same values (opcodes from Lib/pickletools.py), and the batching of large
// containers that PyTorch's viewer needs. The Python side reads these files in
// tests/torch/memory_snapshot_test.py.
#include "tools/pickle.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <string>

using remat::cli::to_pickle;
using json = nlohmann::json;

namespace {

std::string bytes(std::initializer_list<int> b) {
    std::string s;
    for (int c : b) s += static_cast<char>(c);
    return s;
}

// A document's body: without PROTO 2 and STOP.
std::string body(const json& j) {
    const std::string p = to_pickle(j);
    REQUIRE(p.substr(0, 2) == bytes({0x80, 0x02}));
    REQUIRE(p.back() == '.');
    return p.substr(2, p.size() - 3);
}

std::size_t count(const std::string& text, char c) {
    return static_cast<std::size_t>(std::count(text.begin(), text.end(), c));
}

}  // namespace

TEST_SUITE("pickle") {
    TEST_CASE("pickle::scalars as Python writes them") {
        CHECK(body(nullptr) == "N");
        CHECK(body(true) == bytes({0x88}));
        CHECK(body(false) == bytes({0x89}));
        // BININT: 4 bytes, little-endian, signed.
        CHECK(body(1) == bytes({'J', 1, 0, 0, 0}));
        CHECK(body(-2) == bytes({'J', 0xfe, 0xff, 0xff, 0xff}));
        CHECK(body(std::int64_t{2147483647}) == bytes({'J', 0xff, 0xff, 0xff, 0x7f}));
        // Past int32: LONG1 with 8 bytes of two's complement (pickle.loads reads any length).
        CHECK(body(std::int64_t{2147483648}) == bytes({0x8a, 8, 0, 0, 0, 0x80, 0, 0, 0, 0}));
        CHECK(body(std::int64_t{-2147483649}) ==
              bytes({0x8a, 8, 0xff, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff}));
        CHECK(body(std::uint64_t{0x7f0000000000}) == bytes({0x8a, 8, 0, 0, 0, 0, 0, 0x7f, 0, 0}));
        // Past int64: nine bytes, the last zero, so that it stays positive.
        CHECK(body(std::numeric_limits<std::uint64_t>::max()) ==
              bytes({0x8a, 9, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0}));
        // BINFLOAT: big-endian IEEE 754; 1.5 is 0x3ff8000000000000.
        CHECK(body(1.5) == bytes({'G', 0x3f, 0xf8, 0, 0, 0, 0, 0, 0}));
        // BINUNICODE: u32 length, then UTF-8.
        CHECK(body("hé") == bytes({'X', 3, 0, 0, 0, 'h', 0xc3, 0xa9}));
    }

    TEST_CASE("pickle::containers, batched by 1000 as CPython does") {
        CHECK(body(json::array()) == "]");
        CHECK(body(json::object()) == "}");
        CHECK(body(json::array({1, 2})) == "](" + body(1) + body(2) + "e");
        CHECK(body(json{{"a", 1}}) == "}(" + body("a") + body(1) + "u");
        for (std::size_t n : {999u, 1000u, 1001u, 2500u}) {
            CAPTURE(n);
            json list = json::array();
            json dict = json::object();
            for (std::size_t k = 0; k < n; ++k) {
                list.push_back(true);
                dict[std::to_string(k)] = true;
            }
            const std::size_t batches = (n + 999) / 1000;
            const std::string l = body(list);
            CHECK(count(l, '(') == batches);  // one MARK per batch
            CHECK(count(l, 'e') == batches);  // one APPENDS per batch
            CHECK(l.size() == 1 + n + 2 * batches);
            const std::string d = body(dict);
            CHECK(count(d, 'u') == batches);  // one SETITEMS per batch (no key holds 'u')
        }
    }

    TEST_CASE("pickle::binary values are refused, not written as something else") {
        CHECK_THROWS_AS(to_pickle(json::binary({1, 2})), std::invalid_argument);
    }
}
