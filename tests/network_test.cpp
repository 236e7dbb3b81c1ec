// Communication (planner/simulate/network, the replay's collectives): NCCL's cost model against
// the bus bandwidths nccl-tests reports on DGX H100/A100 (models/networks cite them), the ring
// and tree latencies of NCCL's tuner, which collectives each sharding runs and their volumes
// (the ZeRO paper's 2Ψ and 3Ψ), and what communication does to tokens/s at scale.
#include "planner/simulate/network.hpp"

#include <doctest/doctest.h>

#include <cmath>

#include "planner/config/error.hpp"
#include "planner/search/search.hpp"
#include "tools/cli_options.hpp"
#include "tools/validation.hpp"

using namespace remat;

namespace {

constexpr double GiB = 1024.0 * 1024 * 1024;

Evaluation plan_of(const std::string& sharding, std::uint64_t W, const std::string& network = "",
                   const std::string& precision = "bf16-mixed", std::uint64_t B = 1) {
    cli::CommonArgs a;
    a.model = "llama2-7b";
    a.seq = 4096;
    a.sharding = sharding;
    a.world_size = static_cast<std::int64_t>(W);
    a.network = network;
    a.precision = precision;
    a.micro_batch = static_cast<std::int64_t>(B);
    return evaluate(cli::make_question(a), parse_strategy("none"));
}

const CollectiveTotal* find(const SimResult& r, Collective c) {
    for (const CollectiveTotal& t : r.collectives)
        if (t.kind == c) return &t;
    return nullptr;
}

}  // namespace

TEST_CASE("network::large messages reach the bus bandwidths nccl-tests measures") {
    const NetworkSpec h100 = load_network("dgx-h100");
    auto busbw = [&](Collective c, std::uint64_t ranks, const NetworkSpec& n) {
        const double bytes = 8 * GiB;  // nccl-tests' -e 8G: latency is negligible
        return bus_bandwidth(c, bytes, ranks, collective_s(c, bytes, ranks, n)) / 1e9;
    };
    // 8 H100 in a node: all-reduce with NVLink SHARP ~480 GB/s, all-gather and reduce-scatter
    // 370 GB/s (sjeaugey, NVIDIA/nccl-tests#212).
    CHECK(busbw(Collective::all_reduce, 8, h100) == doctest::Approx(480).epsilon(0.01));
    CHECK(busbw(Collective::all_gather, 8, h100) == doctest::Approx(370).epsilon(0.01));
    CHECK(busbw(Collective::reduce_scatter, 8, h100) == doctest::Approx(370).epsilon(0.01));
    // Across 4 nodes of 8 x 400G: ring bus bandwidth 370-396 GB/s (nccl-tests#319, #309).
    const double across = busbw(Collective::all_reduce, 32, h100);
    CHECK(across >= 365);
    CHECK(across <= 396);
    // DGX A100: 230 GB/s in a node (nccl-tests#149), 192 GB/s across nodes (nccl#812).
    const NetworkSpec a100 = load_network("dgx-a100");
    CHECK(busbw(Collective::all_reduce, 8, a100) == doctest::Approx(230).epsilon(0.01));
    CHECK(busbw(Collective::all_reduce, 64, a100) == doctest::Approx(192).epsilon(0.01));
}

TEST_CASE("network::small messages cost NCCL's ring latency, and trees win across many nodes") {
    const NetworkSpec n = load_network("dgx-h100");
    // 8 GPUs on NVLink, ring Simple: 8.4 us + 14 steps x 3.4 us (nccl src/graph/tuning.cc).
    CHECK(collective_s(Collective::all_reduce, 8, 8, n) ==
          doctest::Approx(8.4e-6 + 14 * 3.4e-6).epsilon(1e-3));
    // All-gather: n - 1 steps; 2 nodes: one of them crosses the network.
    CHECK(collective_s(Collective::all_gather, 8, 16, n) ==
          doctest::Approx(8.4e-6 + 14 * 3.4e-6 + 14e-6).epsilon(1e-3));
    // 512 nodes: a tree's 2 log2(512) network steps against a ring's 2 x 4095.
    const double tree = 8.4e-6 + 2 * (7 * 3.4e-6 + 9 * 14e-6);
    CHECK(collective_s(Collective::all_reduce, 8, 4096, n) == doctest::Approx(tree).epsilon(1e-3));
    CHECK(collective_s(Collective::all_gather, 8, 4096, n) > 10 * tree);
    CHECK(collective_s(Collective::all_reduce, GiB, 1, n) == 0);
}

