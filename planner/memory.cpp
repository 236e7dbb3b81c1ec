#include "planner/memory.hpp"

#include <cassert>
#include <cmath>

namespace remat {

StateBytesPerParam state_bytes_per_param(Sharding s, Precision p, Optimizer o) {
    const bool adam = o == Optimizer::adamw;
    const double compute = p == Precision::fp32 ? 4 : 2;
    switch (s) {
        case Sharding::none:
        case Sharding::fsdp:
        case Sharding::fsdp_grad_op: {
            // PyTorch: parameters, gradients and optimizer state share the parameters' dtype
            // (fp32 under autocast and FSDP mixed precision; bf16 when the model is cast).
            const double pb = p == Precision::bf16 ? 2 : 4;
            return {pb, pb, adam ? 2 * pb : pb, s == Sharding::none ? pb : compute};
        }
        case Sharding::zero1:
        case Sharding::zero2:
        case Sharding::zero3:
        case Sharding::megatron:
        case Sharding::megatron_distopt: {
            const bool megatron = s == Sharding::megatron || s == Sharding::megatron_distopt;
            if (p == Precision::fp32) return {4, 4, adam ? 8.0 : 4.0, 4};
            // 2-byte weights; DeepSpeed keeps 2-byte gradients, Megatron fp32 main_grad;
            // the optimizer holds fp32 master weights plus its moments.
            return {2, megatron ? 4.0 : 2.0, adam ? 12.0 : 8.0, 2};
        }
    }
    return {};
}

ShardingRule sharding_rule(Sharding s, Precision p) {
    ShardingRule r;
    const bool mixed = p == Precision::bf16_mixed || p == Precision::fp16_mixed;
    switch (s) {
        case Sharding::none:
            r.grads_allocated_in_backward = true;
            r.autocast_weight_cache = mixed;
            r.foreach_adam_temp = true;
            break;
        case Sharding::fsdp:
        case Sharding::fsdp_grad_op:
            r.parameters_sharded = r.gradients_sharded = r.optimizer_sharded = true;
            r.gather_per_unit = true;
            r.reshard_after_forward = s == Sharding::fsdp;
            r.grads_allocated_in_backward = true;
            r.foreach_adam_temp = true;
            break;
        case Sharding::zero3:
            r.parameters_sharded = true;
            r.gather_per_unit = true;
            [[fallthrough]];
        case Sharding::zero2:
            r.gradients_sharded = true;
            [[fallthrough]];
        case Sharding::zero1:
        case Sharding::megatron_distopt:
            r.optimizer_sharded = true;
            break;
        case Sharding::megatron:
            break;
    }
    return r;
}

std::vector<Unit> fsdp_units(const Chain& c) {
    std::vector<Unit> units(1);
    const std::uint64_t W = c.options.world_size;
    for (std::size_t i = 0; i < c.stages.size(); ++i) {
        if (c.stages[i].kind == StageKind::block) {
            units.push_back({{i}, c.stages[i].params, 0});
        } else {
            units[0].stages.push_back(i);
            units[0].params += c.stages[i].params;
        }
    }
    for (auto& u : units) u.shard_params = (u.params + W - 1) / W;
    return units;
}

std::size_t unit_of_stage(const Chain& c, std::size_t stage) {
    // Root unit 0 holds the non-block stages; block k (stage k+1) is unit k+1.
    return c.stages[stage].kind == StageKind::block ? stage : 0;
}

ModelStates model_states_for(std::uint64_t params, Sharding s, Precision p, Optimizer o,
                             std::uint64_t world) {
    const auto b = state_bytes_per_param(s, p, o);
    const auto r = sharding_rule(s, p);
    const std::uint64_t shard = (params + world - 1) / world;
    auto bytes = [&](double per_param, bool sharded) {
        return static_cast<std::uint64_t>(std::llround(per_param * static_cast<double>(sharded ? shard : params)));
    };
    return {bytes(b.parameters, r.parameters_sharded), bytes(b.gradients, r.gradients_sharded),
            bytes(b.optimizer, r.optimizer_sharded)};
}

ModelStates model_states(const Chain& c) {
    const auto& o = c.options;
    if (!sharding_rule(o.sharding, o.precision).gather_per_unit)
        return model_states_for(parameter_count(c.model), o.sharding, o.precision, o.optimizer,
                                o.world_size);
    // FSDP and ZeRO-3 shard per unit, with padding.
    ModelStates total;
    for (const Unit& u : fsdp_units(c)) {
        const auto s = model_states_for(u.params, o.sharding, o.precision, o.optimizer, o.world_size);
        total.parameters_bytes += s.parameters_bytes;
        total.gradients_bytes += s.gradients_bytes;
        total.optimizer_bytes += s.optimizer_bytes;
    }
    return total;
}

Reserve default_reserve(const GpuSpec& gpu) {
    Reserve r;
    // PyTorch >= 1.13 loads CUDA modules lazily: the context costs about 300 MiB
    // (ANCHORS.md: ~300 MiB lazy, up to 1.3 GiB eager).
    r.cuda_context_bytes = 300ull << 20;
    // cuBLAS default workspace per handle and stream: 32 MiB on sm90, 8,519,680 B before.
    r.workspace_bytes = gpu.compute_major >= 9 ? 32ull << 20 : 8519680ull;
    // Caching-allocator slack (block rounding, split segments): a margin on the allocator peak.
    r.fragmentation = 0.05;
    return r;
}

std::uint64_t reserve_bytes(const Reserve& r, std::uint64_t allocator_peak_bytes) {
    return r.cuda_context_bytes + r.workspace_bytes +
           static_cast<std::uint64_t>(std::llround(r.fragmentation * static_cast<double>(allocator_peak_bytes)));
}

}  // namespace remat
