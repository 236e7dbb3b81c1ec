// memory_snapshot.hpp. Keys and their meaning as torch/csrc/cuda/memory_snapshot.cpp writes them
// (segments L333-373, trace entries L401-440) and MemoryViz.js reads them: it matches a free to
// its alloc by address, merges an adjacent free_requested and free_completed into one free,
// and requires an `unknown` category once any entry has a category.
#include "tools/memory_snapshot.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <stdexcept>
#include <tuple>
#include <vector>

namespace remat::cli {
namespace {

using json = nlohmann::json;

// Where the one segment starts: a device-looking address, as PyTorch's would be.
constexpr std::uint64_t segment_base = 0x7f0000000000;

// First fit over one growing segment, no rounding.
class Layout {
  public:
    std::uint64_t alloc(std::uint64_t bytes) {
        for (auto it = free_.begin(); it != free_.end(); ++it) {
            const auto [offset, size] = *it;
            if (size >= bytes) {
                free_.erase(it);
                if (size > bytes) free_.emplace(offset + bytes, size - bytes);
                return offset;
            }
        }
        // A free range at the end grows into the new space.
        if (!free_.empty()) {
            const auto last = std::prev(free_.end());
            if (last->first + last->second == end_) {
                const std::uint64_t offset = last->first;
                free_.erase(last);
                end_ = offset + bytes;
                return offset;
            }
        }
        const std::uint64_t offset = end_;
        end_ += bytes;
        return offset;
    }
    void release(std::uint64_t offset, std::uint64_t bytes) {
        auto it = free_.emplace(offset, bytes).first;
        if (const auto next = std::next(it);
            next != free_.end() && it->first + it->second == next->first) {
            it->second += next->second;
            free_.erase(next);
        }
        if (it != free_.begin()) {
            const auto prev = std::prev(it);
            if (prev->first + prev->second == it->first) {
                prev->second += it->second;
                free_.erase(it);
            }
        }
    }
    std::uint64_t end() const { return end_; }