TEST_CASE("network::presets name their settings; unknown names and --gpus-per-node 0 are refused") {
    for (const std::string& name : network_preset_names()) {
        const NetworkSpec n = load_network(name);
        CHECK(n.gpus_per_node > 0);
        CHECK(n.intra_bus_bandwidth > 0);
        CHECK(n.inter_bus_bandwidth > 0);
        CHECK(n.base_latency_s > 0);
    }
    CHECK_THROWS_AS(load_network("dgx-h1000"), InputError);
    cli::CommonArgs a;
    a.model = "gpt2";
    a.gpus_per_node = 0;
    CHECK_THROWS_AS(cli::make_question(a), InputError);
    a.gpus_per_node = 4;
    a.world_size = 16;
    CHECK(ranks_per_node(cli::make_question(a)) == 4);
}

TEST_CASE("network::each sharding runs its collectives: FSDP 3 Psi, DDP and ZeRO-2 2 Psi") {
    // fp32, so that parameters and gradients are 4 bytes each in every sharding.
    const double P = 6738415616.0, psi = 4 * P;
    const SimResult fsdp = plan_of("fsdp", 8, "", "fp32").result;
    const CollectiveTotal* ag = find(fsdp, Collective::all_gather);
    const CollectiveTotal* rs = find(fsdp, Collective::reduce_scatter);
    REQUIRE(ag);
    REQUIRE(rs);
    // Forward gathers the root unit and 32 blocks; backward gathers the 32 blocks again (the
    // root stays gathered); each unit's gradients are reduce-scattered once.
    CHECK(ag->count == 65);
    CHECK(rs->count == 33);
    CHECK((ag->bytes + rs->bytes) / psi == doctest::Approx(3).epsilon(0.06));
    const SimResult ddp = plan_of("none", 8, "", "fp32").result;
    const CollectiveTotal* ar = find(ddp, Collective::all_reduce);
    REQUIRE(ar);
    CHECK(find(ddp, Collective::all_gather) == nullptr);
    // An all-reduce moves its buffer twice (reduce-scatter, then all-gather): 2 Psi.
    CHECK(2 * ar->bytes / psi == doctest::Approx(2).epsilon(1e-9));
    CHECK(ar->count > 32);  // 25 MiB buckets
    const SimResult zero2 = plan_of("zero2", 8, "", "fp32").result;
    const CollectiveTotal* zrs = find(zero2, Collective::reduce_scatter);
    const CollectiveTotal* zag = find(zero2, Collective::all_gather);
    REQUIRE(zrs);
    REQUIRE(zag);
    CHECK(zag->count == 1);  // the updated parameters, after the step
    CHECK((zrs->bytes + zag->bytes) / psi == doctest::Approx(2).epsilon(1e-9));
    // One rank: nothing to say to anyone.
    CHECK(plan_of("fsdp", 1).result.collectives.empty());
}

TEST_CASE("network::communication hides behind compute in a node and dominates across many") {
    const SimResult node = plan_of("fsdp", 8).result;
    CHECK(node.comm_s > 0);
    CHECK(node.exposed_comm_s < 0.05 * node.step_time_s);
    CHECK(node.step_time_s ==
          doctest::Approx(node.compute_step_time_s + node.exposed_comm_s).epsilon(1e-9));
    // The example: at 1,000,000 ranks FSDP's ring all-gathers take seconds each.
    const SimResult huge = plan_of("fsdp", 1000000).result;
    CHECK(huge.tokens_per_s < 0.1 * node.tokens_per_s);
    // A slower fabric exposes more at the same scale.
    const SimResult ib = plan_of("fsdp", 256, "dgx-h100").result;
    const SimResult pcie = plan_of("fsdp", 256, "pcie-gen4").result;
    CHECK(pcie.exposed_comm_s > ib.exposed_comm_s);
    CHECK(pcie.tokens_per_s < ib.tokens_per_s);
    // A larger micro-batch has more compute to hide the same collectives behind.
    const SimResult b4 = plan_of("fsdp", 256, "pcie-gen4", "bf16-mixed", 4).result;
    CHECK(b4.exposed_comm_s < pcie.exposed_comm_s);
}

TEST_CASE("network::validate's rank correlation: Spearman's rho with ties at their mean rank") {
    CHECK(cli::spearman({1, 2, 3, 4}, {10, 20, 30, 40}) == doctest::Approx(1));
    CHECK(cli::spearman({1, 2, 3, 4}, {40, 30, 20, 10}) == doctest::Approx(-1));
    // One swap among five: 1 - 6 * 2 / (5 * 24) = 0.9.
    CHECK(cli::spearman({1, 2, 3, 4, 5}, {1, 2, 3, 5, 4}) == doctest::Approx(0.9));
    // Ties: ranks 1.5, 1.5, 3 against 1, 2, 3: rho = 0.866.
    CHECK(cli::spearman({1, 1, 2}, {1, 2, 3}) == doctest::Approx(std::sqrt(3.0) / 2));
}
