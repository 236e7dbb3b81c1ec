// The replay's byte ledger (planner/simulate/ledger): totals by category, the peak and what set
// it, one timeline point per action. Exact integers: no tolerance.
#include "planner/simulate/ledger.hpp"

#include <doctest/doctest.h>

using namespace remat;

TEST_CASE("ledger::Ledger") {
    Ledger l;
    l.alloc(Category::parameters, 100);
    l.alloc(Category::optimizer, 200);
    const std::string op = "attn.core";

    SUBCASE("the peak records the action, the op, the category and the breakdown of its moment") {
        l.begin_action("F_all(0)");
        l.alloc(Category::temporaries, 50, &op);
        l.recategorize(Category::temporaries, Category::activations, 30);  // 30 kept for backward
        l.alloc(Category::unsharded, 10);
        l.release(Category::temporaries, 20);
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
        l.alloc(Category::temporaries, 50, &op);
        l.release(Category::temporaries, 50);
        l.end_action();
        l.begin_action("B(0)");
        l.alloc(Category::gradients, 50);
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
        l.alloc(Category::temporaries, 70);
        l.release(Category::temporaries, 70);
        l.alloc(Category::activations, 5);
        l.end_action();
        l.begin_action("B(0)");
        l.release(Category::activations, 5);
        l.end_action();
        const std::vector<TimelinePoint> t = l.take_timeline();
        REQUIRE(t.size() == 2);
        CHECK(t[0].action == "F_all(0)");
        CHECK(t[0].live_bytes == 305);
        CHECK(t[0].peak_bytes == 370);
        CHECK(t[1].action == "B(0)");
        CHECK(t[1].live_bytes == 300);
        CHECK(t[1].peak_bytes == 305);  // what was live as it began
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
