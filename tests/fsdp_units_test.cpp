// FSDP's unit policy (planner/config/fsdp_units), which the replay and the executor both follow:
// the gathered set at every action of a small schedule, written out by hand from the policy's
// rules, not from its code.
#include "planner/config/fsdp_units.hpp"

#include <doctest/doctest.h>
#include <fmt/format.h>

#include <algorithm>
#include <set>
#include <vector>

using namespace remat;

namespace {

// Embedding, block 1, block 2, final norm, head: the root unit 0 and one unit per block.
const std::vector<std::size_t> five_stage_units = {0, 1, 2, 0, 0};

// keeps {all, input, none, all, all}: F_all(0) F_ck(1) F_none(2) F_all(3) F_all(4), then B(4) B(3),
// the segment [1, 2] recomputed (F_all(1)* F_all(2)*), B(2) B(1) B(0).
Schedule segment_schedule() {
    return schedule_from_keeps({Keep::all, Keep::input, Keep::none, Keep::all, Keep::all});
}

std::set<std::size_t> gathered_set(const UnitPolicy& p, std::size_t n_units) {
    std::set<std::size_t> out;
    for (std::size_t u = 0; u < n_units; ++u)
        if (p.gathered(u)) out.insert(u);
    return out;
}

// Runs the policy over s and returns the gathered set at each action, checking on the way that
// the changes it reported are what the sets differ by, in ascending order.
std::vector<std::set<std::size_t>> gathered_per_action(UnitPolicy& p, const Schedule& s,
                                                       std::size_t n_units) {
    std::vector<std::set<std::size_t>> out;
    std::set<std::size_t> before;
    for (std::size_t a = 0; a < s.actions.size(); ++a) {
        const UnitChanges& c = p.start(a);
        CHECK(std::is_sorted(c.freed.begin(), c.freed.end()));
        CHECK(std::is_sorted(c.gathered.begin(), c.gathered.end()));
        std::set<std::size_t> expected = before;
        for (std::size_t u : c.freed) CHECK(expected.erase(u) == 1);
        for (std::size_t u : c.gathered) CHECK(expected.insert(u).second);
        out.push_back(gathered_set(p, n_units));
        CHECK(out.back() == expected);
        before = out.back();
        p.finish(a);
    }
    return out;
}

}  // namespace

TEST_CASE("fsdp_units::UnitPolicy gathers the root unit, the action's own and one prefetched") {
    const Schedule s = segment_schedule();
    REQUIRE(s.actions.size() == 12);
    SUBCASE("resharding after forward (FULL_SHARD)") {
        UnitPolicy p(s, five_stage_units, 3,
                     {.gather_per_unit = true, .reshard_after_forward = true});
        const std::vector<std::set<std::size_t>> want = {
            {0, 1},     // F_all(0): root, prefetch block 1
            {0, 1, 2},  // F_ck(1): its own, prefetch block 2
            {0, 2},     // F_none(2): its own; the next stage (final norm) is the root
            {0},        // F_all(3)
            {0},        // F_all(4): the head, nothing after it
            {0},        // B(4): prefetch the final norm's, the root
            {0, 2},     // B(3): prefetch block 2
            {0, 1, 2},  // F_all(1)*: its own and the unit of the backward that follows, B(2)
            {0, 2},     // F_all(2)*: its own, which is also B(2)'s
            {0, 1, 2},  // B(2): prefetch block 1
            {0, 1},     // B(1): prefetch the embedding's, the root
            {0},        // B(0)
        };
        const auto got = gathered_per_action(p, s, 3);
        for (std::size_t a = 0; a < want.size(); ++a) {
            INFO(fmt::format("{}", action_label(s.actions[a])));
            CHECK(got[a] == want[a]);
        }
        const UnitChanges& last = p.finish_step();
        CHECK(last.freed == std::vector<std::size_t>{0});
        CHECK(last.gathered.empty());
        // Ready for the next step: the same sets again.
        CHECK(gathered_per_action(p, s, 3) == want);
    }
    SUBCASE("no resharding after forward (SHARD_GRAD_OP): a unit stays while a stage is open") {
        UnitPolicy p(s, five_stage_units, 3,
                     {.gather_per_unit = true, .reshard_after_forward = false});
        const std::vector<std::set<std::size_t>> want = {
            {0, 1},     // F_all(0)
            {0, 1, 2},  // F_ck(1)
            {0, 1, 2},  // F_none(2): block 1 is open
            {0, 1, 2},  // F_all(3): blocks 1 and 2 stay open until their backward
            {0, 1, 2},  // F_all(4)
            {0, 1, 2},  // B(4)
            {0, 1, 2},  // B(3)
            {0, 1, 2},  // F_all(1)*
            {0, 1, 2},  // F_all(2)*
            {0, 1, 2},  // B(2)
            {0, 1},     // B(1): block 2 has run backward
            {0},        // B(0): block 1 has too
        };
        CHECK(gathered_per_action(p, s, 3) == want);
        CHECK(p.finish_step().freed == std::vector<std::size_t>{0});
        CHECK(gathered_per_action(p, s, 3) == want);
    }
    SUBCASE("without per-unit gathering (DDP, ZeRO-1/2) nothing is gathered") {
        UnitPolicy p(s, five_stage_units, 3,
                     {.gather_per_unit = false, .reshard_after_forward = true});
        for (const auto& set : gathered_per_action(p, s, 3)) CHECK(set.empty());
        CHECK(p.finish_step().freed.empty());
    }
}

TEST_CASE("fsdp_units::UnitPolicy reports each change once, frees before gathers") {
    const Schedule s = segment_schedule();
    UnitPolicy p(s, five_stage_units, 3, UnitFlags{});
    const UnitChanges c0 = p.start(0);  // F_all(0)
    CHECK(c0.freed.empty());
    CHECK(c0.gathered == std::vector<std::size_t>{0, 1});
    p.finish(0);
    const UnitChanges c1 = p.start(1);  // F_ck(1)
    CHECK(c1.freed.empty());
    CHECK(c1.gathered == std::vector<std::size_t>{2});
    p.finish(1);
    const UnitChanges c2 = p.start(2);  // F_none(2)
    CHECK(c2.freed == std::vector<std::size_t>{1});
    CHECK(c2.gathered.empty());
}

TEST_CASE("fsdp_units::UnitPolicy completes a unit's gradients at its first stage's backward") {
    const UnitPolicy p(segment_schedule(), five_stage_units, 3, UnitFlags{});
    CHECK(p.completes_gradients(0));   // the embedding: the root unit's last backward
    CHECK(p.completes_gradients(1));   // block 1
    CHECK(p.completes_gradients(2));   // block 2
    CHECK(!p.completes_gradients(3));  // the final norm: the root unit is not complete yet
    CHECK(!p.completes_gradients(4));  // the head
    CHECK(p.unit_of(3) == 0);
}
