// The runtime against the planner's `remat` profile: what each op saves, tensor by tensor; each
// rank's peak and every action's live bytes; losses and gradients of checkpointed runs against
// `none`; W ranks against one rank with W times the rows; the maximum micro-batch under a cap.
// The two sides are independent: the runtime builds its ops from the model config alone
// (runtime/stage_program.cpp), the planner from its own description
// (planner/graph/profile_remat.cpp).
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>

#include "planner/chain/chain.hpp"
#include "planner/config/error.hpp"
#include "runtime/allocator.hpp"
#include "tests/runtime_question.hpp"
#include "tools/validation.hpp"

using namespace remat;
using namespace remat::cli;

namespace {

const std::string data_dir = std::string(REMAT_SOURCE_DIR) + "/tests/data/";

Question question(const std::string& model, std::uint64_t B, std::uint64_t S, std::uint64_t W,
                  Precision p, Attention attention = Attention::flash) {
    return test::runtime_test_question(rt::Device::cpu, model, B, S, W, p, attention);
}

RunSettings one_step() {
    RunSettings s;
    s.steps = 1;
    return s;
}

}  // namespace

TEST_CASE("runtime::saved tensors match the remat profile tensor by tensor") {
    for (const std::string model : {"tiny-gpt2", "tiny-llama"})
        for (Precision p : {Precision::fp32, Precision::bf16_mixed})
            for (Attention attention : {Attention::flash, Attention::eager}) {
                CAPTURE(model);
                CAPTURE(precision_name(p));
                CAPTURE(attention_name(attention));
                const Question q = question(model, 2, 32, 1, p, attention);
                const RunReport r = run_and_compare(q, parse_strategy("none"), one_step());
                const Chain& c = r.prediction.chain;
                const auto& measured = r.run.ranks.front().saved;
                REQUIRE(measured.size() == c.stages.size());
                for (std::size_t i = 0; i < c.stages.size(); ++i) {
                    const StageGraph& g = c.graph_of(i);
                    std::set<std::string> predicted, got;
                    for (TensorId t : g.saved_storages()) {
                        const Tensor& x = g.tensor(t);
                        std::ostringstream s;
                        s << x.name << " " << dtype_name(x.dtype) << " " << x.bytes();
                        for (auto d : x.shape) s << " " << d;
                        predicted.insert(s.str());
                    }
                    for (const auto& x : measured[i]) {
                        std::ostringstream s;
                        s << x.name << " " << dtype_name(x.dtype) << " " << x.bytes;
                        for (auto d : x.shape) s << " " << d;
                        got.insert(s.str());
                    }
                    CAPTURE(c.stages[i].name);
                    CHECK(got == predicted);
                }
            }
}

// Every strategy, both precisions, W = 1, 2, 4: each rank's peak and rank 0's live bytes after
// (and peak during) every action within 1% of the prediction. They agree to the byte today; 1%
// is the issue's bound. One test case per configuration, so that ctest runs them side by side.
static void check_memory(const std::string& model, std::uint64_t B, std::uint64_t S,
                         Attention attention = Attention::flash) {
    double worst = 0;
    const Question base = question("tiny-gpt2", 1, 64, 1, Precision::fp32, attention);
    for (const auto& spec : all_strategies()) {
        if (spec.kind == StrategyKind::segments_k && spec.n > load_model(model).n_layers) continue;
        for (Precision p : {Precision::fp32, Precision::bf16_mixed})
            for (std::uint64_t W : {1, 2, 4}) {
                const SweepResult r = validate_point(base, {model, spec, B, W, S, p}, 1);
                CAPTURE(r.strategy);
                CAPTURE(precision_name(p));
                CAPTURE(W);
                CHECK(r.peak_error <= 0.01);
                CHECK(r.action_error <= 0.01);
                worst = std::max({worst, r.peak_error, r.action_error});
            }
    }
    MESSAGE(model << " B=" << B << " S=" << S << " " << attention_name(attention)
                  << ": worst relative error " << worst);
}

