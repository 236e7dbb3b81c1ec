#include "planner/simulate/network.hpp"

#include <algorithm>
#include <cmath>

#include "planner/config/error.hpp"
#include "planner/config/json_io.hpp"
#include "planner/config/presets.hpp"

namespace remat {

std::vector<std::string> network_preset_names() { return preset_names("networks"); }

NetworkSpec load_network(const std::string& name) {
    if (const EmbeddedPreset* p = find_preset("networks", name)) {
        const auto j = parse_json_text(p->json, "models/networks/" + name + ".json");
        NetworkSpec n;
        n.name = j.at("name").get<std::string>();
        n.description = j.at("description").get<std::string>();
        n.gpus_per_node = j.at("gpus_per_node").get<std::uint64_t>();
        n.intra_bus_bandwidth = j.at("intra_bus_bytes_per_s").get<double>();
        n.intra_all_reduce_bus_bandwidth = j.at("intra_all_reduce_bus_bytes_per_s").get<double>();
        n.inter_bus_bandwidth = j.at("inter_bus_bytes_per_s").get<double>();
        n.base_latency_s = j.at("base_latency_s").get<double>();
        n.intra_step_latency_s = j.at("intra_step_latency_s").get<double>();
        n.inter_step_latency_s = j.at("inter_step_latency_s").get<double>();
        return n;
    }
    throw_unknown("network", name, network_preset_names());
}

const char* collective_name(Collective c) {
    switch (c) {
        case Collective::all_reduce:
            return "all-reduce";
        case Collective::all_gather:
            return "all-gather";
        case Collective::reduce_scatter:
            return "reduce-scatter";
    }
    return "all-reduce";
}

namespace {

double traffic_factor(Collective c, double n) {
    return c == Collective::all_reduce ? 2 * (n - 1) / n : (n - 1) / n;
}

}  // namespace

double collective_s(Collective c, double bytes, std::uint64_t ranks, const NetworkSpec& net) {
    if (net.in_process) return net.base_latency_s + bytes / net.intra_bus_bandwidth;
    if (ranks <= 1) return 0;
    const double n = static_cast<double>(ranks);
    const std::uint64_t per_node = std::max<std::uint64_t>(1, std::min(net.gpus_per_node, ranks));
    const double nodes = std::ceil(n / static_cast<double>(per_node));
    const bool all_reduce = c == Collective::all_reduce;
    const double intra_bw =
        all_reduce && nodes == 1 ? net.intra_all_reduce_bus_bandwidth : net.intra_bus_bandwidth;
    const double busbw = nodes == 1 ? intra_bw : std::min(intra_bw, net.inter_bus_bandwidth);
    const double transfer_s = bytes * traffic_factor(c, n) / busbw;
    // Ring: 2(n-1) steps for all-reduce, n-1 otherwise; of which 2(nodes-1) or nodes-1 cross
    // the network (nccl src/graph/tuning.cc, the ring latency).
    const double steps = all_reduce ? 2 * (n - 1) : n - 1;
    const double inter_steps = all_reduce ? 2 * (nodes - 1) : nodes - 1;
    const double ring_s = net.base_latency_s + (steps - inter_steps) * net.intra_step_latency_s +
                          inter_steps * net.inter_step_latency_s + transfer_s;
    if (!all_reduce || nodes == 1) return ring_s;
    // Tree all-reduce across nodes: up and down a chain within each node and a binary tree
    // between nodes; NCCL's tuner takes whichever is faster.
    const double ppn = static_cast<double>(per_node);
    const double tree_s =
        net.base_latency_s +
        2 * ((ppn - 1) * net.intra_step_latency_s + std::log2(nodes) * net.inter_step_latency_s) +
        transfer_s;
    return std::min(ring_s, tree_s);
}

double bus_bandwidth(Collective c, double bytes, std::uint64_t ranks, double seconds) {
    // (in-process figures are fitted as bytes / seconds: calibration.cpp)
    if (ranks <= 1 || !(seconds > 0)) return 0;
    return bytes / seconds * traffic_factor(c, static_cast<double>(ranks));
}

}  // namespace remat
