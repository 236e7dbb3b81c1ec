// The executor: one rank running a Schedule's actions on the stage programs, step after step,
// with FSDP-style sharding. Device-agnostic: the model's backend does the math and moves bytes
// (runtime/backend.hpp), the allocator counts them, the collectives connect the ranks.
//
//   RankExecutor<float> r(model, schedule, rank, collectives, allocator, options);
//   StepRecord s = r.step(step_index, ids, targets);   // one optimizer step
//
// What it holds, per rank: each unit's fp32 parameter shard and AdamW moments (from start-up,
// so every step is a steady step), the unit's gathered parameters while an action needs them,
// its unsharded gradients during its backward, then its fp32 gradient shard until the
// optimizer step. Tensors are reference counted: one lives while an op's inputs, a stage's
// saved set or the next stage's input refer to it, as under autograd.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "planner/config/fsdp_units.hpp"
#include "planner/config/schedule.hpp"
#include "planner/config/selective.hpp"
#include "runtime/allocator.hpp"
#include "runtime/collectives.hpp"
#include "runtime/numeric.hpp"
#include "runtime/stage_program.hpp"

namespace remat::rt {

struct ActionMemory {
    std::string action;            // "F_ck(3)", "B(3)", "optimizer"
    std::uint64_t live_bytes = 0;  // after the action
    std::uint64_t peak_bytes = 0;  // high-water mark during it
};

// A tensor a stage kept after its first forward, as allocated.
struct SavedTensor {
    std::string name;
    std::vector<std::uint64_t> shape;
    DType dtype = DType::f32;
    std::uint64_t bytes = 0;
};

// Wall time spent in one kind of work during a step, summed over its calls: an op's forward or
// backward ("F blocks attn.qkv", "B head lm_head"), or the executor's own work ("all_gather",
// "reduce_scatter", "zero_grads", "optimizer").
struct WorkTime {
    std::string what;
    double seconds = 0;
    std::uint64_t calls = 0;
};

struct StepRecord {
    double loss = 0;                        // mean over the global batch
    std::vector<ActionMemory> timeline;     // one per action, then "optimizer"
    std::vector<std::vector<float>> grads;  // per unit, this rank's fp32 gradient shard (when kept)
    std::vector<WorkTime> work;             // with ExecutorOptions::time_work, in first-seen order
};

struct ExecutorOptions {
    AdamW adamw;
    bool keep_gradients = false;  // copy each step's gradient shards into StepRecord (for checks)
    // Time every op and collective (synchronizing the backend around each): where a step's time
    // goes, for `remat run --work-times`; it slows the step by one synchronization per op.
    bool time_work = false;
};

template <class T>
class RankExecutor {
  public:
    RankExecutor(const Model<T>& model, const Schedule& schedule, std::size_t rank,
                 Collectives<T>& coll, CountingAllocator& alloc, std::uint64_t seed,
                 const ExecutorOptions& options);
    // ids, targets: this rank's (B, S) token ids and next-token targets; row0: global index of
    // its first sequence.
    StepRecord step(std::uint64_t step, const std::vector<std::int32_t>& ids,
                    const std::vector<std::int32_t>& targets, std::uint64_t row0);
    // What each stage kept after its first forward in the last step, by stage.
    const std::vector<std::vector<SavedTensor>>& saved_after_forward() const {
        return saved_report_;
    }

  private:
    struct UnitState {
        std::uint64_t shard_n = 0;  // ceil(numel / W): the last rank's shard is padded
        BufferRef master, m, v;     // fp32, shard_n each
        BufferRef gathered;         // T, numel: while an action needs it
        BufferRef grad;             // T, numel: during the unit's backward
        BufferRef grad_shard;       // fp32, shard_n: from its reduce-scatter to the optimizer step
    };
    struct StageState {
        std::vector<BufferRef> saved;  // by tensor id
        bool backward_done = false;    // a recomputed predecessor's output then has no reader
    };

    void run_action(std::size_t a);
    void apply(const UnitChanges& changes);  // FSDP: free, then gather (all-gather from the shards)
    void forward(std::size_t i, const Action& act);
    void recompute_core(std::size_t i);
    void backward(std::size_t i);
    void reduce_unit_gradients(std::size_t u);
    void optimizer_step(StepRecord& record);
    void run_op(const ProgramOp& op, bool backward_pass, std::vector<BufferRef>& values,
                std::vector<BufferRef>* grads, std::size_t stage);
    BufferRef allocate(std::uint64_t bytes) { return make_buffer(alloc_, bytes); }
    BufferRef allocate_zeroed(std::uint64_t bytes) { return make_zeroed(alloc_, bytes); }
    void record(const std::string& label, StepRecord& r);
    // Runs f; with time_work, adds its wall time (backend synchronized) to `what`.
    template <class F>
    void timed(const std::string& what, F&& f);

    const Model<T>& model_;
    const Schedule& schedule_;
    UnitPolicy unit_policy_;  // which units are gathered at each action (planner/config/fsdp_units)
    std::size_t rank_;
    Collectives<T>& coll_;
    CountingAllocator& alloc_;
    std::uint64_t seed_;
    ExecutorOptions options_;
    std::vector<UnitState> units_;
    std::vector<StageState> stages_;
    std::vector<BufferRef> boundary_, boundary_grad_;  // stage i's input is boundary i
    std::vector<std::vector<int>> uses_, core_uses_;   // forward consumers per tensor
    std::vector<std::vector<std::vector<int>>>
        release_;  // per stage, per op: saved tensors freed after its backward
    std::vector<std::vector<bool>> sel_kept_, sel_dropped_, saved_any_;
    std::vector<std::vector<SavedTensor>> saved_report_;
    std::uint64_t step_ = 0, row0_ = 0, optimizer_steps_ = 0;
    const std::vector<std::int32_t>* targets_ = nullptr;
    std::vector<WorkTime> work_;  // this step's, with time_work
};

// What Megatron's selective recomputation keeps of a stage (F_sel) and what R_sel brings back
// (`dropped`), by tensor: the rule of planner/config/selective.hpp over the stage's ops.
SelectiveSets selective_sets(const StageProgram& p);

}  // namespace remat::rt
