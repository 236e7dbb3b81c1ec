// The replay's byte ledger: what is live on one rank, by category, the running total, its
// high-water mark with what set it (action, op, category, the breakdown at that moment), and one
// timeline point per action. It knows nothing of stages, units or schedules: the replay
// (simulate.cpp) tells it what is allocated and freed, and when an action begins and ends.
//
//   Ledger ledger;
//   ledger.begin_action("F_ck(3)");
//   ledger.alloc(Category::temporaries, bytes, tag, &op);  // op: named if it sets the peak
//   ledger.release(Category::temporaries, bytes, tag);     // tag: the same as its alloc's
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
    Breakdown at_peak;             // peak_bytes by category (reserve_bytes 0)
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

// Which allocation a ledger entry is, for a trace of them (a memory snapshot): a kind and the
// indices that tell two of a kind apart. The replay tags what it allocates and releases with the
// same tag; block_name (simulate.hpp) names a tag. Untraced ledgers ignore tags.
enum class BlockKind : std::uint8_t {
    states,          // a: the Category of a persistent state (parameters, optimizer, gradients)
    accumulated,     // gradients left by earlier micro-steps
    boundary,        // a: the stage whose input it is (x_a)
    storage,         // a: stage, b: its graph's storage
    workspace,       // an op's scratch, freed when the op ends
    unit,            // a: FSDP unit, gathered
    cast,            // a: stage, autocast's low-precision weight copies
    mask,            // a: which eager causal mask
    held_embedding,  // the base model's inputs_embeds local
    rotary,          // the rotary cos/sin tables
    rng,             // a: stage, a checkpoint's saved CPU RNG state
    grad,            // a: stage, b: the storage whose gradient it is
    boundary_grad,   // a: the stage whose input gradient it is
    unit_grad,       // a: unit, unsharded gradients
    reduce_scatter,  // a: unit, the reduce-scatter's output
    shard_grad,      // a: unit, p.grad of the shard
    ddp_grad,        // a: stage, p.grad (DDP)
    tied_grad,       // a tied embedding's own gradient
    optimizer_temp,  // torch.optim's step temporary
    reference,       // DPO's reference forward
};
struct BlockTag {
    BlockKind kind = BlockKind::workspace;
    std::uint32_t a = 0, b = 0;
    bool operator==(const BlockTag&) const = default;
};

// One allocation or release, in order (Ledger::trace). A recategorized allocation (a temporary
// kept for backward) keeps its tag; the event says the category it moved to.
struct LedgerEvent {
    enum class Type : std::uint8_t { alloc, release, recategorize } type = Type::alloc;
    Category category = Category::temporaries;  // recategorize: the new one
    std::uint64_t bytes = 0;
    BlockTag tag;
    std::string op;  // the op that allocated, "" when none was named
    // Index into the timeline: the action running, or the next one between two; no_action
    // before the first (the model states, the step's input).
    std::uint32_t action = 0;
    static constexpr std::uint32_t no_action = UINT32_MAX;
};

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
        action_at_ = breakdown();
    }
    void end_action() { timeline_.push_back({action_, used_, action_peak_, action_at_}); }

    // Record every alloc, release and recategorize from now on (trace()).
    void record() { recording_ = true; }

    void alloc(Category k, std::uint64_t bytes, BlockTag tag, const std::string* op = nullptr) {
        add_to(bytes_[index(k)], bytes);
        add_to(used_, bytes);
        if (used_ > action_peak_) {
            action_peak_ = used_;
            action_at_ = breakdown();
        }
        if (used_ > peak_.bytes) raise_peak(k, op);
        if (recording_ && bytes)
            trace_.push_back({LedgerEvent::Type::alloc, k, bytes, tag, op ? *op : std::string(),
                              event_action()});
    }
    void release(Category k, std::uint64_t bytes, BlockTag tag) {
        assert(bytes_[index(k)] >= bytes && used_ >= bytes && "freeing more than is live");
        bytes_[index(k)] -= bytes;
        used_ -= bytes;
        if (recording_ && bytes)
            trace_.push_back(
                {LedgerEvent::Type::release, k, bytes, tag, std::string(), event_action()});
    }
    // Bytes that stay live but count elsewhere (a temporary kept for backward is an activation).
    void recategorize(Category from, Category to, std::uint64_t bytes, BlockTag tag) {
        bytes_[index(from)] -= bytes;
        bytes_[index(to)] += bytes;
        if (recording_ && bytes)
            trace_.push_back(
                {LedgerEvent::Type::recategorize, to, bytes, tag, std::string(), event_action()});
    }

    std::uint64_t used() const { return used_; }
    const std::string& action() const { return action_; }  // the running action's label
    const LedgerPeak& peak() const { return peak_; }
    std::vector<TimelinePoint> take_timeline() { return std::move(timeline_); }
    std::vector<LedgerEvent> take_trace() { return std::move(trace_); }

  private:
    static std::size_t index(Category k) { return static_cast<std::size_t>(k); }
    void raise_peak(Category k, const std::string* op);
    Breakdown breakdown() const;
    std::uint32_t event_action() const {
        return action_.empty() && timeline_.empty() ? LedgerEvent::no_action
                                                    : static_cast<std::uint32_t>(timeline_.size());
    }

    std::array<std::uint64_t, n_categories> bytes_{};
    std::uint64_t used_ = 0, action_peak_ = 0;
    std::string action_;
    LedgerPeak peak_;
    Breakdown action_at_;
    std::vector<TimelinePoint> timeline_;
    bool recording_ = false;
    std::vector<LedgerEvent> trace_;
};

}  // namespace remat
