// chart.hpp. SVG written directly (no plotting library): the report must open from disk with
// no network, and a few hundred elements per chart need no layout engine.
#include "tools/chart.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>

namespace remat::cli {

std::string escape_xml(const std::string& text) {
    std::string out;
    out.reserve(text.size());
    for (char c : text) {
        switch (c) {
            case '&':
                out += "&amp;";
                break;
            case '<':
                out += "&lt;";
                break;
            case '>':
                out += "&gt;";
                break;
            case '"':
                out += "&quot;";
                break;
            default:
                out += c;
        }
    }
    return out;
}

namespace {

constexpr int margin_left = 78, margin_right = 230, margin_top = 44, margin_bottom = 70;

// About `n` round ticks (1, 2 or 5 times a power of ten) from 0 or lo up to hi.
std::vector<double> nice_ticks(double lo, double hi, int n) {
    const double range = hi - lo;
    if (!(range > 0)) return {lo};
    const double raw = range / n;
    const double p = std::pow(10.0, std::floor(std::log10(raw)));
    double step = p;
    for (double m : {1.0, 2.0, 5.0, 10.0})
        if (m * p >= raw) {
            step = m * p;
            break;
        }
    std::vector<double> ticks;
    for (double t = std::ceil(lo / step) * step; t <= hi + step * 1e-9; t += step)
        ticks.push_back(std::abs(t) < step * 1e-9 ? 0 : t);
    return ticks;
}

std::string number(double v) {
    if (v == std::floor(v) && std::abs(v) < 1e15) return fmt::format("{:.0f}", v);
    return fmt::format("{:.3g}", v);
}

class Canvas {
  public:
    Canvas(const Figure& f, int width, int height) : f_(f), w_(width), h_(height) {
        plot_w_ = w_ - margin_left - margin_right;
        plot_h_ = h_ - margin_top - margin_bottom;
        // y from 0 to the largest value (stacked bars summed), with headroom.
        double top = 0;
        std::vector<double> stacked;
        for (const Series& s : f.series)
            for (std::size_t k = 0; k < s.y.size(); ++k) {
                if (s.kind == SeriesKind::bar) {
                    const auto i = static_cast<std::size_t>(s.x[k]);
                    if (stacked.size() <= i) stacked.resize(i + 1, 0);
                    top = std::max(top, stacked[i] += s.y[k]);
                } else {
                    top = std::max(top, s.y[k]);
                }
            }
        for (const Note& n : f.notes) top = std::max(top, n.y);
        y_hi_ = top > 0 ? top * 1.08 : 1;
        if (!f.y_from_zero) {
            double low = top;
            for (const Series& s : f.series)
                for (double y : s.y) low = std::min(low, y);
            if (low < top) {
                y_lo_ = std::max(0.0, low - (top - low) * 0.08);
                y_hi_ = top + (top - low) * 0.08;
            }
        }
        if (f.x_axis == Axis::categorical) {
            x_lo_ = -0.5;
            x_hi_ = static_cast<double>(std::max<std::size_t>(f.x_labels.size(), 1)) - 0.5;
            return;
        }
        double lo = std::numeric_limits<double>::infinity(), hi = -lo;
        for (const Series& s : f.series)
            for (double x : s.x) {
                lo = std::min(lo, fx(x));
                hi = std::max(hi, fx(x));
            }
        if (!(lo <= hi)) lo = 0, hi = 1;
        const double pad = hi > lo ? (hi - lo) * 0.04 : 0.5;
        x_lo_ = lo - pad;
        x_hi_ = hi + pad;
    }

