// A GPU as the memory model and the step-time model see it (models/gpus/*.json).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace remat {

struct GpuSpec {
    std::string name;                  // "h100-80gb"
    std::string description;           // "NVIDIA H100 SXM5 80GB"
    std::uint64_t capacity_bytes = 0;  // what the driver reports as total
    double bf16_flops = 0;             // dense tensor-core peak, FLOP/s
    double fp32_flops = 0;             // non-tensor FP32 peak, FLOP/s
    double memory_bandwidth = 0;       // bytes/s
    double host_link_bandwidth = 0;    // bytes/s per direction (PCIe)
    int compute_major = 0;             // 8 for A100/L4/4090, 9 for H100/H200
    int compute_minor = 0;
    std::string network;  // the network preset its servers usually have (models/networks)
};

GpuSpec load_gpu(const std::string& name);  // throws InputError naming the closest presets
std::vector<std::string> gpu_preset_names();

// "24GiB", "24 gib", "24G" (binary: 2^30 each), "80GB" (decimal: 10^9), "1.5TiB", "4096B" -> bytes,
// rounded to the nearest byte. A unit is required (a bare number is refused: bytes or GiB is
// exactly the mistake to catch), units are case-insensitive, the result is at most 2^63 - 1.
// Throws InputError naming `option`; zero is accepted only where `allow_zero` (a reserve may be
// 0, a capacity may not).
std::uint64_t parse_bytes(const std::string& text, const std::string& option,
                          bool allow_zero = false);

}  // namespace remat
