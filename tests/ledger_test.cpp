// The replay's byte ledger (planner/simulate/ledger): totals by category, the peak and what set
// it, one timeline point per action. Exact integers: no tolerance.
#include "planner/simulate/ledger.hpp"

#include <doctest/doctest.h>

using namespace remat;

TEST_CASE("ledger::Ledger") {
    Ledger l;
    l.alloc(Category::parameters, 100, {});
    l.alloc(Category::optimizer, 200, {});
    const std::string op = "attn.core";

    SUBCASE("the peak records the action, the op, the category and the breakdown of its moment") {
        l.begin_action("F_all(0)");
        l.alloc(Category::temporaries, 50, {}, &op);
        l.recategorize(Category::temporaries, Category::activations, 30,
                       {});  // 30 kept for backward
        l.alloc(Category::unsharded, 10, {});
        l.release(Category::temporaries, 20, {});
        l.end_action();
        CHECK(l.used() == 340);
        const LedgerPeak& p = l.peak();
        CHECK(p.bytes == 360);
        CHECK(p.action == "F_all(0)");
        CHECK(p.op.empty());  // the gather named no op
        CHECK(p.category == "unsharded parameters");
        CHECK(p.at.parameters_bytes == 100);
        CHECK(p.at.optimizer_bytes == 200);
        CHECK(p.at.activations_bytes == 30);
        CHECK(p.at.temporaries_bytes == 20);
        CHECK(p.at.unsharded_parameters_bytes == 10);
        CHECK(p.at.gradients_bytes == 0);
        CHECK(p.at.reserve_bytes == 0);
        CHECK(p.at.allocator_total() == p.bytes);
    }
    SUBCASE("a lower total later does not move the peak; an equal one does not either") {
        l.begin_action("F_all(0)");
        l.alloc(Category::temporaries, 50, {}, &op);
        l.release(Category::temporaries, 50, {});
        l.end_action();
        l.begin_action("B(0)");
        l.alloc(Category::gradients, 50, {});
        l.end_action();
        CHECK(l.peak().bytes == 350);
        CHECK(l.peak().action == "F_all(0)");
        CHECK(l.peak().op == "attn.core");
        CHECK(l.peak().category == "temporaries");
        CHECK(l.peak().at.temporaries_bytes == 50);
        CHECK(l.peak().at.gradients_bytes == 0);
    }
    SUBCASE("the timeline: live bytes after each action, its high-water mark during it") {
        l.begin_action("F_all(0)");
        l.alloc(Category::temporaries, 70, {});
        l.release(Category::temporaries, 70, {});
        l.alloc(Category::activations, 5, {});
        l.end_action();
        l.begin_action("B(0)");
        l.release(Category::activations, 5, {});
        l.end_action();
        const std::vector<TimelinePoint> t = l.take_timeline();
        REQUIRE(t.size() == 2);
        CHECK(t[0].action == "F_all(0)");
        CHECK(t[0].live_bytes == 305);
        CHECK(t[0].peak_bytes == 370);
        CHECK(t[1].action == "B(0)");
        CHECK(t[1].live_bytes == 300);
        CHECK(t[1].peak_bytes == 305);  // what was live as it began
        // Each point's high-water mark by category, at the moment it was reached.
        CHECK(t[0].at_peak.temporaries_bytes == 70);
        CHECK(t[0].at_peak.activations_bytes == 0);
        CHECK(t[0].at_peak.allocator_total() == t[0].peak_bytes);
        CHECK(t[1].at_peak.activations_bytes == 5);
        CHECK(t[1].at_peak.allocator_total() == t[1].peak_bytes);
    }
    SUBCASE("a recording ledger traces every change with its tag, action and op") {
        Ledger r;
        r.alloc(Category::parameters, 100, {BlockKind::states});  // before recording: not traced
        r.record();
        r.alloc(Category::optimizer, 8, {BlockKind::states, 2});  // before any action
        r.begin_action("F_all(0)");
        r.alloc(Category::temporaries, 40, {BlockKind::storage, 1, 7}, &op);
        r.recategorize(Category::temporaries, Category::activations, 40,
                       {BlockKind::storage, 1, 7});
        r.end_action();
        r.begin_action("B(0)");
        r.release(Category::activations, 40, {BlockKind::storage, 1, 7});
        r.alloc(Category::temporaries, 0, {BlockKind::workspace});  // nothing to trace
        r.end_action();
        std::vector<LedgerEvent> t = r.take_trace();
        REQUIRE(t.size() == 4);
        CHECK(t.front().action == LedgerEvent::no_action);
        t.erase(t.begin());
        CHECK(t[0].type == LedgerEvent::Type::alloc);
        CHECK(t[0].op == "attn.core");
        CHECK(t[0].action == 0);
        CHECK(t[0].tag == BlockTag{BlockKind::storage, 1, 7});
        CHECK(t[1].type == LedgerEvent::Type::recategorize);
        CHECK(t[1].category == Category::activations);
        CHECK(t[2].type == LedgerEvent::Type::release);
        CHECK(t[2].action == 1);
        CHECK(t[2].bytes == 40);
        CHECK(l.take_trace().empty());  // a ledger that does not record traces nothing
    }
    SUBCASE("category names, as the reports print them") {
        CHECK(category_name(Category::parameters) == "parameters");
        CHECK(category_name(Category::gradients) == "gradients");
        CHECK(category_name(Category::optimizer) == "optimizer state");
        CHECK(category_name(Category::unsharded) == "unsharded parameters");
        CHECK(category_name(Category::activations) == "activations");
        CHECK(category_name(Category::temporaries) == "temporaries");
    }
}
