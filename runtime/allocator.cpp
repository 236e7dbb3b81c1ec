#include "runtime/allocator.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <unordered_map>
#include <vector>

#include "planner/config/error.hpp"

namespace remat::rt {

namespace {
// 64-byte alignment for the BLAS; a zero-byte request still gets a unique block.
std::size_t block_size(std::uint64_t bytes) {
    return (std::max<std::uint64_t>(bytes, 1) + 63) / 64 * 64;
}

// Freed blocks by size, shared by every allocator of the process (ranks are threads).
class HostPool final : public MemorySource {
  public:
    void* take(std::size_t size) override {
        {
            std::lock_guard lock(mu_);
            if (auto it = free_.find(size); it != free_.end() && !it->second.empty()) {
                void* p = it->second.back();
                it->second.pop_back();
                return p;
            }
        }
        void* p = std::aligned_alloc(64, size);
        if (!p) throw std::bad_alloc();
        return p;
    }
    void give(void* p, std::size_t size) noexcept override {
        try {
            std::lock_guard lock(mu_);
            free_[size].push_back(p);
        } catch (...) {
            std::free(p);  // no room to remember it: give it back to the OS
        }
    }
    void zero(void* p, std::size_t size) override { std::memset(p, 0, size); }
    ~HostPool() override {
        for (auto& [size, blocks] : free_)
            for (void* p : blocks) std::free(p);
    }

  private:
    std::mutex mu_;
    std::unordered_map<std::size_t, std::vector<void*>> free_;
};

std::string where(const std::string& action, const std::string& op) {
    return fmt::format("in {}{}", action.empty() ? "start-up" : action,
                       op.empty() ? "" : ", op " + op);
}

std::string oom_line(std::uint64_t requested, std::uint64_t live, std::uint64_t cap,
                     const std::string& action, const std::string& op) {
    const std::string limit = cap ? fmt::format("cap {} bytes ({})", cap, named(Input::memory_cap))
                                  : "the device has no more";
    return fmt::format("out of memory: {} bytes requested with {} bytes live, {}, {}", requested,
                       live, limit, where(action, op));
}
}  // namespace

MemorySource& host_memory() {
    static HostPool pool;
    return pool;
}

OutOfMemory::OutOfMemory(std::uint64_t requested, std::uint64_t live, std::uint64_t cap,
                         std::string action_, std::string op_)
    : std::runtime_error(name_inputs(oom_line(requested, live, cap, action_, op_))),
      requested_bytes(requested),
      live_bytes(live),
      cap_bytes(cap),
      text(oom_line(requested, live, cap, action_, op_)),
      action(std::move(action_)),
      op(std::move(op_)) {}

OutOfMemory::OutOfMemory(const DeviceOutOfMemory& refused, std::uint64_t live, std::string action_,
                         std::string op_)
    : std::runtime_error(fmt::format(
          "out of memory: {} outside the allocator with {} bytes live, the device has no "
          "more, {}",
          refused.what(), live, where(action_, op_))),
      requested_bytes(0),
      live_bytes(live),
      cap_bytes(0),
      text(what()),
      action(std::move(action_)),
      op(std::move(op_)) {}

void* CountingAllocator::allocate(std::uint64_t bytes, bool zero) {
    if (cap_ && live_ + bytes > cap_) throw OutOfMemory(bytes, live_, cap_, action_, op_);
    const std::size_t size = block_size(bytes);
    void* p = nullptr;
    try {
        p = source_->take(size);
    } catch (const std::bad_alloc&) {
        throw OutOfMemory(bytes, live_, 0, action_, op_);  // the device itself has no more (cap 0)
    }
    if (zero) source_->zero(p, size);
    live_ += bytes;
    peak_ = std::max(peak_, live_);
    window_peak_ = std::max(window_peak_, live_);
    return p;
}

void CountingAllocator::deallocate(void* p, std::uint64_t bytes) noexcept {
    source_->give(p, block_size(bytes));
    live_ -= bytes;
}

}  // namespace remat::rt
