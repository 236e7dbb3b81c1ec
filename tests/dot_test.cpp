// Tests of the DOT writer (planner/dot/dot.hpp) on tiny-gpt2 at S = 64, B = 1: golden files for the
// figures the docs show, the Keep colour encoding, the --ops expansion, and that Graphviz
// renders every golden figure.
//
// Goldens live in tests/golden/*.dot and are compared byte for byte. After an intended change
// to the figure, regenerate them with
//   REMAT_UPDATE_GOLDEN=1 ./build/tests/remat_tests -ts=dot
// and review the diff. This suite does not check layout: Graphviz owns that.
#include "planner/dot/dot.hpp"

#include <doctest/doctest.h>
#include <fmt/format.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "planner/chain/chain.hpp"
#include "planner/config/model.hpp"
#include "planner/config/units.hpp"
#include "planner/simulate/gpu.hpp"
#include "planner/simulate/memory.hpp"
#include "planner/strategy/strategy.hpp"
#include "tests/text_count.hpp"

namespace {

using namespace remat;

struct Fixture {
    Chain chain;
    GpuSpec gpu;
    PlanContext ctx;

    Fixture() : gpu(load_gpu("h100-80gb")) {
        RunOptions options;
        options.seq = 64;
        options.micro_batch = 1;
        chain = build_chain(load_model("tiny-gpt2"), options);
        ctx.gpu = &gpu;
        ctx.reserve = default_reserve(gpu);
        ctx.capacity_bytes = gpu.capacity_bytes;
    }

    std::vector<Plan> plans(const std::vector<std::string>& names) const {
        std::vector<Plan> out;
        for (const auto& n : names) out.push_back(make_plan(chain, parse_strategy(n), ctx));
        return out;
    }

