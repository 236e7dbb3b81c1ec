// The plan's figure for the report (tools/plan_figure): the DOT titled with the question and
// each plan's verdict, rendered in process by Graphviz's library (libgvc), and its refusal.
#include "tools/plan_figure.hpp"

#include <doctest/doctest.h>

#include <stdexcept>
#include <string>

#include "planner/simulate/memory.hpp"
#include "planner/strategy/strategy.hpp"

using namespace remat;

TEST_SUITE("plan_figure") {
    TEST_CASE("plan_figure::the plan's DOT, titled, rendered to SVG by libgvc") {
        Question q;
        q.model = load_model("tiny-gpt2");
        q.options.seq = 64;
        q.gpu = load_gpu("h100-80gb");
        q.context.capacity_bytes = q.gpu.capacity_bytes;
        q.context.reserve = default_reserve(q.gpu);
        const std::string dot = cli::plan_dot(
            q, {evaluate(q, parse_strategy("none")), evaluate(q, parse_strategy("sqrt"))}, false,
            false);
        CHECK(dot.find("labelloc=\"t\"") != std::string::npos);
        CHECK(dot.find("label=\"tiny-gpt2 (") != std::string::npos);
        CHECK(dot.find("of 79.65 GiB: fits\";") != std::string::npos);
        const std::string svg = cli::dot_to_svg(dot);
        CHECK(svg.starts_with("<svg"));  // no XML prologue: it goes inline into HTML
        CHECK(svg.find("class=\"node\"") != std::string::npos);
        CHECK(svg.find("blocks 0&#45;3 (x4)") != std::string::npos);  // Graphviz escapes '-'
        CHECK(svg.find("tiny&#45;gpt2") != std::string::npos);
    }

    TEST_CASE("plan_figure::what Graphviz cannot read is an error, not an empty figure") {
        CHECK_THROWS_AS(cli::dot_to_svg("digraph G { a -> "), std::runtime_error);
    }
}
