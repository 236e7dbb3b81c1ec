#include "planner/simulate/memory.hpp"

#include <algorithm>
#include <cassert>
#include <cmath>

#include "planner/config/checked.hpp"
#include "planner/config/finetune.hpp"

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
            r.torch_optimizer = true;
            break;
        case Sharding::fsdp:
        case Sharding::fsdp_grad_op:
            r.parameters_sharded = r.gradients_sharded = r.optimizer_sharded = true;
            r.gather_per_unit = true;
            r.reshard_after_forward = s == Sharding::fsdp;
            r.grads_allocated_in_backward = true;
            r.torch_optimizer = true;
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
        const Stage& s = c.stages[i];
        if (s.kind == StageKind::block) units.emplace_back();
        Unit& u = s.kind == StageKind::block ? units.back() : units[0];
        u.stages.push_back(i);
        add_to(u.params, checked_add(s.params, s.adapter_params));
        add_to(u.trainable, s.trainable_params());
        add_to(u.frozen_bytes, s.frozen_bytes);
    }
    for (auto& u : units) {
        u.shard_params = ceil_div(u.params, W);
        u.shard_trainable = ceil_div(u.trainable, W);
    }
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
    const std::uint64_t shard = ceil_div(params, world);
    auto bytes = [&](double per_param, bool sharded) {
        return checked_round(per_param * static_cast<double>(sharded ? shard : params));
    };
    return {bytes(b.parameters, r.parameters_sharded), bytes(b.gradients, r.gradients_sharded),
            bytes(b.optimizer, r.optimizer_sharded)};
}