TEST_CASE("runtime::measured memory matches the prediction: tiny-gpt2") {
    check_memory("tiny-gpt2", 2, 64);
}
TEST_CASE("runtime::measured memory matches the prediction: tiny-llama") {
    check_memory("tiny-llama", 2, 64);
}
// The eager core saves the probabilities (B, A, S, S) instead of out and lse.
TEST_CASE("runtime::measured memory matches the prediction, eager attention: tiny-gpt2") {
    check_memory("tiny-gpt2", 2, 64, Attention::eager);
}
TEST_CASE("runtime::measured memory matches the prediction, eager attention: tiny-llama") {
    check_memory("tiny-llama", 2, 64, Attention::eager);
}
// The S x S attention scratch and the S x V logits dominate: vocabulary 32000, hidden 64.
TEST_CASE("runtime::measured memory matches the prediction: wide vocabulary, sequence 512") {
    check_memory(data_dir + "wide-vocab-gpt2.json", 1, 512);
}
TEST_CASE("runtime::measured memory matches the prediction: wide vocabulary, sequence 1024") {
    check_memory(data_dir + "wide-vocab-llama.json", 1, 1024);
}

// Each strategy's losses and gradients over two steps against none's, bitwise.
static void check_checkpointing(const std::vector<std::string>& strategies, Attention attention) {
    for (const std::string model : {"tiny-gpt2", "tiny-llama"})
        for (const std::string& strategy : strategies)
            for (Precision p : {Precision::fp32, Precision::bf16_mixed}) {
                CAPTURE(model);
                CAPTURE(strategy);
                CAPTURE(precision_name(p));
                RunSettings s;
                s.steps = 2;
                s.check_gradients = true;
                const RunReport r = run_and_compare(question(model, 2, 32, 2, p, attention),
                                                    parse_strategy(strategy), s);
                REQUIRE(r.gradients_match.has_value());
                CHECK_MESSAGE(*r.gradients_match, r.gradient_difference);
            }
}

TEST_CASE("runtime::checkpointed losses and gradients are bitwise equal to none's") {
    // tiny-gpt2 has dropout everywhere: a recomputation must draw the same masks.
    check_checkpointing({"full", "every-2", "selective", "sqrt"}, Attention::flash);
}

TEST_CASE(
    "runtime::checkpointed losses and gradients are bitwise equal to none's, eager attention") {
    check_checkpointing({"full", "selective"}, Attention::eager);
}

// Data parallelism is exact up to summation order: W ranks with b rows each see the global
// batch that one rank with W*b rows sees (the same tokens, the same dropout masks, indexed by
// global row), and the loss is the mean over it. fp32: rtol 1e-5 as the issue asks; atol 1e-6
// covers the loss near zero, which it never is here (about ln 4096 = 8.3).
TEST_CASE("runtime::W ranks with micro-batch b give one rank's losses with W*b") {
    for (const std::string model : {"tiny-gpt2", "tiny-llama"})
        for (std::uint64_t W : {2, 4}) {
            CAPTURE(model);
            CAPTURE(W);
            RunSettings s;
            s.steps = 4;
            const RunReport ranks = run_and_compare(question(model, 1, 32, W, Precision::fp32),
                                                    parse_strategy("sqrt"), s);
            const RunReport one = run_and_compare(question(model, W, 32, 1, Precision::fp32),
                                                  parse_strategy("sqrt"), s);
            REQUIRE(ranks.run.losses.size() == 4);
            for (std::size_t k = 0; k < 4; ++k) {
                const double ref = one.run.losses[k];
                CHECK(std::fabs(ranks.run.losses[k] - ref) <= 1e-6 + 1e-5 * std::fabs(ref));
            }
            CHECK(ranks.run.losses[3] < ranks.run.losses[0]);  // it trains
        }
}

TEST_CASE("runtime::the predicted maximum micro-batch runs and the next one runs out of memory") {
    // --gpu-memory C with no reserve, and the same C as the allocator's cap.
    for (const std::string strategy : {"none", "sqrt"}) {
        CAPTURE(strategy);
        Question q = question("tiny-gpt2", 1, 128, 2, Precision::bf16_mixed);
        q.context.capacity_bytes = 40ull << 20;
        const MaxBatch m = max_micro_batch(q, parse_strategy(strategy));
        REQUIRE(m.max_micro_batch > 0);
        RunSettings s = one_step();
        s.memory_cap_bytes = q.context.capacity_bytes;
        q.options.micro_batch = m.max_micro_batch;
        const RunReport fits = run_and_compare(q, parse_strategy(strategy), s);
        CHECK_FALSE(fits.run.oom.has_value());
        q.options.micro_batch = m.max_micro_batch + 1;
        const RunReport over = run_and_compare(q, parse_strategy(strategy), s);
        REQUIRE(over.run.oom.has_value());
        CHECK(over.run.oom->cap_bytes == q.context.capacity_bytes);
        CHECK(over.run.oom->message.find("out of memory") == 0);
        CHECK(over.run.oom->message.find("--memory-cap") != std::string::npos);
    }
}