    std::string draw() const {
        std::string o = fmt::format(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" id=\"chart-{}\" class=\"chart\" "
            "width=\"{}\" "
            "height=\"{}\" viewBox=\"0 0 {} {}\" font-family=\"Helvetica, Arial, sans-serif\">\n",
            escape_xml(f_.id), w_, h_, w_, h_);
        o += fmt::format("<rect width=\"{}\" height=\"{}\" fill=\"white\"/>\n", w_, h_);
        o += fmt::format("<text x=\"{}\" y=\"24\" font-size=\"16\" fill=\"#212529\">{}</text>\n",
                         margin_left, escape_xml(f_.title));
        axes(o);
        bars(o);
        for (const Series& s : f_.series)
            if (s.kind != SeriesKind::bar) lines(o, s);
        for (const Note& n : f_.notes)
            o += fmt::format(
                "<text class=\"note\" x=\"{:.1f}\" y=\"{:.1f}\" font-size=\"12\" fill=\"{}\" "
                "stroke=\"white\" stroke-width=\"3\" paint-order=\"stroke\">{}</text>\n",
                px(n.x) + 6, py(n.y) - 8, n.color, escape_xml(n.text));
        legend(o);
        o += "</svg>\n";
        return o;
    }

  private:
    double fx(double x) const { return f_.x_axis == Axis::log2 ? std::log2(x) : x; }
    double px(double x) const { return margin_left + (fx(x) - x_lo_) / (x_hi_ - x_lo_) * plot_w_; }
    double py(double y) const {
        return margin_top + plot_h_ - (y - y_lo_) / (y_hi_ - y_lo_) * plot_h_;
    }

    void axes(std::string& o) const {
        const double bottom = margin_top + plot_h_;
        for (double t : nice_ticks(y_lo_, y_hi_, 6)) {
            o += fmt::format(
                "<line x1=\"{}\" x2=\"{}\" y1=\"{:.1f}\" y2=\"{:.1f}\" stroke=\"#dee2e6\"/>\n",
                margin_left, margin_left + plot_w_, py(t), py(t));
            o += fmt::format(
                "<text x=\"{}\" y=\"{:.1f}\" font-size=\"11\" fill=\"#495057\" "
                "text-anchor=\"end\">{}</text>\n",
                margin_left - 6, py(t) + 4, number(t));
        }
        std::vector<std::pair<double, std::string>> xt;
        if (f_.x_axis == Axis::categorical) {
            const std::size_t n = f_.x_labels.size();
            const std::size_t every = std::max<std::size_t>(1, (n + 39) / 40);
            for (std::size_t i = 0; i < n; i += every)
                xt.emplace_back(static_cast<double>(i), f_.x_labels[i]);
        } else if (f_.x_axis == Axis::log2) {
            for (double e = std::ceil(x_lo_); e <= x_hi_; ++e)
                xt.emplace_back(std::exp2(e), number(std::exp2(e)));
        } else {
            for (double t : nice_ticks(x_lo_, x_hi_, 8)) xt.emplace_back(t, number(t));
        }
        for (const auto& [x, label] : xt) {
            o += fmt::format(
                "<line x1=\"{:.1f}\" x2=\"{:.1f}\" y1=\"{}\" y2=\"{}\" stroke=\"{}\"/>\n", px(x),
                px(x), margin_top, bottom, f_.x_axis == Axis::categorical ? "#f1f3f5" : "#dee2e6");
            if (f_.x_axis == Axis::categorical)
                o += fmt::format(
                    "<text x=\"{:.1f}\" y=\"{:.1f}\" font-size=\"10\" fill=\"#495057\" "
                    "text-anchor=\"end\" transform=\"rotate(-60 {:.1f} {:.1f})\">{}</text>\n",
                    px(x), bottom + 12, px(x), bottom + 12, escape_xml(label));
            else
                o += fmt::format(
                    "<text x=\"{:.1f}\" y=\"{:.1f}\" font-size=\"11\" fill=\"#495057\" "
                    "text-anchor=\"middle\">{}</text>\n",
                    px(x), bottom + 16, escape_xml(label));
        }
        o += fmt::format(
            "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" "
            "stroke=\"#adb5bd\"/>\n",
            margin_left, margin_top, plot_w_, plot_h_);
        o += fmt::format(
            "<text x=\"{:.1f}\" y=\"{}\" font-size=\"12\" fill=\"#212529\" "
            "text-anchor=\"middle\">{}</text>\n",
            margin_left + plot_w_ / 2.0, h_ - 8, escape_xml(f_.x_title));
        o += fmt::format(
            "<text x=\"16\" y=\"{:.1f}\" font-size=\"12\" fill=\"#212529\" text-anchor=\"middle\" "
            "transform=\"rotate(-90 16 {:.1f})\">{}</text>\n",
            margin_top + plot_h_ / 2.0, margin_top + plot_h_ / 2.0, escape_xml(f_.y_title));
    }

