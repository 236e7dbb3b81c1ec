// DOT writer for Plans (planner/dot/dot.hpp). A plain std::ostream writer rather than Boost's
// write_graphviz: the figure nests clusters (plan, then expanded block) and mixes stage, op and
// tensor nodes, which write_graphviz's one-graph, one-vertex-type model does not express.
//
// It does not decide anything: colours and labels are read off Plan::keeps and the Chain.
#include "planner/dot/dot.hpp"

#include <fmt/format.h>

#include <boost/range/iterator_range.hpp>
#include <cassert>
#include <set>
#include <string>
#include <string_view>

#include "planner/config/units.hpp"

namespace remat {

namespace {

// The Keep fills; they appear on stage nodes (and the legend) only, so a reader (and a test) can
// tell "what a stage keeps" apart from everything else in the figure. Blue keeps memory, red is
// recomputed, and a checkpoint, which does both, is their blend.
constexpr std::string_view stored_fill = "#a5d8ff";
constexpr std::string_view checkpoint_fill = "#d0bfff";
constexpr std::string_view discarded_fill = "#ffc9c9";

// Everything else stays neutral or yellow.
constexpr std::string_view gemm_fill = "#e9ecef";
constexpr std::string_view attention_fill = "#f1f3f5";
constexpr std::string_view memory_fill = "#ffffff";
constexpr std::string_view saved_fill = "#fff3bf";
constexpr std::string_view note_fill = "#f8f9fa";
constexpr std::string_view saved_edge_color = "#495057";

// A DOT double-quoted string: quotes and backslashes escaped, newlines as DOT's centred "\n".
std::string quote(std::string_view text) {
    std::string q = "\"";
    for (char c : text) {
        if (c == '"' || c == '\\') {
            q += '\\';
            q += c;
        } else if (c == '\n') {
            q += "\\n";
        } else {
            q += c;
        }
    }
    q += '"';
    return q;
}

struct KeepLook {
    std::string_view fill;
    std::string_view caption;
    std::string_view style;  // node style; "" keeps the graph default (filled)
    std::string_view role;   // what the legend says of it
};

// Keep::selective keeps most of the block, so it shares the stored fill; a dashed outline and
// its caption tell it apart from a block stored whole.
KeepLook keep_look(Keep k) {
    switch (k) {
        case Keep::all:
            return {stored_fill, "(Stored)", "",
                    "Stored: kept whole, every tensor\nits backward needs"};
        case Keep::input:
            return {checkpoint_fill, "(Checkpoint)", "",
                    "Checkpoint: input kept, the stage\nrecomputed in backward"};
        case Keep::none:
            return {discarded_fill, "(Discarded)", "",
                    "Discarded: recomputed from the\ncheckpoint before it"};
        case Keep::selective:
            return {stored_fill, "(Selective: attention recomputed)", "filled,dashed",
                    "Selective: kept but the attention\ncore, recomputed in backward"};
    }
    return {stored_fill, "", "", ""};
}

// The op that wrote a tensor's data: views have no producer of their own, so follow view_of.
int data_producer(const StageGraph& g, TensorId t) {
    while (g.producer(t) < 0 && g.tensor(t).view_of != no_tensor) t = g.tensor(t).view_of;
    return g.producer(t);
}

std::string stage_id(std::size_t plan, std::size_t stage) {
    return fmt::format("p{}_s{}", plan, stage);
}

std::string op_id(std::size_t plan, std::size_t stage, OpVertex v) {
    return fmt::format("p{}_s{}_op{}", plan, stage, v);
}

class DotWriter {
  public:
    DotWriter(std::ostream& out, const Chain& chain) : out_(out), chain_(chain) {}

    void plan(std::size_t p, const Plan& plan, const std::string& note, const DotOptions& options) {
        assert(plan.keeps.size() == chain_.stages.size() && "a plan needs one Keep per stage");
        out_ << fmt::format("  subgraph cluster_{} {{\n", p);
        out_ << fmt::format("    label={};\n",
                            quote(note.empty() ? plan.strategy : plan.strategy + "\n" + note));
        out_ << "    fontname=\"Helvetica\";\n    fontcolor=\"#495057\";\n"
                "    color=\"#ced4da\";\n    style=\"dashed\";\n";

        std::size_t n_expanded = 0;
        const std::vector<StageRun> runs = drawn_runs(plan, options);
        std::vector<std::string> exits(runs.size());
        for (std::size_t r = 0; r < runs.size(); ++r) {
            const std::size_t i = runs[r].first;
            const bool expand = options.ops && chain_.stages[i].kind == StageKind::block &&
                                n_expanded < dot_max_expanded_blocks;
            if (expand) {
                exits[r] = block_cluster(p, i, plan.keeps[i]);
                ++n_expanded;
            } else {
                out_ << "    " << stage_node(p, runs[r], plan.keeps[i]) << "\n";
                exits[r] = stage_id(p, i);
            }
        }
        if (options.ops && chain_.n_blocks() > n_expanded) {
            const std::string text = fmt::format(
                "ops shown for the first {} of {} blocks;\nthe rest are drawn as stages",
                n_expanded, chain_.n_blocks());
            out_ << fmt::format("    p{}_note [label={}, shape=note, fillcolor=\"{}\"];\n", p,
                                quote(text), note_fill);
        }
        // The chain: out of each run (its output op when expanded) into the next run's node.
        for (std::size_t r = 1; r < runs.size(); ++r)
            out_ << fmt::format("    {} -> {};\n", exits[r - 1], stage_id(p, runs[r].first));
        out_ << "  }\n";
    }

