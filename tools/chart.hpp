// The report's charts as data, drawn two ways: SVG that remat writes itself (the HTML report,
// offline, no script needed to see it) and Plotly JSON (report --plotly, the format the seed's
// chart is written in, for people who build their own dashboards). One Figure, two renderers,
// so the picture and the exported figure cannot disagree.
//
//   Figure f{.id = "memory", .title = "Peak memory vs micro-batch", .x_title = "micro-batch",
//            .y_title = "peak memory (GiB)", .x_axis = Axis::log2};
//   f.series.push_back({.name = "none", .color = "#fa5252", .kind = SeriesKind::line_markers,
//                       .x = {1, 2, 4}, .y = {24, 32, 48}, .hover = {"b 1: 24 GiB", ...}});
//   std::string svg = to_svg(f);          // <svg ...> with a <title> per point (hover)
//   nlohmann::json p = to_plotly(f);      // {"data": [...], "layout": {...}}
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

namespace remat::cli {

enum class SeriesKind {
    line,          // a polyline (dashed when Series::dashed)
    line_markers,  // a polyline with a marker per point
    markers,       // markers alone
    bar,           // stacked bars on a categorical x (Figure::x_labels), in series order
};

struct Series {
    std::string name;
    std::string color;
    SeriesKind kind = SeriesKind::line_markers;
    std::vector<double> x = {}, y = {};
    std::vector<std::string> hover = {};  // one per point, or none
    bool dashed = false;
    bool in_legend = true;
    double marker_size = 4.5;  // radius in pixels
    bool hollow = false;       // a ring (the point's colour as outline) instead of a dot
};

inline Series make_series(std::string name, std::string color,
                          SeriesKind kind = SeriesKind::line_markers) {
    Series s;
    s.name = std::move(name);
    s.color = std::move(color);
    s.kind = kind;
    return s;
}

// A text at a point, with an arrow-less marker: "max 12", "peak 20.7 GiB".
struct Note {
    double x = 0, y = 0;
    std::string text;
    std::string color = "#212529";
};

enum class Axis { linear, log2, categorical };

struct Figure {
    std::string id;  // the key in report --plotly; the SVG's id is chart-<id>
    std::string title, x_title, y_title;
    Axis x_axis = Axis::linear;
    std::vector<std::string> x_labels;  // Axis::categorical: the name of x = 0, 1, ...
    std::vector<Series> series;
    std::vector<Note> notes;
    bool y_from_zero = true;  // false: the y axis spans the data (step times near each other)
};

// width x height pixels, legend at the right. Every point's hover text is both an SVG <title>
// (the browser's own tooltip) and a data-tip attribute (the report's faster one).
std::string to_svg(const Figure& f, int width = 960, int height = 440);
nlohmann::json to_plotly(const Figure& f);

// Text safe inside XML/HTML: & < > " escaped.
std::string escape_xml(const std::string& text);

}  // namespace remat::cli
