// `remat report` through the real binary: the HTML page (self-contained, five sections, four
// figures drawn with hover text), --plotly's figures in the seed's format, --json's numbers
// agreeing with plan and recommend, the plan it picks, and its refusals. The page opened in a
// browser is tests/report_browser_test.sh's.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "tests/cli_process.hpp"
#include "tests/text_count.hpp"

using namespace cli_process;

namespace {

using test_text::count;

const std::string question = " --model tiny-llama --seq 256 --gpu rtx4090-24gb";

}  // namespace

TEST_SUITE("cli") {
    TEST_CASE("cli::report writes one self-contained page and the Plotly figures") {
        const auto html = (temp_dir() / "report.html").string();
        const auto plotly = (temp_dir() / "figures.json").string();
        const Run r = run_remat("report" + question + " -o " + html + " --plotly " + plotly);
        REQUIRE(r.code == 0);
        CHECK(r.out.find("wrote " + html) != std::string::npos);
        const std::string page = slurp(html);
        CHECK(page.starts_with("<!DOCTYPE html>"));
        for (const char* id : {"id=\"memory\"", "id=\"timeline\"", "id=\"pareto\"", "id=\"plan\"",
                               "id=\"recommend\""})
            CHECK(page.find(id) != std::string::npos);
        CHECK(count(page, "class=\"figure\"") == 4);
        // Nothing fetched: no external script, style, image or font.
        CHECK(page.find("src=\"http") == std::string::npos);
        CHECK(page.find("href=\"http") == std::string::npos);
        CHECK(page.find("<link") == std::string::npos);
        CHECK(page.find("@import") == std::string::npos);
        // Values on hover: every point and bar has its text.
        CHECK(count(page, "<circle class=\"point\"") > 10);
        CHECK(count(page, "<rect class=\"bar\"") > 10);
        CHECK(count(page, "data-tip=\"\"") == 0);
        // The seed's chart: the GPU's limit, and the largest micro-batch of each strategy.
        CHECK(page.find("GPU memory limit (") != std::string::npos);
        CHECK(page.find("largest micro-batch that fits: ") != std::string::npos);
        // Graphviz drew the plan; recommend's table reproduces its rows.
        CHECK(page.find("class=\"node\"") != std::string::npos);
        CHECK(page.find("<code>remat plan --model tiny-llama") != std::string::npos);

        const auto figures = nlohmann::json::parse(slurp(plotly));
        for (const char* id : {"memory_vs_micro_batch", "timeline", "pareto"}) {
            CAPTURE(id);
            REQUIRE(figures.contains(id));
            CHECK(figures[id]["layout"].contains("title"));
            CHECK(!figures[id]["data"].empty());
            for (const auto& trace : figures[id]["data"]) {
                CHECK(trace.contains("x"));
                CHECK(trace.contains("y"));
                CHECK(trace.contains("name"));
            }
        }
        CHECK(figures["timeline"]["layout"]["barmode"] == "stack");
        CHECK(figures["memory_vs_micro_batch"]["layout"]["xaxis"]["type"] == "log");
    }

    TEST_CASE("cli::report --json: the numbers behind the figures agree with plan and recommend") {
        const Run r = run_remat("report" + question + " --json");
        REQUIRE(r.code == 0);
        const auto j = nlohmann::json::parse(r.out);
        const Run rec = run_remat("recommend" + question + " --json");
        REQUIRE(rec.code == 0);
        const auto best = nlohmann::json::parse(rec.out)["candidates"][0];
        // Unpinned, the plan shown is recommend's best.
        const auto& plan = j["chosen"]["plan"];
        CHECK(plan["strategy"] == best["strategy"]);
        CHECK(plan["question"]["micro_batch"] == best["micro_batch"]);
        CHECK(plan["peak_bytes"] == best["peak_bytes"]);
        // Each curve's point at a micro-batch is plan's peak there.
        for (const auto& curve : j["memory_vs_micro_batch"]) {
            CAPTURE(curve["strategy"].get<std::string>());
            REQUIRE(!curve["points"].empty());
            const auto& p = curve["points"][0];
            const Run one =
                run_remat("plan" + question + " --micro-batch " +
                          std::to_string(p["micro_batch"].get<std::uint64_t>()) + " --strategy " +
                          curve["strategy"].get<std::string>() + " --json");
            REQUIRE(one.code == 0);
            CHECK(nlohmann::json::parse(one.out)["peak_bytes"] == p["peak_bytes"]);
            // The largest that fits is drawn, and fits; a larger drawn point does not.
            const auto m = curve["max_micro_batch"].get<std::uint64_t>();
            for (const auto& q : curve["points"])
                CHECK(q["fits"].get<bool>() == (q["micro_batch"].get<std::uint64_t>() <= m));
        }
        // The step's memory by category at each action's high-water mark adds up to it.
        for (const auto& t : plan["timeline"]) {
            std::uint64_t sum = 0;
            for (const auto& [k, v] : t["at_peak"].items()) sum += v.get<std::uint64_t>();
            CHECK(sum == t["peak_bytes"].get<std::uint64_t>());
        }
        CHECK(j["pareto"]["points"].size() > 1);
        CHECK(j["dot"].get<std::string>().starts_with("digraph G {"));
    }

    TEST_CASE("cli::report --strategy and --micro-batch pin the plan shown") {
        const Run r = run_remat("report" + question + " --strategy sqrt --micro-batch 2 --json");
        REQUIRE(r.code == 0);
        const auto j = nlohmann::json::parse(r.out);
        CHECK(j["chosen"]["plan"]["strategy"] == "sqrt");
        CHECK(j["chosen"]["plan"]["question"]["micro_batch"] == 2);
        CHECK(j["chosen"]["why"].get<std::string>().find("as asked") != std::string::npos);
    }

    TEST_CASE("cli::report escapes what the user named, in the page and in Graphviz's figure") {
        // A model is named after its config's folder: any characters a folder may hold.
        const auto dir = temp_dir() / "a<b>&\"c";
        std::filesystem::create_directories(dir);
        std::ofstream(dir / "config.json")
            << R"({"model_type": "llama", "num_hidden_layers": 2, "hidden_size": 64,
                   "num_attention_heads": 4, "intermediate_size": 176, "vocab_size": 512,
                   "max_position_embeddings": 256})";
        const auto html = (temp_dir() / "hostile.html").string();
        const Run r = run_remat("report --model '" + (dir / "config.json").string() +
                                "' --seq 64 -o " + html);
        REQUIRE(r.code == 0);
        const std::string page = slurp(html);
        CHECK(page.find("a<b>") == std::string::npos);
        CHECK(page.find("a&lt;b&gt;&amp;&quot;c") != std::string::npos);
        // Two blocks: the default strategy list drops every-4 and segments-4, as max-batch does.
        CHECK(page.find("segments-4") == std::string::npos);
        const Run dot = run_remat("dot --model '" + (dir / "config.json").string() + "' --seq 64");
        CHECK(dot.code == 0);
        CHECK(dot.out.find("cluster_legend") != std::string::npos);
    }

    TEST_CASE("cli::report draws at most 400 bars of a long step, each the highest of its run") {
        const std::string cfg =
            write_temp("deep.json",
                       R"({"model_type": "llama", "num_hidden_layers": 300, "hidden_size": 64,
                "num_attention_heads": 4, "intermediate_size": 176, "vocab_size": 512,
                "max_position_embeddings": 256})");
        const auto plotly = (temp_dir() / "deep.json.plotly").string();
        const Run r = run_remat("report --model " + cfg +
                                " --seq 64 --strategies none,full --strategy full --micro-batch 1 "
                                "--plotly " +
                                plotly);
        REQUIRE(r.code == 0);
        const auto figures = nlohmann::json::parse(slurp(plotly));
        const auto& timeline = figures["timeline"];
        const std::string title = timeline["layout"]["xaxis"]["title"];
        // full over 300 blocks: 907 actions (forwards, recomputations, backwards, the optimizer).
        CHECK(title.find("907 actions, each bar the highest of 3") != std::string::npos);
        CHECK(timeline["data"][0]["x"].size() == 303);
        CHECK(timeline["layout"]["xaxis"]["ticktext"][0] == "F_all(0)..F_ck(2)");
    }

    TEST_CASE("cli::report refuses in one line") {
        check_rejected("report" + question, "-o report.html");
        check_rejected("report" + question + " -o /nonexistent/dir/r.html", "-o '/nonexistent");
        check_rejected("report" + question + " --json --strategies none,bogus", "bogus");
        check_rejected("report" + question + " --json --offload-checkpoints",
                       "drop --offload-checkpoints");
    }
}
