// The counting allocator every tensor of a rank comes from: live bytes, the high-water mark,
// and an optional cap that turns an allocation beyond it into a clean out-of-memory report.
// It counts requested bytes (no rounding): on the CPU there is no reserve, so what it reports is
// what the planner's allocator-visible peak predicts. Underneath, freed blocks go to a
// process-wide pool, reused by size (what a caching allocator does) only to spare the OS's page
// faults across steps, ranks and the runs of a sweep: the counts never see them.
//
//   CountingAllocator a(cap_bytes);            // 0: no cap
//   a.set_context("B(3)", "attn.core");        // named in an OOM report
//   BufferRef x = make_buffer(a, n_bytes);     // freed when the last ref drops (make_zeroed:
//   zero-filled) a.live_bytes(); a.peak_bytes();
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>

namespace remat::rt {

// Where a backend's bytes come from: host memory for the CPU, a CUDA memory pool for CUDA.
// take/give are the raw blocks; the allocator above counts.
class MemorySource {
  public:
    virtual ~MemorySource() = default;
    virtual void* take(std::size_t bytes) = 0;
    virtual void give(void* p, std::size_t bytes) noexcept = 0;
    virtual void zero(void* p, std::size_t bytes) = 0;
};
// Host memory, pooled process-wide by size (ranks are threads of one process).
MemorySource& host_memory();

// The device refused memory outside the allocator: a library's workspace, or the modules a
// kernel's first launch loads. what() names the call. CountingAllocator::refused turns it into
// the OutOfMemory report of the action and op that were running.
struct DeviceOutOfMemory : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// An allocation beyond the cap, or one the device refused. what(): the one line the CLI prints.
struct OutOfMemory : std::runtime_error {
    OutOfMemory(std::uint64_t requested, std::uint64_t live, std::uint64_t cap, std::string action,
                std::string op);
    OutOfMemory(const DeviceOutOfMemory& refused, std::uint64_t live, std::string action,
                std::string op);
    std::uint64_t requested_bytes, live_bytes, cap_bytes;
    std::string text;  // what() with the inputs it names as placeholders (planner/config/error.hpp)
    std::string action, op;
};

class CountingAllocator {
  public:
    explicit CountingAllocator(std::uint64_t cap_bytes = 0, MemorySource& source = host_memory())
        : source_(&source), cap_(cap_bytes) {}
    CountingAllocator(const CountingAllocator&) = delete;
    CountingAllocator& operator=(const CountingAllocator&) = delete;

    void* allocate(std::uint64_t bytes, bool zero);  // throws OutOfMemory past the cap
    void deallocate(void* p, std::uint64_t bytes) noexcept;

    std::uint64_t live_bytes() const { return live_; }
    std::uint64_t peak_bytes() const { return peak_; }
    // The high-water mark since the last call (the peak during one Schedule action).
    std::uint64_t take_window_peak() {
        const std::uint64_t p = window_peak_;
        window_peak_ = live_;
        return p;
    }
    std::uint64_t cap_bytes() const { return cap_; }
    void set_context(std::string action, std::string op) {
        action_ = std::move(action);
        op_ = std::move(op);
    }
    void set_op(std::string op) { op_ = std::move(op); }
    // The report of a refusal outside the allocator, in the current action and op.
    OutOfMemory refused(const DeviceOutOfMemory& e) const {
        return OutOfMemory(e, live_, action_, op_);
    }

  private:
    MemorySource* source_;
    std::uint64_t cap_ = 0, live_ = 0, peak_ = 0, window_peak_ = 0;
    std::string action_, op_;
};

// One allocation, freed by its destructor. Shared ownership mirrors autograd's: a tensor lives
// while an op's inputs, a stage's saved set or the next stage's input still refer to it.
class Buffer {
  public:
    Buffer(CountingAllocator& a, std::uint64_t bytes, bool zero)
        : a_(&a), bytes_(bytes), p_(a.allocate(bytes, zero)) {}
    ~Buffer() { a_->deallocate(p_, bytes_); }
    Buffer(const Buffer&) = delete;
    Buffer& operator=(const Buffer&) = delete;

    template <class T>
    T* as() {
        return static_cast<T*>(p_);
    }
    template <class T>
    const T* as() const {
        return static_cast<const T*>(p_);
    }
    std::uint64_t bytes() const { return bytes_; }

  private:
    CountingAllocator* a_;
    std::uint64_t bytes_;
    void* p_;
};
using BufferRef = std::shared_ptr<Buffer>;
// Contents undefined: for what a kernel writes whole (outputs, staging, scratch).
inline BufferRef make_buffer(CountingAllocator& a, std::uint64_t bytes) {
    return std::make_shared<Buffer>(a, bytes, false);
}
// Zero-filled: for what is accumulated into (gradients, optimizer moments).
inline BufferRef make_zeroed(CountingAllocator& a, std::uint64_t bytes) {
    return std::make_shared<Buffer>(a, bytes, true);
}

}  // namespace remat::rt