    // One node per role the plans use, in a row, named.
    void legend(const std::vector<Plan>& plans) {
        std::set<Keep> used;
        for (const Plan& plan : plans) used.insert(plan.keeps.begin(), plan.keeps.end());
        out_ << "  subgraph cluster_legend {\n"
                "    label=\"legend\";\n    fontname=\"Helvetica\";\n"
                "    fontcolor=\"#495057\";\n    color=\"#ced4da\";\n";
        std::vector<std::string> ids;
        for (Keep k : {Keep::all, Keep::selective, Keep::input, Keep::none}) {
            if (!used.contains(k)) continue;
            const KeepLook look = keep_look(k);
            ids.push_back(fmt::format("legend_{}", ids.size()));
            std::string attrs =
                fmt::format("label={}, fillcolor=\"{}\", fontsize=10", quote(look.role), look.fill);
            if (!look.style.empty()) attrs += fmt::format(", style=\"{}\"", look.style);
            out_ << fmt::format("    {} [{}];\n", ids.back(), attrs);
        }
        if (folded_) {
            out_ << fmt::format(
                "    legend_runs [label={}, shape=box, peripheries=2, fillcolor=\"#ffffff\", "
                "fontsize=10];\n",
                quote("double outline: a run of\nidentical blocks, drawn once"));
            ids.push_back("legend_runs");
        }
        // Invisible edges keep the entries in one column beside the plans.
        for (std::size_t k = 1; k < ids.size(); ++k)
            out_ << fmt::format("    {} -> {} [style=invis];\n", ids[k - 1], ids[k]);
        out_ << "  }\n";
    }

  private:
    // The runs drawn: stage_runs when folding; with ops the blocks to expand stand alone.
    std::vector<StageRun> drawn_runs(const Plan& plan, const DotOptions& options) const {
        std::vector<StageRun> runs;
        if (!options.fold) {
            for (std::size_t i = 0; i < chain_.stages.size(); ++i) runs.push_back({i, i});
            return runs;
        }
        std::size_t to_single = options.ops ? dot_max_expanded_blocks : 0;
        for (StageRun r : stage_runs(chain_, plan.keeps)) {
            const bool block = chain_.stages[r.first].kind == StageKind::block;
            for (; block && to_single > 0 && r.size() > 1; --to_single)
                runs.push_back({r.first, r.first++});
            if (block && to_single > 0) --to_single;
            runs.push_back(r);
        }
        return runs;
    }

    std::string stage_node(std::size_t p, StageRun run, Keep keep) {
        const Stage& s = chain_.stages[run.first];
        const KeepLook look = keep_look(keep);
        const std::uint64_t bytes = kept_bytes(s, keep);
        const std::string label =
            run.size() == 1 ? fmt::format("{}\n{}\n{}", s.name, look.caption, format_bytes(bytes))
                            : fmt::format("{} (x{})\n{}\n{} each", run_name(chain_, run),
                                          run.size(), look.caption, format_bytes(bytes));
        std::string attrs = fmt::format("label={}, fillcolor=\"{}\"", quote(label), look.fill);
        if (!look.style.empty()) attrs += fmt::format(", style=\"{}\"", look.style);
        if (run.size() > 1) {
            attrs += ", peripheries=2";
            folded_ = true;
        }
        return fmt::format("{} [{}];", stage_id(p, run.first), attrs);
    }

