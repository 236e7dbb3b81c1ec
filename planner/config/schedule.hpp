// The Plan a strategy produces and its explicit Schedule: the ordered actions of one training
// step. The simulator (planner/simulate) and the runtime (runtime/) both replay it.
//
//   F_all(i)   forward of stage i, keeping everything its backward needs (x̄_i)
//   F_ck(i)    forward of stage i, keeping only its input x_i (a checkpoint)
//   F_none(i)  forward of stage i, keeping nothing (its input is freed after use)
//   F_sel(i)   forward keeping all but the attention core's internals (Megatron selective)
//   R_sel(i)   recompute stage i's attention core from what F_sel kept
//   B(i)       backward of stage i: consumes what stage i kept and the output gradient,
//              produces the input gradient, frees all of stage i
// Actions after the first B are recomputations when they are forwards.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace remat {

enum class ActionKind : std::uint8_t { F_all, F_ck, F_none, F_sel, R_sel, B };
std::string_view action_kind_name(ActionKind k);

struct Action {
    ActionKind kind = ActionKind::F_all;
    std::uint32_t stage = 0;
    bool recompute = false;  // a forward that runs again during backward
    // F_ck only: the checkpoint (the stage input) moves to host memory after this forward and
    // comes back when the stage's next forward reads it (torch's offload_to_cpu=True).
    bool offload = false;
    bool operator==(const Action&) const = default;
};
std::string action_label(
    const Action& a);  // "F_ck(3)", "F_all(3)*" for a recompute, "F_ck(3)^" offloaded

// What a stage keeps after its first forward.
enum class Keep : std::uint8_t { all, selective, input, none };
std::string_view keep_name(Keep k);

struct Schedule {
    std::vector<Action> actions;
    bool operator==(const Schedule&) const = default;
};

// What the optimal planner reports beside its Plan.
struct OptimalInfo {
    std::uint64_t budget_bytes = 0;          // the peak_bytes it had to stay within
    bool fits = false;                       // false: nothing fits; the leanest schedule is given
    std::uint64_t allocator_peak_bytes = 0;  // the DP's value (the replay must agree)
    double step_time_s =
        0;  // the DP's value: compute, without communication (the replay's compute_step_time_s)
    std::size_t frontier_points = 0;
    std::uint64_t slot_bytes = 0;  // 0: exact
    double solve_s = 0;            // DP time (cost extraction excluded)
    // Set when a heuristic's schedule, replayed, beat the DP's pick within the budget (memory
    // slots thin the frontier; DDP + autocast is modelled by an upper bound): its name.
    std::string incumbent;
};

struct Plan {
    std::string strategy;     // "sqrt", "every-2", ...
    std::vector<Keep> keeps;  // one per stage, first forward
    Schedule schedule;
    std::optional<OptimalInfo> optimal;
};

// The schedule of the heuristics: forward with each stage's Keep; in backward, a stage that
// keeps all runs B; selective runs R_sel then B; a checkpoint followed by stages that keep
// nothing forms a segment, recomputed whole with F_all before its backwards (as non-reentrant
// torch.utils.checkpoint does for a wrapped sequence of blocks).
// With `offload`, every checkpoint of the first pass goes to host memory.
Schedule schedule_from_keeps(const std::vector<Keep>& keeps, bool offload = false);
bool offloads(const Schedule& s);
// What each of n stages keeps after its first forward (the actions before the first B).
std::vector<Keep> keeps_of(const Schedule& s, std::size_t n);

}  // namespace remat
