// The replay's byte ledger: what is live on one rank, by category, the running total, its
// high-water mark with what set it (action, op, category, the breakdown at that moment), and one
// timeline point per action. It knows nothing of stages, units or schedules: the replay
// (simulate.cpp) tells it what is allocated and freed, and when an action begins and ends.
//
//   Ledger ledger;
//   ledger.begin_action("F_ck(3)");
//   ledger.alloc(Category::temporaries, bytes, &op_name);  // op_name: named if it sets the peak
//   ledger.release(Category::temporaries, bytes);
//   ledger.end_action();                                   // a TimelinePoint
//   ledger.peak().bytes; ledger.peak().at;
#pragma once
#include <algorithm>
#include <array>
#include <cassert>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "planner/config/checked.hpp"

namespace remat {

struct Breakdown {
    std::uint64_t parameters_bytes = 0;            // persistent, per rank
    std::uint64_t gradients_bytes = 0;             // live gradient storage at that moment
    std::uint64_t optimizer_bytes = 0;             // persistent, per rank
    std::uint64_t unsharded_parameters_bytes = 0;  // gathered units, autocast weight copies
    std::uint64_t activations_bytes = 0;           // kept for backward, checkpoints, stage outputs
    std::uint64_t temporaries_bytes = 0;           // in-flight tensors, grad buffers, workspaces
    std::uint64_t reserve_bytes = 0;
    std::uint64_t allocator_total() const {
        return parameters_bytes + gradients_bytes + optimizer_bytes + unsharded_parameters_bytes +
               activations_bytes + temporaries_bytes;
    }
};

struct TimelinePoint {
    std::string action;            // "F_ck(3)", "B(3)", "optimizer"
    std::uint64_t live_bytes = 0;  // allocator-visible, after the action
    std::uint64_t peak_bytes = 0;  // allocator-visible high-water mark during the action
};

// The columns of a Breakdown, in its order.
enum class Category : std::uint8_t {
    parameters,
    gradients,
    optimizer,
    unsharded,
    activations,
    temporaries,
};
inline constexpr std::size_t n_categories = 6;
// "parameters", ..., "unsharded parameters", ...: as the reports print them.
std::string_view category_name(Category k);

// The high-water mark of the allocator-visible total, and what set it.
struct LedgerPeak {
    std::uint64_t bytes = 0;
    std::string action;    // the action running when it was set
    std::string op;        // the op that allocated, "" when none was named
    std::string category;  // category_name of that allocation
    Breakdown at;          // by category at that moment (reserve_bytes 0)
};

class Ledger {
  public:
    // Actions: the timeline gets one point per action, its peak the label of the running one.
    void begin_action(std::string label) {
        action_ = std::move(label);
        action_peak_ = used_;
    }
    void end_action() { timeline_.push_back({action_, used_, action_peak_}); }

    void alloc(Category k, std::uint64_t bytes, const std::string* op = nullptr) {
        add_to(bytes_[index(k)], bytes);
        add_to(used_, bytes);
        action_peak_ = std::max(action_peak_, used_);
        if (used_ > peak_.bytes) raise_peak(k, op);
    }
    void release(Category k, std::uint64_t bytes) {
        assert(bytes_[index(k)] >= bytes && used_ >= bytes && "freeing more than is live");
        bytes_[index(k)] -= bytes;
        used_ -= bytes;
    }
    // Bytes that stay live but count elsewhere (a temporary kept for backward is an activation).
    void recategorize(Category from, Category to, std::uint64_t bytes) {
        bytes_[index(from)] -= bytes;
        bytes_[index(to)] += bytes;
    }

    std::uint64_t used() const { return used_; }
    const std::string& action() const { return action_; }  // the running action's label
    const LedgerPeak& peak() const { return peak_; }
    std::vector<TimelinePoint> take_timeline() { return std::move(timeline_); }

  private:
    static std::size_t index(Category k) { return static_cast<std::size_t>(k); }
    void raise_peak(Category k, const std::string* op);

    std::array<std::uint64_t, n_categories> bytes_{};
    std::uint64_t used_ = 0, action_peak_ = 0;
    std::string action_;
    LedgerPeak peak_;
    std::vector<TimelinePoint> timeline_;
};

}  // namespace remat
