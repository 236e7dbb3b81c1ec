// The report's charts (tools/chart): what the SVG draws for each series, hover text on every
// point, escaping, axes; and that the Plotly figure carries the same data in the seed's format
// (the seed's chart: {"layout": {"title", "xaxis": {"title"}, ...}, "data": [{"x", "y",
// "type": "scatter", "mode": "lines+markers", "name", "line": {"color", "width"}}]}).
#include "tools/chart.hpp"

#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <string>

#include "tests/text_count.hpp"

using namespace remat::cli;

namespace {

using test_text::count;

Figure seed_like() {
    Figure f;
    f.id = "memory";
    f.title = "Memory Usage vs Batch Size (7B Param Model)";
    f.x_title = "Micro-Batch Size";
    f.y_title = "Peak Memory (GB)";
    f.x_axis = Axis::log2;
    Series standard = make_series("Standard Training", "#fa5252");
    standard.x = {1, 2, 4, 8, 16, 32};
    standard.y = {24, 32, 48, 80, 144, 272};
    standard.hover = {"a", "b", "c", "d", "e", "f"};
    f.series.push_back(standard);
    Series checkpointing = make_series("Activation Checkpointing", "#228be6");
    checkpointing.x = {1, 2, 4, 8, 16, 32, 64};
    checkpointing.y = {18, 20, 24, 32, 48, 80, 144};
    f.series.push_back(checkpointing);
    Series limit = make_series("GPU Memory Limit (80GB)", "#868e96", SeriesKind::line);
    limit.x = {1, 64};
    limit.y = {80, 80};
    limit.dashed = true;
    f.series.push_back(limit);
    f.notes.push_back({8, 80, "none: max 4 <b>"});
    return f;
}

}  // namespace

TEST_SUITE("chart") {
    TEST_CASE("chart::to_svg draws every point, line and note, with hover text") {
        const std::string svg = to_svg(seed_like());
        CHECK(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\" id=\"chart-memory\""));
        CHECK(svg.ends_with("</svg>\n"));
        CHECK(count(svg, "<circle class=\"point\"") == 6 + 7);  // markers of the two curves
        CHECK(count(svg, "<polyline class=\"series\"") == 3);   // the limit is a line too
        CHECK(count(svg, "stroke-dasharray=\"8 4 2 4\"") == 1);
        CHECK(svg.find("data-tip=\"c\"><title>c</title>") != std::string::npos);
        // Escaped: a note's markup stays text.
        CHECK(svg.find("none: max 4 &lt;b&gt;") != std::string::npos);
        CHECK(svg.find("<b>") == std::string::npos);
        // A log2 axis ticks at the powers of two.
        for (const char* t : {">1<", ">2<", ">4<", ">8<", ">16<", ">32<", ">64<"})
            CHECK(svg.find(t) != std::string::npos);
        // The legend names each series once.
        CHECK(count(svg, ">Standard Training</text>") == 1);
        CHECK(count(svg, ">GPU Memory Limit (80GB)</text>") == 1);
    }

    TEST_CASE("chart::stacked bars start where the series below ended") {
        Figure f;
        f.id = "t";
        f.x_axis = Axis::categorical;
        f.x_labels = {"F(0)", "B(0)"};
        Series below = make_series("below", "#111111", SeriesKind::bar);
        below.x = {0, 1};
        below.y = {10, 0};
        Series above = make_series("above", "#222222", SeriesKind::bar);
        above.x = {0, 1};
        above.y = {5, 20};
        f.series.push_back(below);
        f.series.push_back(above);
        const std::string svg = to_svg(f, 400, 300);
        // 3 bars: a zero value draws nothing.
        CHECK(count(svg, "<rect class=\"bar\"") == 3);
        // y from 0 to 20 * 1.08 over the plot height (300 - 44 - 70 = 186 px), bottom at 230:
        // "above" at x=0 spans 10..15, so its top is 230 - 15/21.6*186.
        const double top = 230 - 15 / 21.6 * 186;
        char expect[64];
        std::snprintf(expect, sizeof expect, "y=\"%.2f\"", top);
        CHECK(svg.find(expect) != std::string::npos);
        CHECK(svg.find(">F(0)</text>") != std::string::npos);
        CHECK(svg.find(">B(0)</text>") != std::string::npos);
    }

    TEST_CASE("chart::to_plotly writes the seed's format") {
        const nlohmann::json p = to_plotly(seed_like());
        CHECK(p["layout"]["title"] == "Memory Usage vs Batch Size (7B Param Model)");
        CHECK(p["layout"]["xaxis"]["title"] == "Micro-Batch Size");
        CHECK(p["layout"]["xaxis"]["type"] == "log");
        CHECK(p["layout"]["yaxis"]["title"] == "Peak Memory (GB)");
        CHECK(p["layout"]["plot_bgcolor"] == "white");
        REQUIRE(p["data"].size() == 3);
        const auto& standard = p["data"][0];
        CHECK(standard["type"] == "scatter");
        CHECK(standard["mode"] == "lines+markers");
        CHECK(standard["name"] == "Standard Training");
        CHECK(standard["x"] == nlohmann::json::array({1, 2, 4, 8, 16, 32}));
        CHECK(standard["y"] == nlohmann::json::array({24, 32, 48, 80, 144, 272}));
        CHECK(standard["line"]["color"] == "#fa5252");
        CHECK(standard["hovertext"].size() == 6);
        CHECK(p["data"][2]["mode"] == "lines");
        CHECK(p["data"][2]["line"]["dash"] == "dashdot");
        // Plotly places a note on a log axis by its log10.
        CHECK(p["layout"]["annotations"][0]["x"].get<double>() == doctest::Approx(std::log10(8)));

        Figure bars;
        bars.x_axis = Axis::categorical;
        bars.x_labels = {"F(0)", "B(0)"};
        Series act = make_series("act", "#fa5252", SeriesKind::bar);
        act.x = {0, 1};
        act.y = {1, 2};
        bars.series.push_back(act);
        const nlohmann::json b = to_plotly(bars);
        CHECK(b["layout"]["barmode"] == "stack");
        CHECK(b["data"][0]["type"] == "bar");
        // By index, named by tick text: repeated labels (a stage recomputed twice) stay apart.
        CHECK(b["data"][0]["x"] == nlohmann::json::array({0, 1}));
        CHECK(b["layout"]["xaxis"]["tickvals"] == nlohmann::json::array({0, 1}));
        CHECK(b["layout"]["xaxis"]["ticktext"] == nlohmann::json::array({"F(0)", "B(0)"}));
    }
}