namespace {

// What a LoRA adapter's states take (fp32 weights, PEFT's autocast_adapter_dtype, whatever the
// precision): the bytes per parameter of full training under fp32 weights.
StateBytesPerParam adapter_bytes_per_param(const RunOptions& o) {
    const Precision p = o.precision == Precision::bf16 ? Precision::bf16_mixed : o.precision;
    return state_bytes_per_param(o.sharding, p, o.optimizer);
}

// --train lora: the frozen base as stored, sharded per unit under FSDP, and the adapters'
// weights, gradients and optimizer state.
ModelStates lora_model_states(const Chain& c) {
    const auto& o = c.options;
    const StateBytesPerParam b = adapter_bytes_per_param(o);
    const bool sharded = sharding_rule(o.sharding, o.precision).gather_per_unit;
    ModelStates total;
    for (const Unit& u : fsdp_units(c)) {
        const std::uint64_t n = sharded ? u.shard_trainable : u.trainable;
        add_to(total.parameters_bytes,
               checked_add(sharded ? ceil_div(u.frozen_bytes, o.world_size) : u.frozen_bytes,
                           checked_round(b.parameters * static_cast<double>(n))));
        add_to(total.gradients_bytes, checked_round(b.gradients * static_cast<double>(n)));
        add_to(total.optimizer_bytes, checked_round(b.optimizer * static_cast<double>(n)));
    }
    return total;
}

// One tensor's state under the optimizers whose state depends on its shape; `pb`: the
// parameters' (and gradients') bytes per element.
std::uint64_t shaped_state_bytes(const ParamTensor& t, Optimizer o, std::uint64_t pb) {
    const std::uint64_t n = t.numel();
    const bool matrix = t.kind == ParamTensor::Kind::matrix;
    if (o == Optimizer::adamw_8bit) {
        // bitsandbytes/optim/optimizer.py, Optimizer2State.init_state: under min_8bit_size
        // (4096) elements two fp32 states; else two uint8 states, each with an fp32 absmax per
        // 256-value block (its qmaps are shared).
        if (t.kind == ParamTensor::Kind::vectors || n < 4096) return checked_mul(8, n);
        return checked_add(checked_mul(2, n), checked_mul(8, ceil_div(n, 256)));
    }
    // transformers/optimization.py, Adafactor._init / step: a matrix's second moment factored
    // into exp_avg_sq_row (rows) and exp_avg_sq_col (cols), else exp_avg_sq (n), in the
    // gradient's dtype; beta1 None (its default): no exp_avg.
    return matrix ? checked_mul(pb, checked_add(t.rows, t.cols)) : checked_mul(pb, n);
}

// adamw-8bit and adafactor: the state of every tensor that trains, whole, or of each rank's
// flat shard per FSDP unit.
std::uint64_t shaped_optimizer_bytes(const Chain& c) {
    const auto& o = c.options;
    const std::uint64_t pb = o.train == Training::lora ? 4 : dtype_bytes(base_float_dtype(o));
    std::uint64_t total = 0;
    if (sharding_rule(o.sharding, o.precision).gather_per_unit) {
        for (const Unit& u : fsdp_units(c))
            if (u.shard_trainable)
                add_to(total, shaped_state_bytes({ParamTensor::Kind::flat, u.shard_trainable, 1, 1},
                                                 o.optimizer, pb));
        return total;
    }
    for (const ParamTensor& t : trainable_tensors(c.model, o))
        add_to(total, checked_mul(t.count, shaped_state_bytes(t, o.optimizer, pb)));
    return total;
}

bool shaped_optimizer(Optimizer o) {
    return o == Optimizer::adamw_8bit || o == Optimizer::adafactor;
}

// DPO's reference model under full training: a frozen copy of the weights in its dtype (the
// policy's parameters' unless --ref-dtype), sharded per unit like the policy under FSDP (the seed's
// FSDPTrainer wraps both).
std::uint64_t reference_weight_bytes(const Chain& c) {
    if (!c.reference_weights()) return 0;
    const auto& o = c.options;
    const ModelConfig& ref = c.reference;
    const std::uint64_t dtype = dtype_bytes(reference_dtype(o));
    // A second model has its own buffers too (GPT-2's causal-mask tables).
    std::uint64_t total = hf_profile(o.profile) ? hf_buffer_bytes(ref) : 0;
    if (!sharding_rule(o.sharding, o.precision).gather_per_unit)
        return checked_add(total, checked_mul(dtype, parameter_count(ref)));
    // Its units as the policy's: one per block, the rest in the root, each padded to W.
    const std::uint64_t W = o.world_size;
    add_to(total, checked_mul(dtype, ceil_div(outer_parameter_count(ref), W)));
    add_to(total, checked_mul(dtype, ref.n_layers, ceil_div(block_parameter_count(ref), W)));
    return total;
}

// The states on the device before anything is offloaded.
ModelStates device_states(const Chain& c) {
    const auto& o = c.options;
    ModelStates total;
    // DPO's reference weights (full training) sit beside the policy's parameters.
    add_to(total.parameters_bytes, reference_weight_bytes(c));
    if (o.train != Training::full) {
        const ModelStates lora = lora_model_states(c);
        add_to(total.parameters_bytes, lora.parameters_bytes);
        total.gradients_bytes = lora.gradients_bytes;
        total.optimizer_bytes =
            shaped_optimizer(o.optimizer) ? shaped_optimizer_bytes(c) : lora.optimizer_bytes;
        if (hf_profile(o.profile)) add_to(total.parameters_bytes, hf_buffer_bytes(c.model));
        return total;
    }
    if (!sharding_rule(o.sharding, o.precision).gather_per_unit) {
        const ModelStates s = model_states_for(parameter_count(c.model), o.sharding, o.precision,
                                               o.optimizer, o.world_size);
        add_to(total.parameters_bytes, s.parameters_bytes);
        total.gradients_bytes = s.gradients_bytes;
        total.optimizer_bytes = s.optimizer_bytes;
    } else {
        // FSDP and ZeRO-3 shard per unit, with padding.
        for (const Unit& u : fsdp_units(c)) {
            const auto s =
                model_states_for(u.params, o.sharding, o.precision, o.optimizer, o.world_size);
            add_to(total.parameters_bytes, s.parameters_bytes);
            add_to(total.gradients_bytes, s.gradients_bytes);
            add_to(total.optimizer_bytes, s.optimizer_bytes);
        }
    }
    if (shaped_optimizer(o.optimizer)) total.optimizer_bytes = shaped_optimizer_bytes(c);
    // The Hugging Face modules' buffers (not sharded: FSDP and ZeRO shard parameters only).
    if (hf_profile(o.profile)) add_to(total.parameters_bytes, hf_buffer_bytes(c.model));
    return total;
}

// --offload-optimizer, --offload-params: what moves to the host.
void offload(const Chain& c, ModelStates& s) {
    const auto& o = c.options;
    const StepTerms t(c);
    if (o.offload_optimizer) {
        // DeepSpeed ZeRO-Offload: the optimizer's fp32 master weights and moments, and an fp32
        // gradient partition for the CPU step.
        add_to(s.host_bytes, checked_add(s.optimizer_bytes, checked_mul(4, t.local_params)));
        s.optimizer_bytes = 0;
    }
    if (o.offload_params) {
        const std::uint64_t kept = checked_add(hf_profile(o.profile) ? hf_buffer_bytes(c.model) : 0,
                                               reference_weight_bytes(c));
        add_to(s.host_bytes, s.parameters_bytes - kept);
        s.parameters_bytes = kept;
        if (t.grads_on_host) {
            // FSDP's CPUOffload: the shard gradients and the optimizer with the parameters.
            add_to(s.host_bytes, checked_add(s.gradients_bytes, s.optimizer_bytes));
            s.gradients_bytes = s.optimizer_bytes = 0;
        }
    }
}

}  // namespace

