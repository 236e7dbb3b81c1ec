#include "runtime/limits.hpp"

#include <fmt/format.h>

#include "planner/config/error.hpp"

namespace remat::rt {
namespace {

bool executes(Precision p) { return p == Precision::fp32 || p == Precision::bf16_mixed; }

}  // namespace

void check_run_options(const RunOptions& o, bool offload_checkpoints) {
    if (o.sharding != Sharding::fsdp)
        throw InputError(fmt::format("{} {}: the runtime executes fsdp (any {}, 1 included)",
                                     named(Input::sharding), sharding_name(o.sharding),
                                     named(Input::world_size)));
    if (!executes(o.precision))
        throw InputError(fmt::format("{} {}: the runtime executes fp32 and bf16-mixed",
                                     named(Input::precision), precision_name(o.precision)));
    if (o.optimizer != Optimizer::adamw)
        throw InputError(fmt::format("{} {}: the runtime steps AdamW", named(Input::optimizer),
                                     optimizer_name(o.optimizer)));
    if (o.grad_accumulation != 1)
        throw InputError(named(Input::grad_accumulation) +
                         ": the runtime runs one micro-batch per optimizer step; drop it");
    if (offload_checkpoints)
        throw InputError(named(Input::offload_checkpoints) +
                         ": the runtime does not execute offloading plans yet; drop it");
    if (o.train != Training::full)
        throw InputError(fmt::format("{} {}: the runtime trains every weight; drop it",
                                     named(Input::train), training_name(o.train)));
    if (o.recipe != Recipe::sft)
        throw InputError(fmt::format("{} {}: the runtime runs the causal-LM loss; drop it",
                                     named(Input::recipe), recipe_name(o.recipe)));
    if (o.offload_optimizer || o.offload_params)
        throw InputError(
            "optimizer or parameter offload: the runtime keeps every state on its device; drop it");
}

void check_buildable(const ModelConfig& m, const Shape& shape) {
    if (m.arch != Arch::gpt2 && m.arch != Arch::llama)
        throw InputError(
            fmt::format("model '{}': the runtime builds gpt2 and llama architectures, not {}; "
                        "plan it with remat plan instead",
                        m.name, arch_name(m.arch)));
    if (m.arch == Arch::llama && m.rotary_pct != 1.0)
        throw InputError(
            fmt::format("model '{}': the runtime rotates whole heads (rotary_pct 1.0), not {}",
                        m.name, m.rotary_pct));
    if (m.head_dim % 2 != 0)
        throw InputError(fmt::format("model '{}': head_dim {} must be even for rotary embeddings",
                                     m.name, m.head_dim));
    if (shape.seq > m.context)
        throw InputError(fmt::format("{} {} exceeds model '{}''s context of {}; lower {}",
                                     named(Input::seq), shape.seq, m.name, m.context,
                                     named(Input::seq)));
}

void check_run_config(const RunConfig& c) {
    if (offloads(c.schedule))
        throw InputError(
            "the plan offloads checkpoints to host memory, which the runtime does not execute yet; "
            "drop " +
            named(Input::offload_checkpoints));
    if (c.world == 0 || c.micro_batch == 0 || c.seq == 0 || c.steps == 0)
        throw InputError(fmt::format("{}, {}, {} and {} must be positive", named(Input::world_size),
                                     named(Input::micro_batch), named(Input::seq),
                                     named(Input::steps)));
    if (!executes(c.precision))
        throw InputError(fmt::format("{} {}: the CPU runtime executes fp32 and bf16-mixed",
                                     named(Input::precision), precision_name(c.precision)));
}

}  // namespace remat::rt
