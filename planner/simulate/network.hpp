// The network between ranks and what NCCL's collectives cost on it: presets for GPU servers and
// their fabrics (models/networks/*.json, each citing its measurements), and the ring and tree
// cost model of NCCL's tuner (nccl src/graph/tuning.cc) with nccl-tests' bus-bandwidth
// convention (nccl-tests doc/PERFORMANCE.md):
//
//   all-reduce of S bytes over n ranks:      lat + S * 2(n-1)/n / busbw   (ring; tree if faster)
//   all-gather, reduce-scatter (S the full): lat + S * (n-1)/n  / busbw   (ring)
//
// busbw is the node's own (NVLink) within one node, the slower of it and the fabric's per-node
// bus bandwidth across nodes; lat counts one base latency and a step latency per ring step,
// NVLink steps within a node and network steps between nodes. Which collectives a step runs, and
// what they overlap, is the replay's (planner/simulate/simulate.cpp; docs/step-time.md).
//
//   NetworkSpec n = load_network("dgx-h100");
//   double s = collective_s(Collective::all_gather, 250e6, 64, n);   // 64 ranks, 8 nodes
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace remat {

struct NetworkSpec {
    std::string name;         // "dgx-h100"
    std::string description;  // in words
    std::uint64_t gpus_per_node = 8;
    double intra_bus_bandwidth = 0;  // bytes/s: all-gather, reduce-scatter, ring in a node
    double intra_all_reduce_bus_bandwidth = 0;  // bytes/s: all-reduce in a node (NVLink SHARP)
    double inter_bus_bandwidth = 0;             // bytes/s: a node's ring bus bandwidth across nodes
    double base_latency_s = 0;                  // once per collective
    double intra_step_latency_s = 0;            // per ring step within a node
    double inter_step_latency_s = 0;            // per ring step between nodes
    // remat's CPU runtime (a calibration's "in-process" network): every rank converts or sums
    // the whole buffer itself, so a collective costs latency + bytes / bus bandwidth whatever W,
    // one rank included.
    bool in_process = false;
};

NetworkSpec load_network(const std::string& name);  // InputError naming the presets
std::vector<std::string> network_preset_names();

enum class Collective { all_reduce, all_gather, reduce_scatter };
const char* collective_name(Collective c);

// Seconds for one collective of `bytes` (the full buffer: all-reduce's, all-gather's output,
// reduce-scatter's input) over `ranks` ranks, gpus_per_node to a node. 0 for one rank.
double collective_s(Collective c, double bytes, std::uint64_t ranks, const NetworkSpec& net);

// nccl-tests' bus bandwidth of that collective: algbw * 2(n-1)/n (all-reduce) or * (n-1)/n.
double bus_bandwidth(Collective c, double bytes, std::uint64_t ranks, double seconds);

}  // namespace remat