ModelStates model_states(const Chain& c) {
    ModelStates s = device_states(c);
    offload(c, s);
    return s;
}

StepTerms::StepTerms(const Chain& c)
    : rule(sharding_rule(c.options.sharding, c.options.precision)),
      bpp(c.options.train != Training::full
              ? adapter_bytes_per_param(c.options)
              : state_bytes_per_param(c.options.sharding, c.options.precision,
                                      c.options.optimizer)),
      units(fsdp_units(c)),
      lora(c.options.train != Training::full),
      micro_steps(c.options.grad_accumulation),
      c_(&c) {
    // Its shards where the optimizer is sharded (per unit, padded, for FSDP and ZeRO-3), all
    // parameters otherwise.
    std::uint64_t P = 0;
    for (const Unit& u : units) add_to(P, u.trainable);
    const std::uint64_t W = c.options.world_size;
    local_params = rule.optimizer_sharded ? ceil_div(P, W) : P;
    if (rule.gather_per_unit) {
        local_params = 0;
        for (const Unit& u : units) add_to(local_params, u.shard_trainable);
    }
    const bool fsdp_offload =
        c.options.offload_params && rule.gather_per_unit && rule.grads_allocated_in_backward;
    optimizer_on_host = c.options.offload_optimizer || fsdp_offload;
    grads_on_host = fsdp_offload;
}

std::uint64_t StepTerms::unit_bytes(std::size_t u) const {
    return checked_round(bpp.compute * static_cast<double>(units[u].params));
}

std::uint64_t StepTerms::unit_grad_bytes(std::size_t u) const {
    return checked_round(bpp.compute * static_cast<double>(units[u].trainable));
}

std::uint64_t StepTerms::reduce_scatter_bytes(std::size_t u) const {
    return checked_round(bpp.compute * static_cast<double>(units[u].shard_trainable));
}

std::uint64_t StepTerms::shard_grad_bytes(std::size_t u) const {
    if (grads_on_host) return 0;  // FSDP's CPUOffload copies them to the host
    return checked_round(bpp.gradients * static_cast<double>(units[u].shard_trainable));
}

std::uint64_t StepTerms::cast_bytes(std::size_t i) const {
    if (!rule.autocast_weight_cache) return 0;
    const Chain& c = *c_;
    const Stage& s = c.stages[i];
    const std::uint64_t low =
        c.options.precision == Precision::fp16_mixed || c.options.precision == Precision::bf16_mixed
            ? 2
            : 0;
    // Under LoRA only the adapters' casts are cached (frozen weights' copies are saved tensors
    // of the graphs: planner/graph/op_builder.hpp, WeightPolicy).
    if (s.lora) return checked_mul(low, s.adapter_params);
    // FalconLinear multiplies by weight.T, which autocast does not cache (a non-leaf view): its
    // copies are saved tensors in the block's graph instead (planner/graph/hf_falcon.cpp).
    if (s.kind == StageKind::block && c.model.arch == Arch::falcon) return 0;
    // Norms are not cast (layer_norm is not on autocast's lower-precision list, RMSNorm's
    // multiply is no autocast op); linears' weights and biases are.
    if (s.kind == StageKind::block) return checked_mul(low, s.params - block_norm_count(c.model));
    if (s.kind == StageKind::head) return checked_mul(low, c.model.vocab, c.model.hidden);
    return 0;
}

std::uint64_t StepTerms::ddp_grad_bytes(std::size_t i) const {
    const Chain& c = *c_;
    std::uint64_t params = c.stages[i].trainable_params();
    if (c.model.tied_embeddings && !lora) {
        const std::uint64_t tied = checked_mul(c.model.vocab, c.model.hidden);
        if (c.stages[i].kind == StageKind::head) params = checked_add(params, tied);
        if (c.stages[i].kind == StageKind::embedding) params -= tied;
    }
    return checked_round(bpp.gradients * static_cast<double>(params));
}