  private:
    std::map<std::uint64_t, std::uint64_t> free_;  // offset -> size
    std::uint64_t end_ = 0;
};

struct Block {
    std::uint64_t offset = 0, bytes = 0;
    Category category = Category::temporaries;  // the last one it had
    BlockTag tag;
    std::string op;
    std::uint32_t action = 0;
    bool live = true;
};

using TagKey = std::tuple<std::uint8_t, std::uint32_t, std::uint32_t>;
TagKey key(const BlockTag& t) { return {static_cast<std::uint8_t>(t.kind), t.a, t.b}; }

json frame(const std::string& name, const std::string& filename, std::uint64_t line) {
    return {{"name", name}, {"filename", filename}, {"line", line}};
}

}  // namespace

json memory_snapshot(const Chain& chain, const SimResult& traced, const std::string& strategy) {
    // Lay out every allocation; remember which block each event is about.
    Layout layout;
    std::vector<Block> blocks;
    std::vector<std::size_t> block_of(traced.trace.size());
    std::map<TagKey, std::size_t> live;
    for (std::size_t e = 0; e < traced.trace.size(); ++e) {
        const LedgerEvent& ev = traced.trace[e];
        // The replay's bookkeeping is checked, not trusted: a tag is one live allocation.
        if (ev.type == LedgerEvent::Type::alloc) {
            blocks.push_back(
                {layout.alloc(ev.bytes), ev.bytes, ev.category, ev.tag, ev.op, ev.action, true});
            if (!live.emplace(key(ev.tag), block_of[e] = blocks.size() - 1).second)
                throw std::logic_error(fmt::format("memory snapshot: '{}' is allocated while live",
                                                   block_name(chain, ev.tag)));
            continue;
        }
        const auto it = live.find(key(ev.tag));
        if (it == live.end() || blocks[it->second].bytes != ev.bytes)
            throw std::logic_error(
                fmt::format("memory snapshot: '{}' is released or moved but not live at {} bytes",
                            block_name(chain, ev.tag), ev.bytes));
        Block& b = blocks[block_of[e] = it->second];
        if (ev.type == LedgerEvent::Type::recategorize) {
            b.category = ev.category;
            continue;
        }
        layout.release(b.offset, b.bytes);
        b.live = false;
        live.erase(it);
    }

    const auto action_of = [&](std::uint32_t a) {
        return a < traced.timeline.size() ? traced.timeline[a].action
                                          : std::string("before the step");
    };
    const auto frames_of = [&](const Block& b) {
        json f = json::array();
        f.push_back(frame(block_name(chain, b.tag), std::string(category_name(b.category)), 0));
        if (!b.op.empty()) f.push_back(frame(b.op, "op", 0));
        f.push_back(frame(action_of(b.action), fmt::format("remat plan --strategy {}", strategy),
                          b.action == LedgerEvent::no_action ? 0 : b.action));
        return f;
    };

    const std::uint64_t total = layout.end();
    json trace = json::array();
    // The viewer needs an `unknown` category once any entry has one: the segment's.
    trace.push_back({{"action", "segment_alloc"},
                     {"addr", segment_base},
                     {"size", total},
                     {"stream", 0},
                     {"frames", json::array()},
                     {"category", "unknown"}});
    for (std::size_t e = 0; e < traced.trace.size(); ++e) {
        const LedgerEvent& ev = traced.trace[e];
        if (ev.type == LedgerEvent::Type::recategorize) continue;
        const Block& b = blocks[block_of[e]];
        const std::string category(category_name(b.category));
        const json entry = {{"addr", segment_base + b.offset},
                            {"size", b.bytes},
                            {"stream", 0},
                            {"frames", frames_of(b)},
                            {"category", category}};
        if (ev.type == LedgerEvent::Type::alloc) {
            json alloc = entry;
            alloc["action"] = "alloc";
            trace.push_back(std::move(alloc));
        } else {
            for (const char* action : {"free_requested", "free_completed"}) {
                json free = entry;
                free["action"] = action;
                trace.push_back(std::move(free));
            }
        }
    }

    // The segment as it stands after the step: live blocks in address order, gaps inactive.
    std::vector<const Block*> alive;
    for (const Block& b : blocks)
        if (b.live) alive.push_back(&b);
    std::sort(alive.begin(), alive.end(),
              [](const Block* x, const Block* y) { return x->offset < y->offset; });
    json segment_blocks = json::array();
    std::uint64_t at = 0, allocated = 0;
    const auto gap = [&](std::uint64_t to) {
        if (to > at)
            segment_blocks.push_back({{"address", segment_base + at},
                                      {"size", to - at},
                                      {"requested_size", 0},
                                      {"state", "inactive"},
                                      {"frames", json::array()}});
    };
    for (const Block* b : alive) {
        gap(b->offset);
        segment_blocks.push_back({{"address", segment_base + b->offset},
                                  {"size", b->bytes},
                                  {"requested_size", b->bytes},
                                  {"state", "active_allocated"},
                                  {"frames", frames_of(*b)}});
        at = b->offset + b->bytes;
        allocated += b->bytes;
    }
    gap(total);
    json segments = json::array();
    if (total > 0)
        segments.push_back({{"device", 0},
                            {"address", segment_base},
                            {"total_size", total},
                            {"allocated_size", allocated},
                            {"active_size", allocated},
                            {"requested_size", allocated},
                            {"stream", 0},
                            {"segment_type", "large"},
                            {"segment_pool_id", json::array({0, 0})},
                            {"is_expandable", false},
                            {"frames", json::array()},
                            {"blocks", std::move(segment_blocks)}});
    return {{"segments", std::move(segments)},
            {"device_traces", json::array({std::move(trace)})},
            {"allocator_settings", json::object()}};
}

}  // namespace remat::cli