    // A nested cluster: the stage node on top, then the block's ops, then the tensors its
    // backward needs. Returns the node the chain leaves the block from.
    std::string block_cluster(std::size_t p, std::size_t i, Keep keep) {
        const StageGraph& g = chain_.graph_of(i);
        const std::string stage = stage_id(p, i);
        out_ << fmt::format("    subgraph cluster_{}_{} {{\n", p, i);
        out_ << fmt::format("      label={};\n", quote(chain_.stages[i].name + ": ops"));
        out_ << "      style=\"dotted\";\n";
        out_ << "      " << stage_node(p, {i, i}, keep) << "\n";

        for (OpVertex v : g.order()) {
            const Op& op = g.op(v);
            std::string_view fill = memory_fill;
            if (op.op_class == OpClass::gemm) fill = gemm_fill;
            if (op.op_class == OpClass::attention) fill = attention_fill;
            out_ << fmt::format("      {} [label={}, fillcolor=\"{}\", fontsize=10];\n",
                                op_id(p, i, v), quote(op.name), fill);
        }

        // Dataflow. The OpGraph's own edges, then what it leaves out: inputs that are views
        // (views have no producer, so no edge) or the stage's inputs (drawn from the stage node).
        for (auto e : boost::make_iterator_range(boost::edges(g.graph())))
            tensor_edge(op_id(p, i, boost::source(e, g.graph())),
                        op_id(p, i, boost::target(e, g.graph())),
                        g.tensor(g.graph()[e].tensor).name);
        for (OpVertex v : g.order())
            for (TensorId t : g.op(v).inputs) {
                if (g.producer(t) >= 0) continue;  // an OpGraph edge, drawn above
                const int from = data_producer(g, t);
                tensor_edge(from >= 0 ? op_id(p, i, static_cast<OpVertex>(from)) : stage,
                            op_id(p, i, v), g.tensor(t).name);
            }

        saved_tensors(p, i, keep);
        out_ << "    }\n";

        const int last = data_producer(g, g.output());
        return last >= 0 ? op_id(p, i, static_cast<OpVertex>(last)) : stage;
    }

    void tensor_edge(const std::string& from, const std::string& to, std::string_view tensor) {
        out_ << fmt::format(
            "      {} -> {} [label={}, fontname=\"Helvetica\", fontsize=8, "
            "fontcolor=\"#868e96\"];\n",
            from, to, quote(tensor));
    }

    // One node per storage saved for backward (as StageGraph::saved_storages counts them), bold
    // edges from every op that saves it. Under Keep::selective the attention core's storages
    // are dropped by F_sel and recomputed by R_sel: dashed and captioned so.
    void saved_tensors(std::size_t p, std::size_t i, Keep keep) {
        const StageGraph& g = chain_.graph_of(i);
        const auto storages = g.saved_storages();
        const std::set<TensorId> saved(storages.begin(), storages.end());
        std::vector<bool> dropped(g.tensors().size(), false);
        if (keep == Keep::selective) dropped = selective_dropped_mask(g);

        for (TensorId s : storages) {
            const Tensor& t = g.tensor(s);
            const std::string label =
                fmt::format("{}: {}\n{}, {}", dropped[s] ? "recomputed" : "saved", t.name,
                            dtype_name(t.dtype), format_bytes(t.bytes()));
            out_ << fmt::format(
                "      p{}_s{}_t{} [label={}, shape=note, fillcolor=\"{}\", "
                "fontsize=9{}];\n",
                p, i, s, quote(label), saved_fill, dropped[s] ? ", style=\"filled,dashed\"" : "");
        }
        for (OpVertex v : g.order()) {
            std::set<TensorId> linked;  // an op saving a view and its base links once
            for (TensorId t : g.op(v).saved) {
                const TensorId s = g.storage(t);
                // Shared storages (rotary tables) belong to the embedding stage.
                if (!saved.contains(s) || !linked.insert(s).second) continue;
                out_ << fmt::format("      {} -> p{}_s{}_t{} [style={}, color=\"{}\"];\n",
                                    op_id(p, i, v), p, i, s, dropped[s] ? "dashed" : "bold",
                                    saved_edge_color);
            }
        }
    }

    std::ostream& out_;
    const Chain& chain_;
    bool folded_ = false;  // a run was drawn as one node: the legend says what that is
};

}  // namespace

void write_dot(std::ostream& out, const Chain& chain, const std::vector<Plan>& plans,
               const DotOptions& options) {
    assert((options.plan_notes.empty() || options.plan_notes.size() == plans.size()) &&
           "one note per plan, or none");
    out << "digraph G {\n"
           "  rankdir=TB;\n"
           "  node [fontname=\"Helvetica\", shape=box, style=filled, color=\"#dee2e6\", "
           "fontcolor=\"#495057\"];\n"
           "  edge [color=\"#adb5bd\"];\n";
    out << fmt::format("  bgcolor={};\n", quote(options.background));
    DotWriter writer(out, chain);
    for (std::size_t p = 0; p < plans.size(); ++p)
        writer.plan(p, plans[p], options.plan_notes.empty() ? std::string() : options.plan_notes[p],
                    options);
    if (options.legend) writer.legend(plans);
    // Last, so that no cluster inherits the title's label and size.
    if (!options.title.empty())
        out << fmt::format(
            "  label={};\n  labelloc=\"t\";\n  fontname=\"Helvetica\";\n  fontsize=16;\n"
            "  fontcolor=\"#212529\";\n",
            quote(options.title));
    out << "}\n";
}

}  // namespace remat