std::uint64_t StepTerms::accumulated_grad_bytes() const {
    if (micro_steps == 1 || !rule.grads_allocated_in_backward) return 0;
    std::uint64_t total = 0;
    if (rule.gradients_sharded)
        for (std::size_t u = 0; u < units.size(); ++u) add_to(total, shard_grad_bytes(u));
    else
        for (std::size_t i = 0; i < c_->stages.size(); ++i) add_to(total, ddp_grad_bytes(i));
    return total;
}

std::uint64_t StepTerms::optimizer_temp_bytes() const {
    const RunOptions& o = c_->options;
    if (!rule.torch_optimizer || optimizer_on_host) return 0;
    if (o.optimizer == Optimizer::adafactor) {
        // Adafactor.step, parameter by parameter: update = grad**2 + eps, then for a matrix
        // update = _approx_sq_grad(row, col) (r_factor, rows x 1, times c_factor, 1 x cols)
        // while the first lives, and p.add_(-update): two fp32 tensors of the parameter's size,
        // with the two factors at the product. A flat FSDP shard is a vector: no factors.
        std::uint64_t largest = 0;
        if (rule.gather_per_unit) {
            for (const Unit& u : units)
                largest = std::max(largest, checked_mul(8, u.shard_trainable));
            return largest;
        }
        for (const ParamTensor& t : trainable_tensors(c_->model, o)) {
            const bool matrix = t.kind == ParamTensor::Kind::matrix;
            // A stage's vectors are many small ones: the largest is a row of H at most.
            const std::uint64_t n = matrix ? t.numel() : std::min(t.numel(), c_->model.hidden);
            largest = std::max(largest, checked_add(checked_mul(8, n),
                                                    matrix ? checked_mul(4, t.rows + t.cols) : 0));
        }
        return largest;
    }
    // bitsandbytes' 8-bit step is one fused kernel per tensor; SGD's momentum update makes none.
    if (o.optimizer != Optimizer::adamw) return 0;
    const double per = bpp.parameters;
    // remat run's runtime steps as current PyTorch's foreach does.
    const bool runtime = runtime_profile(o.profile);
    switch (runtime ? OptimizerImpl::foreach : o.optimizer_impl) {
        case OptimizerImpl::foreach:
            // torch/optim/adam.py _multi_tensor_adam: exp_avg_sq_sqrt = _foreach_sqrt(...), then
            // divided and eps added in place. torch 1.13 adamw.py _multi_tensor_adamw: denom =
            // _foreach_add(exp_avg_sq_sqrt, eps), a second one, while the first lives.
            return checked_round((!runtime && o.torch == TorchFlavor::cpu_1_13 ? 2 : 1) * per *
                                 static_cast<double>(local_params));
        case OptimizerImpl::for_loop: {
            // _single_tensor_adamw: denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps):
            // sqrt's result and the quotient, both as large as one parameter, live together.
            std::uint64_t largest = 0;
            if (rule.gather_per_unit || rule.parameters_sharded)
                for (const Unit& u : units) largest = std::max(largest, u.shard_trainable);
            else if (lora)
                largest = largest_lora_tensor(c_->model, o.lora);
            else
                largest = largest_parameter_tensor(c_->model);
            return checked_round(2 * per * static_cast<double>(largest));
        }
        case OptimizerImpl::fused:
            return 0;  // torch._fused_adamw_ updates in one kernel
    }
    return 0;
}

double StepTerms::optimizer_step_s(const GpuSpec& gpu, const StepTimeModel& tm) const {
    const RunOptions& o = c_->options;
    if (!optimizer_on_host) return optimizer_time_s(local_params, o.optimizer, gpu, tm);
    // On the CPU, then the PCIe copies the step adds: the gradient partition down, the updated
    // parameters up (under FSDP's CPUOffload the shards go up for every gather: forward and
    // backward).
    const double n = static_cast<double>(local_params);
    const double cpu_s = n * optimizer_bytes_per_param(o.optimizer) / tm.host_step_bandwidth;
    const double up = grads_on_host ? 2 * bpp.parameters : bpp.compute;
    return cpu_s + n * (bpp.gradients + up) / gpu.host_link_bandwidth;
}