    std::string dot(const std::vector<std::string>& names, bool ops = false) const {
        return dot(names, DotOptions{.ops = ops});
    }
    std::string dot(const std::vector<std::string>& names, const DotOptions& options) const {
        std::ostringstream s;
        write_dot(s, chain, plans(names), options);
        return s.str();
    }
    // One node per stage, nothing else: the Keep encoding stage by stage.
    std::string plain(const std::vector<std::string>& names) const {
        return dot(names, DotOptions{.fold = false, .legend = false});
    }
};

struct GoldenCase {
    std::string file;  // under tests/golden/
    std::vector<std::string> strategies;
};

const std::vector<GoldenCase>& golden_cases() {
    static const std::vector<GoldenCase> cases = {
        {"tiny-gpt2-none.dot", {"none"}},
        {"tiny-gpt2-every-2.dot", {"every-2"}},
        {"tiny-gpt2-none-full-sqrt.dot", {"none", "full", "sqrt"}},
    };
    return cases;
}

std::string read_file(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

bool update_goldens() {
    const char* v = std::getenv("REMAT_UPDATE_GOLDEN");
    return v != nullptr && std::string(v) == "1";
}

using test_text::count;

}  // namespace

TEST_SUITE("dot") {
    TEST_CASE("dot::write_dot") {
        const Fixture f;

        SUBCASE("matches the golden files") {
            for (const auto& c : golden_cases()) {
                CAPTURE(c.file);
                const auto path =
                    std::filesystem::path(REMAT_SOURCE_DIR) / "tests" / "golden" / c.file;
                const std::string got = f.dot(c.strategies);
                if (update_goldens()) {
                    std::filesystem::create_directories(path.parent_path());
                    std::ofstream(path, std::ios::binary) << got;
                    MESSAGE("rewrote " << path.string());
                }
                REQUIRE_MESSAGE(std::filesystem::exists(path),
                                "missing golden; run with REMAT_UPDATE_GOLDEN=1 to create it");
                CHECK(got == read_file(path));
            }
        }

        SUBCASE("one cluster per plan, labelled with its strategy") {
            const std::string one = f.plain({"none"});
            CHECK(one.starts_with("digraph G {\n  rankdir=TB;\n"));
            CHECK(count(one, "subgraph cluster_") == 1);
            CHECK(one.find("label=\"none\";") != std::string::npos);

            const std::string three = f.plain({"none", "full", "sqrt"});
            CHECK(count(three, "subgraph cluster_") == 3);
            for (const char* s : {"label=\"none\";", "label=\"full\";", "label=\"sqrt\";"})
                CHECK(three.find(s) != std::string::npos);
            // Stage ids are prefixed by the cluster, so the same stage appears once per plan.
            for (const char* id : {"p0_s1 [", "p1_s1 [", "p2_s1 ["}) CHECK(count(three, id) == 1);
        }

        SUBCASE("labels are escaped, output deterministic") {
            std::vector<Plan> plans = f.plans({"none"});
            plans[0].strategy = "my \"plan\" \\ v2";
            std::ostringstream a, b;
            write_dot(a, f.chain, plans, DotOptions{});
            write_dot(b, f.chain, plans, DotOptions{});
            CHECK(a.str().find("label=\"my \\\"plan\\\" \\\\ v2\";") != std::string::npos);
            CHECK(a.str() == b.str());
        }

        SUBCASE("edges follow the chain") {
            const std::string d = f.plain({"none"});
            const std::size_t n = f.chain.stages.size();
            CHECK(count(d, " -> ") == n - 1);
            CHECK(d.find("p0_s0 -> p0_s1;") != std::string::npos);
            CHECK(d.find(fmt::format("p0_s{} -> p0_s{};", n - 2, n - 1)) != std::string::npos);
        }
    }

    TEST_CASE("dot::keep_colours") {
        const Fixture f;
        const std::size_t n_blocks = f.chain.n_blocks();

        SUBCASE("none stores everything: no discarded fill at all") {
            const std::string d = f.plain({"none"});
            CHECK(d.find("#ffc9c9") == std::string::npos);
            CHECK(count(d, "(Stored)") == f.chain.stages.size());
        }

        SUBCASE("full checkpoints every block") {
            const std::string d = f.plain({"full"});
            for (std::size_t b = 0; b < n_blocks; ++b)
                CHECK(d.find(fmt::format("block {}\\n(Checkpoint)\\n", b)) != std::string::npos);
            CHECK(count(d, "(Checkpoint)") == n_blocks);
            CHECK(d.find("#ffc9c9") == std::string::npos);
        }

        SUBCASE("sqrt discards blocks inside a segment, in red") {
            const std::string d = f.plain({"sqrt"});
            // tiny-gpt2 has 4 blocks: segments of 2, so blocks 1 and 3 keep nothing.
            CHECK(d.find("block 1\\n(Discarded)\\n0 B\", fillcolor=\"#ffc9c9\"") !=
                  std::string::npos);
            CHECK(d.find("block 3\\n(Discarded)\\n0 B\", fillcolor=\"#ffc9c9\"") !=
                  std::string::npos);
            CHECK(count(d, "#ffc9c9") == 2);
        }

        SUBCASE("kept bytes are on the third line") {
            const std::string d = f.plain({"none", "full"});
            const Stage& b0 = f.chain.stages[1];
            CHECK(d.find(fmt::format("block 0\\n(Stored)\\n{}\"", format_bytes(b0.all_bytes))) !=
                  std::string::npos);
            CHECK(d.find(fmt::format("block 0\\n(Checkpoint)\\n{}\"",
                                     format_bytes(b0.input_bytes))) != std::string::npos);
        }

        SUBCASE("selective is stored fill, dashed, captioned") {
            const std::string d = f.plain({"selective"});
            CHECK(count(d, "(Selective: attention recomputed)") == n_blocks);
            CHECK(count(d, "style=\"filled,dashed\"") == n_blocks);
            CHECK(d.find("#ffc9c9") == std::string::npos);
        }
    }

    TEST_CASE("dot::figure") {
        // What the figure says around the stages (issue 19): folded runs as `remat plan` prints
        // them, a title, a note per plan, a legend naming the roles, an opaque background.
        const Fixture f;

        SUBCASE("runs of identical blocks fold into one node, as plan's table") {
            const std::string none = f.dot({"none"}, DotOptions{.legend = false});
            // embedding, blocks 0-3, final norm, head.
            CHECK(count(none, "peripheries=2") == 1);
            CHECK(none.find("blocks 0-3 (x4)\\n(Stored)\\n") != std::string::npos);
            CHECK(count(none, " -> ") == 3);
            CHECK(none.find("p0_s1 -> p0_s5;") != std::string::npos);
            // sqrt alternates checkpoint and discarded blocks: nothing to fold.
            const std::string sqrt = f.dot({"sqrt"}, DotOptions{.legend = false});
            CHECK(count(sqrt, "peripheries=2") == 0);
            CHECK(count(sqrt, " -> ") == f.chain.stages.size() - 1);
            // A run's kept bytes are per block.
            const std::string full = f.dot({"full"}, DotOptions{.legend = false});
            CHECK(full.find(fmt::format("(Checkpoint)\\n{} each",
                                        format_bytes(f.chain.stages[1].input_bytes))) !=
                  std::string::npos);
        }

        SUBCASE("the three roles have three fills") {
            const std::string d = f.plain({"none", "full", "sqrt"});
            // Each caption with its own fill, and no caption with another's.
            const std::pair<const char*, const char*> looks[] = {
                {"(Stored)", "#a5d8ff"}, {"(Checkpoint)", "#d0bfff"}, {"(Discarded)", "#ffc9c9"}};
            for (const auto& [caption, fill] : looks) {
                CAPTURE(caption);
                std::size_t with_fill = 0, captioned = 0;
                for (auto at = d.find(caption); at != std::string::npos;
                     at = d.find(caption, at + 1)) {
                    ++captioned;
                    const std::size_t end = d.find('\n', at);
                    if (d.substr(at, end - at).find(std::string("fillcolor=\"") + fill) !=
                        std::string::npos)
                        ++with_fill;
                }
                CHECK(captioned > 0);
                CHECK(with_fill == captioned);
            }
            for (std::size_t b = 0; b < f.chain.n_blocks(); b += 2)
                CHECK(d.find(fmt::format("block {}\\n(Checkpoint)\\n{}\", fillcolor=\"#d0bfff\"", b,
                                         format_bytes(f.chain.stages[1].input_bytes))) !=
                      std::string::npos);
        }

        SUBCASE("a legend names the roles the plans use, and only those") {
            const std::string d = f.dot({"none", "sqrt"});
            CHECK(d.find("subgraph cluster_legend") != std::string::npos);
            CHECK(d.find("Stored: kept whole") != std::string::npos);
            CHECK(d.find("Checkpoint: input kept") != std::string::npos);
            CHECK(d.find("Discarded: recomputed") != std::string::npos);
            CHECK(d.find("Selective:") == std::string::npos);
            CHECK(f.dot({"none"}).find("Discarded: recomputed") == std::string::npos);
            CHECK(f.dot({"none"}, DotOptions{.legend = false}).find("cluster_legend") ==
                  std::string::npos);
        }

        SUBCASE("title, plan notes, background") {
            DotOptions o;
            o.title = "tiny-gpt2 on h100-80gb";
            o.plan_notes = {"peak 1 GiB of 80 GiB: fits", "peak 2 GiB"};
            const std::string d = f.dot({"none", "sqrt"}, o);
            CHECK(d.find("bgcolor=\"white\";") != std::string::npos);
            CHECK(d.find("label=\"tiny-gpt2 on h100-80gb\";\n  labelloc=\"t\";") !=
                  std::string::npos);
            // The title comes after every cluster, so none inherits it.
            CHECK(d.find("labelloc") > d.rfind("subgraph cluster_"));
            CHECK(d.find("label=\"none\\npeak 1 GiB of 80 GiB: fits\";") != std::string::npos);
            CHECK(d.find("label=\"sqrt\\npeak 2 GiB\";") != std::string::npos);
            CHECK(f.dot({"none"}, DotOptions{.background = "transparent"})
                      .find("bgcolor=\"transparent\";") != std::string::npos);
        }
    }

    TEST_CASE("dot::write_dot ops") {
        const Fixture f;
        const std::string d = f.dot({"none", "sqrt"}, true);

        SUBCASE("blocks open into their op graphs") {
            CHECK(d.find("label=\"attn.c_attn\"") != std::string::npos);
            CHECK(d.find("label=\"attn.c_proj\"") != std::string::npos);
            // At most two blocks per plan are expanded; the rest stay stage nodes, with a note.
            CHECK(count(d, "subgraph cluster_0_") == 2);
            CHECK(count(d, "subgraph cluster_1_") == 2);
            CHECK(d.find("subgraph cluster_0_3 ") == std::string::npos);
            CHECK(count(d, "ops shown for the first 2 of 4 blocks") == 2);
        }

        SUBCASE("saved tensors are marked with name, dtype and bytes") {
            CHECK(d.find("saved: attn.c_attn.input\\nbfloat16, ") != std::string::npos);
            CHECK(d.find("[style=bold, color=\"#495057\"]") != std::string::npos);
        }

        SUBCASE("the Keep fills stay on stage nodes") {
            // sqrt discards blocks 1 and 3 only; op and tensor nodes never use the Keep fills.
            CHECK(count(d, "#ffc9c9") == 2 + 1);  // and the legend's
            // Blocks 0 and 1 open; blocks 2-3 fold into one node.
            const std::string none = f.dot({"none"}, DotOptions{.ops = true, .legend = false});
            CHECK(none.find("#ffc9c9") == std::string::npos);
            CHECK(count(none, "#a5d8ff") == f.chain.stages.size() - 1);
            CHECK(none.find("blocks 2-3 (x2)") != std::string::npos);
        }

        SUBCASE("selective marks the recomputed attention core") {
            const std::string s = f.dot({"selective"}, true);
            CHECK(s.find("recomputed: ") != std::string::npos);
        }
    }

    TEST_CASE("dot::render") {
        // Needs Graphviz's `dot` on PATH (as the docs' figures do).
        const Fixture f;
        const auto dir = std::filesystem::temp_directory_path() / "remat_dot_test";
        std::filesystem::create_directories(dir);
        std::vector<std::pair<std::string, std::string>> figures;
        for (const auto& c : golden_cases()) figures.emplace_back(c.file, f.dot(c.strategies));
        figures.emplace_back("tiny-gpt2-ops.dot", f.dot({"none", "sqrt", "selective"}, true));

        for (const auto& [name, text] : figures) {
            CAPTURE(name);
            const auto dot_path = dir / name;
            const auto svg_path = dir / (name + ".svg");
            std::ofstream(dot_path, std::ios::binary) << text;
            std::filesystem::remove(svg_path);
            const std::string command =
                fmt::format("dot -Tsvg \"{}\" -o \"{}\"", dot_path.string(), svg_path.string());
            REQUIRE_MESSAGE(std::system(command.c_str()) == 0, "Graphviz failed: " << command);
            const std::string svg = read_file(svg_path);
            CHECK(!svg.empty());
            CHECK(svg.find("<svg") != std::string::npos);
        }
    }
}
