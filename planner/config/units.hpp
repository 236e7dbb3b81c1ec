// Printing sizes in binary units (KiB, MiB, GiB), as every human-facing output does.
#pragma once
#include <cstdint>
#include <string>

namespace remat {

std::string format_bytes(std::uint64_t bytes);  // "1.50 GiB", "512 B"
std::string format_flops(double flops);         // "12.3 TFLOP"
std::string format_seconds(double seconds);     // "412.5 ms"

}  // namespace remat
