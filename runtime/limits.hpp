// What the runtime executes, in one place: the run options it steps, the models and shapes it
// builds, and the runs it starts. Each check throws InputError naming the option and the fix
// (docs/runtime.md, "What the runtime does not execute"). The CLI asks before it plans; the
// runtime asks again before it builds a model or starts a run.
//
//   rt::check_run_options(q.options, q.context.offload_checkpoints);  // tools/, before planning
//   rt::check_buildable(model, shape);                                // build_model, first
//   rt::check_run_config(config);                                     // run_schedule, first
#pragma once

#include "planner/config/model.hpp"
#include "planner/config/options.hpp"
#include "runtime/run.hpp"
#include "runtime/stage_program.hpp"

namespace remat::rt {

// fsdp sharding (any world size, 1 included), fp32 or bf16-mixed, AdamW, one micro-batch per
// optimizer step, and no offloading of checkpoints.
void check_run_options(const RunOptions& o, bool offload_checkpoints);
// The gpt2 and llama architectures, rotary over whole heads, an even head size, and a sequence
// within the model's context.
void check_buildable(const ModelConfig& m, const Shape& shape);
// Positive world size, micro-batch, sequence and steps, a Schedule that does not offload, and
// a precision of check_run_options.
void check_run_config(const RunConfig& c);

}  // namespace remat::rt
