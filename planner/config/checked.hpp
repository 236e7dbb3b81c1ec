// Checked size arithmetic. Every byte, element, parameter and token count remat computes is an
// unsigned 64-bit integer no larger than max_count = 2^63 - 1 (so it also fits the int64 of
// JSON readers and PyTorch). These helpers are the one way sizes are multiplied, added and
// converted from doubles; past max_count they throw SizeOverflow, an InputError the CLI prints
// as one line naming the question's inputs. A question too large to count is refused, never
// wrapped.
//
//   std::uint64_t n = checked_mul(B, S, H);              // elements of (B, S, H)
//   std::uint64_t total = checked_add(params, grads);    // a sum of byte counts
//   std::uint64_t b = checked_round(2.5 * n);            // bytes per element times elements
//   double f = flop_product(2, B, S, H, V);              // FLOPs: doubles, no integer product
//
// It does not bound how large an answer may be for a GPU: that is the memory model's job.
#pragma once
#include <charconv>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <string_view>

#include "planner/config/error.hpp"

namespace remat {

inline constexpr std::uint64_t max_count =
    static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());

// A size past max_count. The message says what overflowed; the CLI adds the inputs to reduce.
struct SizeOverflow : InputError {
    explicit SizeOverflow(const std::string& message) : InputError(message) {}
};

[[noreturn]] void throw_size_overflow();

namespace detail {
inline std::uint64_t bounded(bool overflowed, std::uint64_t r) {
    if (overflowed || r > max_count) throw_size_overflow();
    return r;
}
// (The flag first: r is read only after the builtin has written it.)
inline std::uint64_t mul(std::uint64_t a, std::uint64_t b) {
    std::uint64_t r = 0;
    const bool overflowed = __builtin_mul_overflow(a, b, &r);
    return bounded(overflowed, r);
}
inline std::uint64_t add(std::uint64_t a, std::uint64_t b) {
    std::uint64_t r = 0;
    const bool overflowed = __builtin_add_overflow(a, b, &r);
    return bounded(overflowed, r);
}
}  // namespace detail

// a * b * ... and a + b + ..., each step checked against max_count.
template <typename... T>
std::uint64_t checked_mul(std::uint64_t a, T... rest) {
    ((a = detail::mul(a, static_cast<std::uint64_t>(rest))), ...);
    return a;
}
template <typename... T>
std::uint64_t checked_add(std::uint64_t a, T... rest) {
    ((a = detail::add(a, static_cast<std::uint64_t>(rest))), ...);
    return a;
}

// Text that is a count: decimal digits only (no sign, no 0x, no spaces), at most max_count;
// nullopt otherwise. The one reading of every integer a user types.
inline std::optional<std::uint64_t> decimal_count(std::string_view text) {
    std::uint64_t v = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (ec != std::errc() || end != text.data() + text.size() || v > max_count) return std::nullopt;
    return v;
}

// a += b, checked.
inline void add_to(std::uint64_t& a, std::uint64_t b) { a = checked_add(a, b); }

// ceil(a / b) for b > 0, without the overflow of (a + b - 1) / b.
inline std::uint64_t ceil_div(std::uint64_t a, std::uint64_t b) { return a / b + (a % b != 0); }

// A non-negative double (bytes per parameter times parameters, a fraction of a peak) rounded to
// the nearest count; NaN, negative and past max_count throw.
inline std::uint64_t checked_round(double v) {
    // 2^63 as a double: every double below it converts exactly.
    if (!(v >= 0.0) || !(v < 9223372036854775808.0)) throw_size_overflow();
    const auto r = static_cast<std::uint64_t>(std::llround(v));
    if (r > max_count) throw_size_overflow();
    return r;
}

// The product of counts as a double: FLOPs and traffic, which may exceed 2^63 legitimately and
// must never be formed as an integer product first.
template <typename... T>
double flop_product(T... factors) {
    return (1.0 * ... * static_cast<double>(factors));
}

}  // namespace remat