// The GPU suite's version of the test above needs a micro-batch that fits at each capacity it
// tries; it used gpt2-xl at W 1, where none does at 24 GiB, so it could only fail.
TEST_CASE("runtime::the GPU maximum-micro-batch test has a micro-batch that fits") {
    for (const std::string cap : {"24GiB", "40GiB"}) {
        CAPTURE(cap);
        CHECK(max_micro_batch(test::gpu_max_batch_question(cap), parse_strategy("none"))
                  .max_micro_batch > 0);
    }
}

// On CUDA, memory a library or a kernel's first launch asks of the device outside the pool can
// be refused; the run reports it as the out-of-memory line of the action and op that were running.
TEST_CASE(
    "runtime::the device refusing memory outside the allocator reads as the out-of-memory line") {
    rt::CountingAllocator a(0);
    a.set_context("B(3)", "attn.core");
    const rt::BufferRef x = rt::make_buffer(a, 1000);
    const rt::OutOfMemory e =
        a.refused(rt::DeviceOutOfMemory("cublasGemmEx(...) (kernels_gemm.cu:42)"));
    CHECK(std::string(e.what()) ==
          "out of memory: cublasGemmEx(...) (kernels_gemm.cu:42) outside the allocator with 1000 "
          "bytes live, the "
          "device has no more, in B(3), op attn.core");
    CHECK(e.cap_bytes == 0);
    CHECK(e.live_bytes == 1000);
    CHECK(e.action == "B(3)");
}

TEST_CASE("runtime::a token file feeds the run") {
    const auto path = std::filesystem::temp_directory_path() /
                      ("remat_tokens_" + std::to_string(::getpid()) + ".bin");
    {
        std::ofstream out(path, std::ios::binary);
        for (std::int32_t t = 0; t < 5000; ++t) {
            const std::int32_t id = (t * 7) % 4096;
            out.write(reinterpret_cast<const char*>(&id), sizeof id);
        }
    }
    RunSettings s;
    s.steps = 2;
    s.data_path = path.string();
    const RunReport r = run_and_compare(question("tiny-gpt2", 2, 32, 1, Precision::fp32),
                                        parse_strategy("none"), s);
    CHECK(r.run.losses.size() == 2);
    {
        std::ofstream out(path, std::ios::binary);
        const std::int32_t bad = 5000;
        for (int k = 0; k < 100; ++k) out.write(reinterpret_cast<const char*>(&bad), sizeof bad);
    }
    CHECK_THROWS_AS(run_and_compare(question("tiny-gpt2", 2, 32, 1, Precision::fp32),
                                    parse_strategy("none"), s),
                    InputError);
    std::filesystem::remove(path);
}

// Independence: the runtime may read the model config, the options, the Schedule, its FSDP unit
// policy and the selective rule (decisions with no sizes in them), never the planner's graphs,
// chain, memory model or simulator.
TEST_CASE("runtime::includes no planner code beyond the config and the Schedule") {
    const std::set<std::string> allowed = {
        "planner/config/model.hpp",    "planner/config/options.hpp",
        "planner/config/schedule.hpp", "planner/config/fsdp_units.hpp",
        "planner/config/error.hpp",    "planner/config/dtype.hpp",
        "planner/config/selective.hpp"};
    const std::regex include(R"re(#include "(planner/[^"]+)")re");
    std::size_t files = 0;
    for (const auto& e : std::filesystem::recursive_directory_iterator(
             std::string(REMAT_SOURCE_DIR) + "/runtime")) {
        if (!e.is_regular_file()) continue;
        ++files;
        std::ifstream in(e.path());
        std::stringstream text;
        text << in.rdbuf();
        const std::string s = text.str();
        for (std::sregex_iterator it(s.begin(), s.end(), include), end; it != end; ++it) {
            CAPTURE(e.path().string());
            CHECK(allowed.count((*it)[1].str()) == 1);
        }
    }
    CHECK(files > 5);
    // And its library links the config library, not the planner.
    std::ifstream cmake(std::string(REMAT_SOURCE_DIR) + "/runtime/CMakeLists.txt");
    std::stringstream text;
    text << cmake.rdbuf();
    CHECK(text.str().find("remat_planner") == std::string::npos);
    CHECK(text.str().find("PUBLIC remat_config") != std::string::npos);
}
