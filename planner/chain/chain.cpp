#include "planner/chain/chain.hpp"

#include <fmt/format.h>

#include <cassert>

#include "planner/config/checked.hpp"
#include "planner/config/error.hpp"
#include "planner/config/finetune.hpp"

namespace remat {

SelectiveSets selective_sets(const StageGraph& g) {
    auto storages = [&](const std::vector<TensorId>& ts) {
        std::vector<std::size_t> out;
        for (TensorId t : ts) out.push_back(g.storage(t));
        return out;
    };
    std::vector<SelectiveOp> ops;
    for (OpVertex v : g.order()) {
        const Op& op = g.op(v);
        ops.push_back(
            {op.attention_core, storages(op.inputs), storages(op.outputs), storages(op.saved)});
    }
    std::vector<bool> shared(g.tensors().size(), false);
    for (TensorId s = 0; s < shared.size(); ++s) shared[s] = g.tensor(s).shared;
    return selective_sets(g.tensors().size(), ops, shared);
}

std::vector<bool> selective_dropped_mask(const StageGraph& g) { return selective_sets(g).dropped; }

std::vector<TensorId> selective_kept_storages(const StageGraph& g) {
    const std::vector<bool> keep = selective_sets(g).kept;
    std::vector<TensorId> kept;
    for (TensorId s = 0; s < keep.size(); ++s)
        if (keep[s]) kept.push_back(s);
    return kept;
}

namespace {

Stage describe(const StageGraph& g, std::string name, StageKind kind, std::size_t index,
               std::uint64_t params) {
    Stage s;
    s.name = std::move(name);
    s.kind = kind;
    s.graph = index;
    s.params = params;
    s.input_bytes = g.tensor(g.input()).bytes();
    s.all_bytes = g.saved_bytes();
    for (TensorId t : selective_kept_storages(g)) add_to(s.selective_bytes, g.tensor(t).bytes());
    s.fwd_flops = g.fwd_flops();
    s.bwd_flops = g.bwd_flops();
    for (OpVertex v : g.order())
        if (g.op(v).attention_core) s.core_fwd_flops += g.op(v).fwd_flops;
    return s;
}

// --train lora's combinations that remat models, and the targets resolved.
LoraOptions check_lora(const ModelConfig& model, const RunOptions& o) {
    if (!hf_profile(o.profile))
        throw InputError(
            fmt::format("{} {}: frozen bases and PEFT's adapters are modelled on Hugging Face's "
                        "modules; use {} sdpa or "
                        "hf-eager (not {})",
                        named(Input::train), training_name(o.train), named(Input::profile),
                        profile_name(o.profile)));
    if (!torch_data_parallel(o.sharding))
        throw InputError(fmt::format(
            "{} {} with {} {}: modelled under none (DDP, one GPU) and fsdp / fsdp-grad-op "
            "(PEFT's fsdp_auto_wrap_policy); DeepSpeed and Megatron are not yet",
            named(Input::train), training_name(o.train), named(Input::sharding),
            sharding_name(o.sharding)));
    if (quantized(o.base_dtype) && o.sharding != Sharding::none)
        throw InputError(fmt::format(
            "{} {} with {} {}: bitsandbytes' storage is modelled on one GPU or DDP; QLoRA "
            "under FSDP (bnb_4bit_quant_storage) is not yet",
            named(Input::base_dtype), base_dtype_name(o.base_dtype), named(Input::sharding),
            sharding_name(o.sharding)));
    const bool float16 = o.base_dtype == BaseDType::bf16 || o.base_dtype == BaseDType::fp16;
    if ((o.precision == Precision::fp32 && float16) ||
        (o.precision == Precision::bf16 && o.base_dtype != BaseDType::bf16 &&
         !quantized(o.base_dtype)))
        throw InputError(fmt::format(
            "{} {} under {} {}: without autocast the weights' dtype is the precision's; give "
            "{} bf16 for a bf16 base, bf16-mixed for a 16-bit base with autocast",
            named(Input::base_dtype), base_dtype_name(o.base_dtype), named(Input::precision),
            precision_name(o.precision), named(Input::precision)));
    if (quantized(o.base_dtype) && o.precision == Precision::fp32)
        throw InputError(fmt::format(
            "{} {} under {} fp32: bitsandbytes computes in a 16-bit dtype here; use bf16-mixed "
            "or bf16",
            named(Input::base_dtype), base_dtype_name(o.base_dtype), named(Input::precision)));
    if (o.train == Training::frozen) {
        if (o.recipe != Recipe::sft || o.grad_accumulation != 1)
            throw InputError(fmt::format(
                "{} frozen: a forward under no_grad has no loss to train and no gradient to "
                "accumulate; drop the recipe and the gradient accumulation",
                named(Input::train)));
        return {};  // no adapters
    }
    return resolve_lora(model, o.lora);
}

// DPO's combinations that remat models.
void check_dpo(const RunOptions& o) {
    if (!hf_profile(o.profile))
        throw InputError(fmt::format(
            "{} dpo: DPO's loss is modelled on Hugging Face's models (the seed's trainer); use "
            "{} sdpa or hf-eager (not {})",
            named(Input::recipe), named(Input::profile), profile_name(o.profile)));
    if (o.ref_logprobs == RefLogprobs::model && !torch_data_parallel(o.sharding))
        throw InputError(fmt::format(
            "{} dpo with {} {}: the reference model is modelled under none (DDP) and fsdp / "
            "fsdp-grad-op (the seed's FSDPTrainer wraps both models); with reference "
            "log-probabilities precomputed any sharding works",
            named(Input::recipe), named(Input::sharding), sharding_name(o.sharding)));
    if (o.ref_dtype && (o.train != Training::full || o.ref_logprobs != RefLogprobs::model))
        throw InputError(fmt::format(
            "{} dpo: a reference dtype applies to a separate reference model (full training, "
            "reference log-probabilities from the model); drop it",
            named(Input::recipe)));
    if (o.ref_dtype && quantized(*o.ref_dtype))
        throw InputError(fmt::format("{} dpo: the reference model's dtype is fp32, bf16 or fp16",
                                     named(Input::recipe)));
    if (o.ref_model && (o.train != Training::full || o.ref_logprobs != RefLogprobs::model))
        throw InputError(fmt::format(
            "{} dpo: a reference model of its own applies to full training with reference "
            "log-probabilities from the model (under LoRA the reference is the policy's base)",
            named(Input::recipe)));
    if (o.seq < 2)
        throw InputError(fmt::format("{} dpo: {} {} leaves no token to predict; use 2 or more",
                                     named(Input::recipe), named(Input::seq), o.seq));
}

}  // namespace

Chain build_chain(const ModelConfig& model, const RunOptions& options) {
    assert(options.seq > 0 && "resolve the sequence length before building the chain");
    if (options.attention != Attention::flash && !runtime_profile(options.profile))
        throw InputError(
            fmt::format("{} {}: applies to profiles remat and remat-cuda (profile {} fixes its "
                        "own attention; hf-eager is eager PyTorch's)",
                        named(Input::attention), attention_name(options.attention),
                        profile_name(options.profile)));
    if (runtime_profile(options.profile) &&
        !(model.arch == Arch::gpt2 ||
          (model.arch == Arch::llama && model.activation == Activation::silu)))
        throw InputError(fmt::format(
            "{} {}: describes remat's own runtime, which builds gpt2 and llama (SwiGLU) blocks; "
            "plan model '{}' ({}) with the hf-eager or sdpa profile",
            named(Input::profile), profile_name(options.profile), model.name,
            arch_name(model.arch)));
    if (options.profile == Profile::megatron && model.n_experts > 0)
        throw InputError(fmt::format(
            "{} megatron: Korthikanti et al.'s accounting is for dense layers; model '{}' is a "
            "mixture of experts: plan it with the hf-eager or sdpa profile",
            named(Input::profile), model.name));
    if (options.recipe == Recipe::dpo) check_dpo(options);
    const Sharding sh = options.sharding;
    if (options.offload_optimizer && sh != Sharding::zero1 && sh != Sharding::zero2 &&
        sh != Sharding::zero3)
        throw InputError(fmt::format(
            "optimizer offload with {} {}: DeepSpeed's offload_optimizer needs ZeRO (zero1, "
            "zero2, zero3); FSDP offloads the optimizer with the parameters (offload the "
            "parameters instead)",
            named(Input::sharding), sharding_name(sh)));
    if (options.offload_params && sh != Sharding::fsdp && sh != Sharding::fsdp_grad_op &&
        sh != Sharding::zero3)
        throw InputError(fmt::format(
            "parameter offload with {} {}: FSDP's CPUOffload (fsdp, fsdp-grad-op) or ZeRO-3's "
            "offload_param (zero3) offload parameters",
            named(Input::sharding), sharding_name(sh)));
    if ((options.optimizer == Optimizer::adamw_8bit || options.optimizer == Optimizer::adafactor) &&
        !torch_data_parallel(options.sharding))
        throw InputError(fmt::format(
            "{} {} with {} {}: DeepSpeed and Megatron step their own optimizers on flat fp32 "
            "partitions; modelled under none (DDP) and fsdp / fsdp-grad-op",
            named(Input::optimizer), optimizer_name(options.optimizer), named(Input::sharding),
            sharding_name(options.sharding)));
    Chain c;
    c.model = model;
    c.options = options;
    if (options.train != Training::full) c.options.lora = check_lora(model, options);
    StageRequest r;
    r.model = &c.model;
    r.batch = options.sequences();
    r.seq = options.seq;
    r.precision = options.precision;
    r.profile = options.profile;
    r.attention = options.attention;
    r.moe_capacity_factor = options.moe_capacity_factor;
    r.autocast_device =
        options.torch == TorchFlavor::cpu_1_13 ? AutocastDevice::cpu : AutocastDevice::cuda;
    r.train = options.train;
    r.base_dtype = options.base_dtype;
    r.base_float = base_float_dtype(options);
    // FSDP's mixed precision gathers the parameters in the GEMMs' dtype.
    const bool gathered =
        options.sharding == Sharding::fsdp || options.sharding == Sharding::fsdp_grad_op;
    r.frozen_read = !gathered || options.precision == Precision::fp32 ? r.base_float
                    : options.precision == Precision::fp16_mixed      ? DType::f16
                                                                      : DType::bf16;
    r.lora = c.options.lora;
    r.dpo = options.recipe == Recipe::dpo;
    constexpr StageKind kinds[] = {StageKind::embedding, StageKind::block, StageKind::norm,
                                   StageKind::head};
    for (StageKind kind : kinds) {
        r.kind = kind;
        c.graphs.push_back(build_stage_graph(r));
    }
    if (c.has_reference_model()) {
        // A frozen model without adapters (under LoRA, the policy with them disabled: PEFT's
        // disable_adapter()), run under no_grad, so what its graphs save is never kept.
        c.reference = options.ref_model ? *options.ref_model : c.model;
        if (c.reference.vocab != model.vocab)
            throw InputError(fmt::format(
                "{} dpo: reference model '{}' has a vocabulary of {} tokens, the policy '{}' {}: "
                "DPO compares log-probabilities of the same tokens; give a reference with the "
                "policy's tokenizer",
                named(Input::recipe), c.reference.name, c.reference.vocab, model.name,
                model.vocab));
        StageRequest ref = r;
        ref.model = &c.reference;
        ref.train = Training::lora;
        ref.lora.targets.clear();
        if (options.train == Training::full) {
            ref.base_dtype = BaseDType::fp32;
            ref.base_float = reference_dtype(options);
            if (!gathered) ref.frozen_read = ref.base_float;
        }
        for (StageKind kind : kinds) {
            ref.kind = kind;
            c.reference_graphs.push_back(build_stage_graph(ref));
        }
    }
    c.stages.push_back(describe(c.graphs[0], "embedding", StageKind::embedding, 0,
                                embedding_parameter_count(model)));
    const Stage block =
        describe(c.graphs[1], "block", StageKind::block, 1, block_parameter_count(model));
    for (std::uint64_t i = 0; i < model.n_layers; ++i) {
        c.stages.push_back(block);
        c.stages.back().name = fmt::format("block {}", i);
    }
    c.stages.push_back(
        describe(c.graphs[2], "final norm", StageKind::norm, 2, final_norm_parameter_count(model)));
    c.stages.push_back(
        describe(c.graphs[3], "head", StageKind::head, 3, head_parameter_count(model)));
    if (options.train != Training::full) {
        const std::uint64_t adapters = lora_block_params(model, c.options.lora);
        const std::uint64_t float_bytes = dtype_bytes(r.base_float);
        for (Stage& s : c.stages) {
            s.lora = true;
            s.adapter_params = s.kind == StageKind::block ? adapters : 0;
            s.frozen_bytes = s.kind == StageKind::block ? frozen_block_bytes(model, c.options)
                                                        : checked_mul(float_bytes, s.params);
        }
    }
    return c;
}

std::uint64_t kept_bytes(const Stage& s, Keep k) {
    switch (k) {
        case Keep::all:
            return s.all_bytes;
        case Keep::selective:
            return s.selective_bytes;
        case Keep::input:
            return s.input_bytes;
        case Keep::none:
            return 0;
    }
    return 0;
}

std::vector<StageRun> stage_runs(const Chain& c, const std::vector<Keep>& keeps) {
    assert(keeps.size() == c.stages.size() && "one Keep per stage");
    const auto same = [&](std::size_t a, std::size_t b) {
        const Stage& x = c.stages[a];
        const Stage& y = c.stages[b];
        return x.kind == StageKind::block && y.kind == StageKind::block && keeps[a] == keeps[b] &&
               x.graph == y.graph && x.input_bytes == y.input_bytes && x.all_bytes == y.all_bytes &&
               x.params == y.params;
    };
    std::vector<StageRun> runs;
    for (std::size_t i = 0; i < c.stages.size(); ++i) {
        if (!runs.empty() && same(runs.back().last, i))
            runs.back().last = i;
        else
            runs.push_back({i, i});
    }
    return runs;
}

std::string run_name(const Chain& c, const StageRun& r) {
    if (r.size() == 1) return c.stages[r.first].name;
    // Block numbers are 0-based and follow the embedding stage.
    const std::size_t first_block = r.first - 1;
    return fmt::format("blocks {}-{}", first_block, first_block + r.size() - 1);
}

}  // namespace remat