    static std::string tip(const Series& s, std::size_t k) {
        return k < s.hover.size() ? escape_xml(s.hover[k]) : std::string();
    }

    void lines(std::string& o, const Series& s) const {
        if (s.kind != SeriesKind::markers && s.x.size() > 1) {
            std::string points;
            for (std::size_t k = 0; k < s.x.size(); ++k)
                points += fmt::format("{}{:.1f},{:.1f}", k ? " " : "", px(s.x[k]), py(s.y[k]));
            o += fmt::format(
                "<polyline class=\"series\" points=\"{}\" fill=\"none\" stroke=\"{}\" "
                "stroke-width=\"{}\"{}><title>{}</title></polyline>\n",
                points, s.color, s.dashed ? 2 : 2.5,
                s.dashed ? " stroke-dasharray=\"8 4 2 4\"" : "", escape_xml(s.name));
        }
        if (s.kind == SeriesKind::line) return;
        for (std::size_t k = 0; k < s.x.size(); ++k) {
            const std::string t = tip(s, k);
            o += fmt::format(
                "<circle class=\"point\" cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"{}\" fill=\"{}\" "
                "stroke=\"{}\" stroke-width=\"{}\" data-tip=\"{}\"><title>{}</title></circle>\n",
                px(s.x[k]), py(s.y[k]), s.marker_size, s.hollow ? "none" : s.color,
                s.hollow ? s.color : "white", s.hollow ? 2.5 : 1, t, t);
        }
    }

    // Stacked in series order: each bar starts where the earlier series' bars at its x ended.
    void bars(std::string& o) const {
        const double band = plot_w_ / (x_hi_ - x_lo_);
        std::vector<double> base(f_.x_labels.size() + 1, 0);
        for (const Series& s : f_.series) {
            if (s.kind != SeriesKind::bar) continue;
            for (std::size_t k = 0; k < s.x.size(); ++k) {
                const auto i = static_cast<std::size_t>(s.x[k]);
                if (base.size() <= i) base.resize(i + 1, 0);
                if (s.y[k] <= 0) continue;
                const std::string t = tip(s, k);
                o += fmt::format(
                    "<rect class=\"bar\" x=\"{:.2f}\" y=\"{:.2f}\" width=\"{:.2f}\" "
                    "height=\"{:.2f}\" fill=\"{}\" data-tip=\"{}\"><title>{}</title></rect>\n",
                    px(s.x[k]) - band * 0.42, py(base[i] + s.y[k]), band * 0.84,
                    py(base[i]) - py(base[i] + s.y[k]), s.color, t, t);
                base[i] += s.y[k];
            }
        }
    }

    void legend(std::string& o) const {
        const int x = w_ - margin_right + 16;
        int y = margin_top + 8;
        // Lines in their order, then bars top of the stack first (as they read).
        std::vector<const Series*> order;
        for (const Series& s : f_.series)
            if (s.in_legend && s.kind != SeriesKind::bar) order.push_back(&s);
        for (auto it = f_.series.rbegin(); it != f_.series.rend(); ++it)
            if (it->in_legend && it->kind == SeriesKind::bar) order.push_back(&*it);
        for (const Series* s : order) {
            if (s->kind == SeriesKind::bar)
                o += fmt::format(
                    "<rect x=\"{}\" y=\"{}\" width=\"14\" height=\"10\" fill=\"{}\"/>\n", x, y - 9,
                    s->color);
            else
                o += fmt::format(
                    "<line x1=\"{}\" x2=\"{}\" y1=\"{}\" y2=\"{}\" stroke=\"{}\" "
                    "stroke-width=\"3\"{}/>\n",
                    x, x + 18, y - 4, y - 4, s->color,
                    s->dashed ? " stroke-dasharray=\"6 3\"" : "");
            o += fmt::format(
                "<text class=\"legend\" x=\"{}\" y=\"{}\" font-size=\"12\" "
                "fill=\"#212529\">{}</text>\n",
                x + 24, y, escape_xml(s->name));
            y += 18;
        }
    }

