// plan_figure.hpp. Rendering links Graphviz's library rather than running the `dot` program: no
// PATH lookup, no temporary files, and Graphviz's error comes back as a message.
#include "tools/plan_figure.hpp"

#include <fmt/format.h>
#include <graphviz/cgraph.h>
#include <graphviz/gvc.h>

#include <cstdio>
#include <memory>
#include <sstream>
#include <stdexcept>

#include "planner/config/error.hpp"
#include "planner/config/units.hpp"
#include "planner/dot/dot.hpp"
#include "tools/report.hpp"

namespace remat::cli {

std::string plan_dot(const Question& q, const std::vector<Evaluation>& plans, bool ops,
                     bool transparent) {
    DotOptions options;
    options.ops = ops;
    options.background = transparent ? "transparent" : "white";
    options.title = question_title(q);
    std::vector<Plan> drawn;
    for (const Evaluation& e : plans) {
        drawn.push_back(e.plan);
        options.plan_notes.push_back(peak_verdict(q, e));
    }
    std::ostringstream out;
    write_dot(out, plans.at(0).chain, drawn, options);
    return out.str();
}

namespace {

// Graphviz reports errors through agerr, by default to stderr; collect them instead.
std::string& graphviz_errors() {
    static thread_local std::string errors;
    return errors;
}
int collect_error(char* message) {
    graphviz_errors() += message;
    return 0;
}

}  // namespace

std::string dot_to_svg(const std::string& dot) {
    graphviz_errors().clear();
    agseterrf(collect_error);
    // The DOT is remat's own: a failure here is Graphviz's installation (its plugins), not the
    // user's input.
    const auto fail = [](const char* what) {
        return std::runtime_error(fmt::format(
            "Graphviz cannot {} the plan's figure: {} (is Debian's graphviz installed? `dot -c` "
            "as root re-registers its plugins)",
            what, one_line(graphviz_errors())));
    };
    std::unique_ptr<GVC_t, int (*)(GVC_t*)> gvc(gvContext(), gvFreeContext);
    std::unique_ptr<Agraph_t, int (*)(Agraph_t*)> graph(agmemread(dot.c_str()), agclose);
    if (!gvc || !graph) throw fail("read");
    // Freed before the graph (declared after it), whether the layout worked or not.
    const auto free_layout = [&gvc](Agraph_t* g) { gvFreeLayout(gvc.get(), g); };
    std::unique_ptr<Agraph_t, decltype(free_layout)> layout(graph.get(), free_layout);
    if (gvLayout(gvc.get(), graph.get(), "dot") != 0) throw fail("lay out");
    char* data = nullptr;
    unsigned int length = 0;
    const int rendered = gvRenderData(gvc.get(), graph.get(), "svg", &data, &length);
    std::string svg = rendered == 0 && data ? std::string(data, length) : std::string();
    if (data) gvFreeRenderData(data);
    if (svg.empty()) throw fail("render");
    // Inline in HTML: drop the XML declaration and DOCTYPE before <svg.
    const auto at = svg.find("<svg");
    return at == std::string::npos ? svg : svg.substr(at);
}

}  // namespace remat::cli