std::uint64_t StepTerms::tied_embedding_grad_bytes() const {
    const Chain& c = *c_;
    if (!c.model.tied_embeddings || !hf_profile(c.options.profile) || lora) return 0;
    if (!rule.grads_allocated_in_backward || rule.gradients_sharded) return 0;
    // Current PyTorch (torch/csrc/autograd/input_buffer.cpp, accumulate): the head's gradient,
    // first to arrive, is contiguous and unshared, so the embedding's is added into it in place:
    // one V x H temporary. torch 1.13's accumulate always adds out of place (old_var + var): the
    // embedding's gradient and the sum live together before the head's is freed.
    const std::uint64_t copies = c.options.torch == TorchFlavor::cpu_1_13 ? 2 : 1;
    return checked_round(bpp.gradients *
                         static_cast<double>(checked_mul(copies, c.model.vocab, c.model.hidden)));
}

std::uint64_t StepTerms::eager_mask_bytes() const {
    const Chain& c = *c_;
    // Modelled under --torch cpu-1.13 only, for now: its lifetime depends on where the first
    // checkpoint is, which the optimal planner's stage costs cannot express yet; on CUDA it is
    // left out (S x S x 4 bytes; docs/torch.md).
    if (c.options.torch != TorchFlavor::cpu_1_13) return 0;
    if (c.options.profile != Profile::hf_eager || c.model.arch == Arch::gpt2) return 0;
    const std::uint64_t dtype = dtype_bytes(base_float_dtype(c.options));  // the weights'
    return checked_mul(dtype, c.options.seq, c.options.seq);
}

std::size_t StepTerms::eager_mask_count() const {
    return eager_mask_bytes() && c_->model.arch == Arch::gemma2 ? 2 : 1;
}

std::size_t StepTerms::eager_mask_of_block(std::size_t b) const {
    // Gemma2DecoderLayer.is_sliding = not bool(layer_idx % 2): mask 0 is the sliding one.
    return eager_mask_count() == 2 ? b % 2 : 0;
}

std::uint64_t StepTerms::forward_held_embedding_bytes() const {
    const Chain& c = *c_;
    if (!hf_profile(c.options.profile)) return 0;
    const std::uint64_t dtype = dtype_bytes(base_float_dtype(c.options));  // the weights'
    const std::uint64_t bytes =
        checked_mul(dtype, c.options.sequences(), c.options.seq, c.model.hidden);
    // Under no_grad nothing saves the embedding's output, and every family's base model holds
    // it as its `inputs_embeds` local through its forward (measured: tests/torch/sweep.py):
    // a tensor of its own where the stage's output is another one.
    if (c.options.train == Training::frozen) return embedding_output_held() ? 0 : bytes;
    if (c.options.torch != TorchFlavor::cpu_1_13) return 0;
    // In training it matters only where the tensor that goes on is another one; under LoRA the
    // frozen embedding's output is held anyway: autograd's AccumulateGrad keeps the leaf
    // (planner/graph/outer_stages.cpp), so the embedding stage saves it.
    const bool held =
        c.model.scaled_embeddings || (c.model.arch == Arch::gpt_neox && c.model.embd_dropout > 0.0);
    return held && c.options.train == Training::full ? bytes : 0;
}

bool StepTerms::embedding_output_held() const {
    const Chain& c = *c_;
    const ModelConfig& m = c.model;
    return c.options.train == Training::frozen && hf_profile(c.options.profile) &&
           !m.scaled_embeddings && !m.learned_positions && !(m.embd_dropout > 0.0);
}

std::uint64_t StepTerms::rotary_bytes() const {
    const Chain& c = *c_;
    if (c.options.torch != TorchFlavor::cpu_1_13 || !hf_profile(c.options.profile)) return 0;
    const std::uint64_t dtype = dtype_bytes(base_float_dtype(c.options));  // the weights'
    return checked_mul(2, dtype, c.options.seq, rotary_dims(c.model));
}

std::uint64_t StepTerms::checkpoint_rng_bytes() const {
    if (c_->options.torch != TorchFlavor::cpu_1_13 || !hf_profile(c_->options.profile)) return 0;
    return 5056;  // aten/src/ATen/CPUGeneratorImpl.cpp: sizeof(CPUGeneratorImplState)
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
    return checked_add(r.cuda_context_bytes, r.workspace_bytes,
                       checked_round(r.fragmentation * static_cast<double>(allocator_peak_bytes)));
}

}  // namespace remat