    const Figure& f_;
    int w_, h_;
    double plot_w_ = 0, plot_h_ = 0;
    double x_lo_ = 0, x_hi_ = 1, y_lo_ = 0, y_hi_ = 1;
};

}  // namespace

std::string to_svg(const Figure& f, int width, int height) {
    return Canvas(f, width, height).draw();
}

nlohmann::json to_plotly(const Figure& f) {
    using json = nlohmann::json;
    json data = json::array();
    for (const Series& s : f.series) {
        json t = {{"name", s.name}, {"showlegend", s.in_legend}};
        t["x"] = s.x;  // categorical: the index; the axis's ticktext names it (labels repeat)
        t["y"] = s.y;
        if (!s.hover.empty()) {
            t["hovertext"] = s.hover;
            t["hoverinfo"] = "text";
        }
        if (s.kind == SeriesKind::bar) {
            t["type"] = "bar";
            t["marker"] = {{"color", s.color}};
        } else {
            t["type"] = "scatter";
            t["mode"] = s.kind == SeriesKind::line      ? "lines"
                        : s.kind == SeriesKind::markers ? "markers"
                                                        : "lines+markers";
            t["line"] = {{"color", s.color}, {"width", s.dashed ? 2 : 3}};
            if (s.dashed) t["line"]["dash"] = "dashdot";
            t["marker"] = {{"size", 2 * s.marker_size}, {"color", s.color}};
            if (s.hollow) t["marker"]["symbol"] = "circle-open";
        }
        data.push_back(std::move(t));
    }
    json xaxis = {{"title", f.x_title}, {"showgrid", true}, {"gridcolor", "#dee2e6"}};
    if (f.x_axis == Axis::log2) {
        xaxis["type"] = "log";
        xaxis["dtick"] = std::log10(2.0);
    }
    if (f.x_axis == Axis::categorical) {
        // By index, named by ticktext: a recomputed stage's label can repeat, and a category
        // axis would merge the repeats into one bar.
        json ticks = json::array();
        for (std::size_t i = 0; i < f.x_labels.size(); ++i) ticks.push_back(i);
        xaxis["tickvals"] = ticks;
        xaxis["ticktext"] = f.x_labels;
    }
    json annotations = json::array();
    for (const Note& n : f.notes) {
        json x = n.x;
        if (f.x_axis == Axis::log2) x = std::log10(n.x);  // Plotly places log axes by log10
        annotations.push_back({{"x", x},
                               {"y", n.y},
                               {"text", n.text},
                               {"showarrow", true},
                               {"font", {{"color", n.color}}}});
    }
    json layout = {{"title", f.title},
                   {"xaxis", xaxis},
                   {"yaxis", {{"title", f.y_title}, {"showgrid", true}, {"gridcolor", "#dee2e6"}}},
                   {"plot_bgcolor", "white"},
                   {"showlegend", true},
                   {"annotations", annotations}};
    if (f.y_from_zero) layout["yaxis"]["rangemode"] = "tozero";
    if (std::any_of(f.series.begin(), f.series.end(),
                    [](const Series& s) { return s.kind == SeriesKind::bar; }))
        layout["barmode"] = "stack";
    return {{"data", data}, {"layout", layout}};
}

}  // namespace remat::cli
