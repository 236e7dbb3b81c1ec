// How much memory this machine can still give: what `remat run` checks its CPU ranks' predicted
// peaks against before it starts, so that a plan needing 125 GiB is refused on a 24 GiB machine
// instead of growing until the kernel kills it.
//
//   if (auto free = host_memory_available_bytes(); free && need > *free) refuse();
//
// It does not reserve anything: another process may take the memory in the meantime.
#pragma once
#include <cstdint>
#include <optional>

namespace remat::rt {

// The smaller of /proc/meminfo's MemAvailable and, inside a cgroup with a memory limit, the
// limit minus current usage (cgroup v2 memory.max, or v1 memory.limit_in_bytes). nullopt when
// neither can be read (not Linux).
std::optional<std::uint64_t> host_memory_available_bytes();

}  // namespace remat::rt
