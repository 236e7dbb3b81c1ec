// Model states per rank under each framework's own accounting, and the reserve outside the
// allocator. Sources: ZeRO (Rajbhandari et al. 2020, Table 1), Megatron-LM's
// theoretical_memory_usage.py, PyTorch DDP and FSDP (see docs/memory-model.md).
//
//   ModelStates s = model_states(chain);   // persistent parameters, gradients, optimizer
//   Reserve r = default_reserve(gpu);      // CUDA context, cuBLAS workspace, fragmentation
#pragma once
#include <cstdint>
#include <vector>

#include "planner/chain/chain.hpp"
#include "planner/config/checked.hpp"
#include "planner/simulate/gpu.hpp"
#include "planner/simulate/step_time.hpp"

namespace remat {

// Bytes per parameter of each kind of state, before sharding.
struct StateBytesPerParam {
    double parameters = 0;  // the persistent copy a rank holds
    double gradients = 0;
    double optimizer = 0;  // Adam moments (and fp32 master weights where the framework keeps them)
    double compute = 0;    // dtype of the unsharded (gathered) parameters used by the math
};
StateBytesPerParam state_bytes_per_param(Sharding s, Precision p, Optimizer o);

// How each state is divided over W ranks.
struct ShardingRule {
    bool parameters_sharded = false;
    bool gradients_sharded = false;
    bool optimizer_sharded = false;
    bool gather_per_unit = false;       // FSDP / ZeRO-3 all-gather a unit before using it
    bool reshard_after_forward = true;  // false for fsdp-grad-op (SHARD_GRAD_OP)
    bool grads_allocated_in_backward =
        false;  // PyTorch: p.grad appears in backward, set_to_none after the step
    bool autocast_weight_cache = false;  // DDP + autocast: low-precision weight copies per forward
    bool torch_optimizer =
        false;  // the step is torch.optim's (its temporaries: optimizer_temp_bytes)
};
ShardingRule sharding_rule(Sharding s, Precision p);

// Units: stage indices grouped into FSDP units. Blocks are one unit each; embedding, final
// norm and head form the root unit (index 0), unsharded from the start of forward to the end
// of backward.
struct Unit {
    std::vector<std::size_t> stages;
    std::uint64_t params = 0;        // all of them: the base's and, under LoRA, the adapters
    std::uint64_t shard_params = 0;  // ceil(params / W): FSDP pads each flat parameter
    // Those that train (all, or LoRA's adapters: PEFT's FSDP wrap policy gives them flat
    // parameters of their own, so the frozen ones get no gradient), and their shard.
    std::uint64_t trainable = 0;
    std::uint64_t shard_trainable = 0;
    std::uint64_t frozen_bytes = 0;  // --train lora: the frozen base's bytes as stored
};
std::vector<Unit> fsdp_units(const Chain& c);
std::size_t unit_of_stage(const Chain& c, std::size_t stage);

struct ModelStates {
    std::uint64_t parameters_bytes = 0;
    std::uint64_t gradients_bytes = 0;
    std::uint64_t optimizer_bytes = 0;
    // Offloaded states, in this rank's share of host memory (not in total()).
    std::uint64_t host_bytes = 0;
    std::uint64_t total() const {
        return checked_add(parameters_bytes, gradients_bytes, optimizer_bytes);
    }
};
// Persistent per-rank states of a steady step (the gradients as they exist at the end of
// backward).
ModelStates model_states(const Chain& c);
// Exact ZeRO-style totals for a parameter count (no units, no padding): used for Table 1.
ModelStates model_states_for(std::uint64_t params, Sharding s, Precision p, Optimizer o,
                             std::uint64_t world);

// The per-step memory terms that the replay (planner/simulate) and the optimal planner's
// costs (planner/chain_costs) share: one home for each size, so that both count alike.
struct StepTerms {
    ShardingRule rule;
    StateBytesPerParam bpp;
    std::vector<Unit> units;
    std::uint64_t local_params = 0;  // parameters whose optimizer state this rank updates
    bool optimizer_on_host = false;  // --offload-optimizer, or FSDP's --offload-params
    bool grads_on_host = false;      // FSDP's --offload-params: shard gradients go to the host
    bool lora = false;               // --train lora: only the adapters train

