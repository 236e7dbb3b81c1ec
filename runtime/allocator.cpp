#include "runtime/allocator.hpp"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fmt/format.h>
#include <new>

namespace remat::rt {

namespace {
std::string oom_line(std::uint64_t requested, std::uint64_t live, std::uint64_t cap, const std::string& action,
                     const std::string& op) {
    return fmt::format("out of memory: {} bytes requested with {} bytes live, cap {} bytes (--memory-cap), in {}{}",
                       requested, live, cap, action.empty() ? "start-up" : action, op.empty() ? "" : ", op " + op);
}
}  // namespace

OutOfMemory::OutOfMemory(std::uint64_t requested, std::uint64_t live, std::uint64_t cap, std::string action_,
                         std::string op_)
    : std::runtime_error(oom_line(requested, live, cap, action_, op_)),
      requested_bytes(requested),
      live_bytes(live),
      cap_bytes(cap),
      action(std::move(action_)),
      op(std::move(op_)) {}

void* CountingAllocator::allocate(std::uint64_t bytes) {
    if (cap_ && live_ + bytes > cap_) throw OutOfMemory(bytes, live_, cap_, action_, op_);
    // 64-byte alignment for the BLAS; a zero-byte request still returns a unique pointer.
    const std::size_t size = (std::max<std::uint64_t>(bytes, 1) + 63) / 64 * 64;
    void* p = std::aligned_alloc(64, size);
    if (!p) throw std::bad_alloc();
    std::memset(p, 0, size);
    live_ += bytes;
    peak_ = std::max(peak_, live_);
    window_peak_ = std::max(window_peak_, live_);
    return p;
}

void CountingAllocator::deallocate(void* p, std::uint64_t bytes) noexcept {
    std::free(p);
    live_ -= bytes;
}

}  // namespace remat::rt