    explicit StepTerms(const Chain& c);
    // A unit's gathered parameters.
    std::uint64_t unit_bytes(std::size_t u) const;
    // (FSDP, ZeRO-2/3) its unsharded gradients: the gathered size of what trains.
    std::uint64_t unit_grad_bytes(std::size_t u) const;
    std::uint64_t reduce_scatter_bytes(std::size_t u) const;  // the shard-sized output
    std::uint64_t shard_grad_bytes(std::size_t u) const;      // FSDP: p.grad of the shard
    // PyTorch autocast's low-precision weight copies of a stage (DDP + mixed precision).
    std::uint64_t cast_bytes(std::size_t stage) const;
    // DDP: p.grad created by a stage's backward (a tied embedding's by the head's).
    std::uint64_t ddp_grad_bytes(std::size_t stage) const;
    // The largest temporary torch.optim's step allocates (AdamW; SGD with momentum has none),
    // by --optimizer-impl and --torch (docs/torch.md): foreach, current PyTorch: one
    // parameter-sized temporary; foreach, torch 1.13: two; for-loop: two as large as the
    // largest parameter tensor (or flat shard); fused: none. 0 for frameworks with their own step.
    std::uint64_t optimizer_temp_bytes() const;
    // A tied embedding's own gradient (dense V x H, torch's embedding_dense_backward), made in
    // the embedding's backward and summed into the head's by autograd's InputBuffer: in place
    // on current PyTorch (one V x H temporary of B(0)), out of place on torch 1.13 (two). 0 when
    // untied, or where the step is not PyTorch's DDP-style one.
    std::uint64_t tied_embedding_grad_bytes() const;
    // Eager attention's causal mask, [B, 1, S, S] expanded from one S x S storage in the
    // weights' dtype, that transformers' Llama and NeoX models build once per forward
    // (_update_causal_mask). It lives through forward, and a non-reentrant checkpoint holds it
    // as an input until that block's backward. 0 for GPT-2 (its mask is a buffer) and sdpa,
    // and for now 0 unless --torch cpu-1.13 (memory.cpp says why).
    std::uint64_t eager_mask_bytes() const;
    // How many such masks the forward builds: Gemma2 alternates sliding-window layers (even
    // blocks) and full layers (odd), each kind with its own mask; 1 for the others.
    std::size_t eager_mask_count() const;
    // Which of them block b (0-based) reads.
    std::size_t eager_mask_of_block(std::size_t b) const;
    // A tensor the base model's forward holds as a local from the embedding until it returns
    // (after the final norm), which nothing saves: Gemma's `inputs_embeds` (the scaled copy
    // goes on), NeoX's when embedding dropout makes a new tensor. B x S x H in the weights'
    // dtype; 0 otherwise, and, like the mask, 0 unless --torch cpu-1.13.
    std::uint64_t forward_held_embedding_bytes() const;
    // --train frozen, where the embedding stage's output is `inputs_embeds` itself (no scaling,
    // positions or dropout): the base model's local holds that boundary until it returns.
    bool embedding_output_held() const;
    // The rotary cos and sin every block saves, made once per forward: from the embedding's
    // forward until the first block's backward (the last reader). Under --torch cpu-1.13 only;
    // on CUDA the embedding stage's graph counts them until its own backward.
    std::uint64_t rotary_bytes() const;
    // torch.utils.checkpoint(preserve_rng_state=True) keeps torch.get_rng_state(), the CPU
    // generator's 5056-byte state, per checkpoint until its backward: device memory only on a
    // CPU (--torch cpu-1.13); on CUDA it is a host tensor. 0 otherwise.
    std::uint64_t checkpoint_rng_bytes() const;
    // Gradient accumulation, where PyTorch creates p.grad in backward (DDP, FSDP): the
    // gradients the earlier micro-steps left, live from the replayed micro-step's start (DDP's
    // every p.grad; FSDP's sharded gradients, reduce-scattered every micro-step). 0 otherwise.
    std::uint64_t accumulated_grad_bytes() const;
    // Whether this micro-step's backward creates the persistent gradients (not accumulating
    // into ones that exist): without accumulation, where PyTorch makes p.grad in backward.
    bool grads_made_in_backward() const {
        return rule.grads_allocated_in_backward && micro_steps == 1;
    }
    std::uint64_t micro_steps = 1;  // gradient accumulation
    // The optimizer step: on the GPU; offloaded, on the CPU (at the time model's
    // host_step_bandwidth) with the PCIe copies it adds (gradients down, parameters up).
    double optimizer_step_s(const GpuSpec& gpu, const StepTimeModel& tm) const;

  private:
    const Chain* c_;
};

struct Reserve {
    std::uint64_t cuda_context_bytes = 0;  // CUDA context + kernels (lazy loading)
    std::uint64_t workspace_bytes = 0;     // cuBLAS workspace, one handle and stream
    double fragmentation = 0;              // margin as a fraction of the allocator peak
};
Reserve default_reserve(const GpuSpec& gpu);
std::uint64_t reserve_bytes(const Reserve& r, std::uint64_t allocator_peak_bytes);

}  // namespace remat
