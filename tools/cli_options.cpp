#include "tools/cli_options.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "planner/config/checked.hpp"
#include "planner/config/error.hpp"
#include "planner/config/finetune.hpp"
#include "planner/simulate/calibration.hpp"
#include "planner/simulate/network.hpp"
#include "runtime/host_speed.hpp"

namespace remat::cli {

std::string_view flag_of(Input input) {
    switch (input) {
        case Input::attention:
            return "--attention";
        case Input::base_dtype:
            return "--base-dtype";
        case Input::calibration:
            return "--calibration";
        case Input::data:
            return "--data";
        case Input::device:
            return "--device";
        case Input::global_batch:
            return "--global-batch";
        case Input::grad_accumulation:
            return "--grad-accumulation";
        case Input::lora_dropout:
            return "--lora-dropout";
        case Input::lora_rank:
            return "--lora-rank";
        case Input::lora_targets:
            return "--lora-targets";
        case Input::memory_cap:
            return "--memory-cap";
        case Input::memory_slots:
            return "--memory-slots";
        case Input::micro_batch:
            return "--micro-batch";
        case Input::moe_capacity_factor:
            return "--moe-capacity-factor";
        case Input::offload_checkpoints:
            return "--offload-checkpoints";
        case Input::optimizer:
            return "--optimizer";
        case Input::output:
            return "-o";
        case Input::precision:
            return "--precision";
        case Input::profile:
            return "--profile";
        case Input::recipe:
            return "--recipe";
        case Input::seq:
            return "--seq";
        case Input::sharding:
            return "--sharding";
        case Input::steps:
            return "--steps";
        case Input::strategies:
            return "--strategies";
        case Input::train:
            return "--train";
        case Input::world_size:
            return "--world-size";
    }
    return "";
}

std::string flagged(const InputError& e) { return e.message(flag_of); }
std::string flagged(std::string_view text) { return name_inputs(text, flag_of); }

CLI::Validator decimal() {
    return CLI::Validator(
        [](std::string& text) -> std::string {
            if (decimal_count(text)) return {};
            return fmt::format("{} is not a decimal integer from 0 to 2^63 - 1", quote(text));
        },
        "INT", "decimal");
}

void add_common_options(CLI::App& app, CommonArgs& a) {
    app.add_option("--model", a.model,
                   "Preset name (see `remat models`), a Hugging Face checkpoint folder or its "
                   "config.json (model_type gpt2, llama, mistral, qwen2, gemma, gemma2, phi3, "
                   "mixtral, qwen2_moe, falcon, gpt_neox), or a remat preset JSON")
        ->required();
    app.add_option("--gpu", a.gpu, "GPU preset (see `remat models`)")->capture_default_str();
    app.add_option("--gpu-memory", a.gpu_memory,
                   "Override the GPU's capacity: a number and a unit, any case, e.g. 24GiB or 24G "
                   "(2^30 bytes each), "
                   "40GB (10^9), 4096B");
    app.add_option("--micro-batch", a.micro_batch, "Sequences per micro-batch per GPU (B)")
        ->check(decimal())
        ->capture_default_str();
    app.add_option("--seq", a.seq, "Sequence length (S); default: the model's context length")
        ->check(decimal());
    app.add_option("--precision", a.precision, "fp32 | bf16-mixed | fp16-mixed | bf16")
        ->capture_default_str();
    app.add_option("--sharding", a.sharding,
                   "none (DDP) | fsdp | fsdp-grad-op | zero1 | zero2 | zero3 | megatron | "
                   "megatron-distopt")
        ->capture_default_str();
    app.add_option("--world-size", a.world_size, "Data-parallel ranks (W)")
        ->check(decimal())
        ->capture_default_str();
    app.add_option("--grad-accumulation", a.grad_accumulation,
                   "Micro-batches per optimizer step; gradients of earlier ones stay live")
        ->check(decimal())
        ->capture_default_str();
    app.add_option("--optimizer", a.optimizer,
                   "adamw | sgd (with momentum) | adamw-8bit (bitsandbytes' AdamW8bit: blockwise "
                   "8-bit moments) | adafactor (transformers' Adafactor: factored second moment)")
        ->capture_default_str();
    app.add_option("--optimizer-impl", a.optimizer_impl,
                   "torch.optim's implementation: foreach (current PyTorch's default on CUDA) | "
                   "for-loop (torch 1.13's default) | fused; they differ in step temporaries")
        ->capture_default_str();
    app.add_option("--torch", a.torch,
                   "Which PyTorch hf-eager and sdpa follow where versions differ: cuda (current "
                   "PyTorch on CUDA) | cpu-1.13 (Debian's torch 1.13 on CPU; docs/torch.md)")
        ->capture_default_str();
    app.add_option("--profile", a.profile,
                   "Implementation whose saved tensors are modelled: sdpa | hf-eager | megatron | "
                   "remat (remat run's own runtime)")
        ->capture_default_str();
    app.add_option("--attention", a.attention,
                   "Attention core of remat's runtime (profiles remat, remat-cuda): flash (saves "
                   "q, k, v, out, lse) | "
                   "eager (materialized scores, saves the S x S probabilities)")
        ->capture_default_str();
    app.add_option("--moe-capacity-factor", a.moe_capacity_factor,
                   "Mixture of experts: the busiest expert's tokens as a multiple of an even "
                   "share (default 1: balanced routing; at most experts / experts per token)");
    app.add_option(
        "--memory-budget", a.memory_budget,
        "Peak budget for greedy-budget and optimal (default: the GPU's capacity), e.g. 60GiB");
    app.add_option("--memory-slots", a.memory_slots,
                   "optimal, pareto: memory resolution, SLOTS slots over what keeping everything "
                   "needs (default 1024; 256 past 128 stages; 0: exact)")
        ->check(decimal());
    app.add_flag(
        "--offload-checkpoints", a.offload_checkpoints,
        "Checkpoints live in host memory (PCIe copies overlap compute); optimal may choose it");
    app.add_option("--reserve-context", a.reserve_context,
                   "CUDA context bytes outside the allocator (default 300MiB)");
    app.add_option("--reserve-workspace", a.reserve_workspace,
                   "cuBLAS workspace bytes (default 32MiB on sm90, 8519680 before)");
    app.add_option(
        "--fragmentation", a.fragmentation,
        "Allocator fragmentation margin as a fraction of the allocator peak (default 0.05)");
    app.add_option("--calibration", a.calibration,
                   "Step times from the rates measured by `remat calibrate` (FILE) instead of the "
                   "GPU preset's peaks");
    app.add_option("--network", a.network,
                   "Network the collectives run on: dgx-h100 | dgx-a100 | h100-roce | pcie-gen4 "
                   "(default: the GPU preset's usual servers; `remat models` lists them)");
    app.add_option("--gpus-per-node", a.gpus_per_node,
                   "GPUs a node: collectives within a node use its NVLink/PCIe, across nodes the "
                   "fabric (default: the network preset's, 8)")
        ->check(decimal());
    app.add_option("--train", a.train,
                   "What trains: full (every weight) | lora (PEFT's LoRA adapters on a frozen "
                   "base; docs/finetune.md) | frozen (nothing: a forward under no_grad, as "
                   "evaluation or precomputing DPO's reference log-probabilities)")
        ->capture_default_str();
    app.add_option("--lora-rank", a.lora_rank, "LoRA: the adapters' rank r (default 8, PEFT's)")
        ->check(decimal());
    app.add_option("--lora-alpha", a.lora_alpha,
                   "LoRA: lora_alpha (default 16); scaling alpha / r takes no memory");
    app.add_option("--lora-dropout", a.lora_dropout,
                   "LoRA: dropout on the adapters' input (default 0: no mask is kept)");
    app.add_option("--lora-targets", a.lora_targets,
                   "LoRA: the module names PEFT targets, comma-separated (e.g. q_proj,v_proj), "
                   "or all-linear (every block linear); default PEFT's for the model type");
    app.add_option("--base-dtype", a.base_dtype,
                   "LoRA: the frozen base's storage: fp32 | bf16 | fp16 | int8 (bitsandbytes "
                   "LLM.int8) | nf4 (QLoRA); default the precision's weights (fp32, bf16 under "
                   "bf16)");
    app.add_option("--recipe", a.recipe,
                   "sft (one model, causal-LM loss) | dpo (chosen and rejected concatenated: "
                   "--micro-batch counts pairs, 2 sequences each; a frozen reference model)")
        ->capture_default_str();
    app.add_option("--ref-logprobs", a.ref_logprobs,
                   "dpo: model (the reference runs under no_grad after the policy; with --train "
                   "lora the policy with adapters disabled) | precomputed (none in memory)")
        ->capture_default_str();
    app.add_option(
        "--ref-model", a.ref_model,
        "dpo, full training: a reference model of its own (a preset, config.json or "
        "folder, as --model) with the policy's vocabulary; default a copy of the policy");
    app.add_option("--ref-dtype", a.ref_dtype,
                   "dpo, full training: the reference model's weights, fp32 | bf16 | fp16 (the "
                   "seed's trainer loads it in fp16); default the policy's parameter dtype");
    app.add_flag("--no-double-quant", a.no_double_quant,
                 "nf4: without bitsandbytes' double quantization of the absmax constants");
    app.add_flag("--offload-optimizer", a.offload_optimizer,
                 "ZeRO (zero1/2/3): DeepSpeed's offload_optimizer: fp32 master weights, moments "
                 "and the step on the host");
    app.add_flag("--offload-params", a.offload_params,
                 "fsdp / fsdp-grad-op: FSDP's CPUOffload (parameters, gradients and optimizer on "
                 "the host); zero3: offload_param");
    app.add_option("--host-memory", a.host_memory,
                   "Host memory per node that offloaded states must fit (8 ranks a node, fewer "
                   "when the world is smaller), e.g. 1TiB; default: not checked");
    app.add_flag("--json", a.json, "Machine-readable output (schema: docs/json.md)");
}

namespace {

std::uint64_t positive(std::int64_t v, const char* option) {
    if (v <= 0) throw InputError(fmt::format("{} {} must be a positive integer", option, v));
    return static_cast<std::uint64_t>(v);
}

std::vector<std::string> comma_list(const std::string& text, const char* option) {
    std::vector<std::string> out;
    std::size_t start = 0;
    while (true) {
        const std::size_t comma = text.find(',', start);
        std::string item = text.substr(start, comma - start);
        if (item.empty())
            throw InputError(
                fmt::format("{} {}: empty name in the list; give names separated by commas", option,
                            quote(text)));
        out.push_back(std::move(item));
        if (comma == std::string::npos) return out;
        start = comma + 1;
    }
}

// --train and its LoRA options into q.options (targets resolved: PEFT's default or all-linear).
void fine_tuning(const CommonArgs& a, Question& q) {
    RunOptions& o = q.options;
    o.train = parse_training(a.train);
    const char* lora_flag = a.lora_rank               ? "--lora-rank"
                            : a.lora_alpha            ? "--lora-alpha"
                            : a.lora_dropout          ? "--lora-dropout"
                            : !a.lora_targets.empty() ? "--lora-targets"
                                                      : nullptr;
    if (o.train == Training::full) {
        const char* given = lora_flag               ? lora_flag
                            : !a.base_dtype.empty() ? "--base-dtype"
                            : a.no_double_quant     ? "--no-double-quant"
                                                    : nullptr;
        if (given)
            throw InputError(
                fmt::format("{} applies to --train lora; add --train lora or drop it", given));
        return;
    }
    if (o.train == Training::frozen && lora_flag)
        throw InputError(fmt::format(
            "{} applies to --train lora (--train frozen has no adapters); drop it", lora_flag));
    if (a.lora_rank) o.lora.rank = positive(*a.lora_rank, "--lora-rank");
    if (a.lora_alpha) o.lora.alpha = *a.lora_alpha;
    if (a.lora_dropout) o.lora.dropout = *a.lora_dropout;
    if (!a.lora_targets.empty()) o.lora.targets = comma_list(a.lora_targets, "--lora-targets");
    o.lora.double_quant = !a.no_double_quant;
    o.base_dtype = !a.base_dtype.empty()            ? parse_base_dtype(a.base_dtype)
                   : o.precision == Precision::bf16 ? BaseDType::bf16
                                                    : BaseDType::fp32;
    if (a.no_double_quant && o.base_dtype != BaseDType::nf4)
        throw InputError("--no-double-quant applies to --base-dtype nf4; drop it");
    if (o.train == Training::lora) o.lora = resolve_lora(q.model, o.lora);
}

Question question_of(const CommonArgs& a) {
    Question q;
    q.model = load_model(a.model);
    q.gpu = load_gpu(a.gpu);
    if (!a.gpu_memory.empty()) q.gpu.capacity_bytes = parse_bytes(a.gpu_memory, "--gpu-memory");
    q.options.micro_batch = positive(a.micro_batch, "--micro-batch");
    q.options.seq = a.seq ? positive(*a.seq, "--seq") : q.model.context;
    if (q.model.learned_positions && q.options.seq > q.model.context)
        throw InputError(fmt::format("--seq {} exceeds {}'s {} learned positions; use --seq <= {}",
                                     q.options.seq, q.model.name, q.model.context,
                                     q.model.context));
    q.options.world_size = positive(a.world_size, "--world-size");
    q.options.grad_accumulation = positive(a.grad_accumulation, "--grad-accumulation");
    q.options.precision = parse_precision(a.precision);
    q.options.sharding = parse_sharding(a.sharding);
    q.options.optimizer = parse_optimizer(a.optimizer);
    q.options.optimizer_impl = parse_optimizer_impl(a.optimizer_impl);
    q.options.torch = parse_torch(a.torch);
    q.options.profile = parse_profile(a.profile);
    q.options.attention = parse_attention(a.attention);
    if (a.moe_capacity_factor) {
        if (q.model.n_experts == 0)
            throw InputError(fmt::format(
                "--moe-capacity-factor: model '{}' has no experts (it is not a mixture of "
                "experts); drop the option",
                q.model.name));
        q.options.moe_capacity_factor = *a.moe_capacity_factor;
    }
    fine_tuning(a, q);
    q.options.recipe = parse_recipe(a.recipe);
    q.options.ref_logprobs = parse_ref_logprobs(a.ref_logprobs);
    if (q.options.recipe != Recipe::dpo && q.options.ref_logprobs != RefLogprobs::model)
        throw InputError("--ref-logprobs applies to --recipe dpo; add it or drop --ref-logprobs");
    if (!a.ref_model.empty()) {
        if (q.options.recipe != Recipe::dpo)
            throw InputError("--ref-model applies to --recipe dpo; add it or drop --ref-model");
        q.options.ref_model = std::make_shared<const ModelConfig>(load_model(a.ref_model));
    }
    if (!a.ref_dtype.empty()) {
        if (q.options.recipe != Recipe::dpo)
            throw InputError("--ref-dtype applies to --recipe dpo; add it or drop --ref-dtype");
        q.options.ref_dtype = parse_base_dtype(a.ref_dtype);
    }
    q.context.capacity_bytes = q.gpu.capacity_bytes;
    q.context.reserve = default_reserve(q.gpu);
    if (!a.reserve_context.empty())
        q.context.reserve.cuda_context_bytes =
            parse_bytes(a.reserve_context, "--reserve-context", true);
    if (!a.reserve_workspace.empty())
        q.context.reserve.workspace_bytes =
            parse_bytes(a.reserve_workspace, "--reserve-workspace", true);
    if (a.fragmentation) {
        if (!(*a.fragmentation >= 0 && *a.fragmentation < 1))
            throw InputError(fmt::format(
                "--fragmentation {} must be a fraction in [0, 1), e.g. 0.05", *a.fragmentation));
        q.context.reserve.fragmentation = *a.fragmentation;
    }
    if (!a.memory_budget.empty())
        q.context.budget_bytes = parse_bytes(a.memory_budget, "--memory-budget");
    if (a.memory_slots) {
        if (*a.memory_slots < 0 || *a.memory_slots > 1'000'000)
            throw InputError(fmt::format("--memory-slots {} must be between 0 (exact) and 1000000",
                                         *a.memory_slots));
        q.context.memory_slots = static_cast<std::uint32_t>(*a.memory_slots);
    }
    q.context.offload_checkpoints = a.offload_checkpoints;
    q.options.offload_optimizer = a.offload_optimizer;
    q.options.offload_params = a.offload_params;
    if ((a.offload_optimizer || a.offload_params) && !(q.gpu.host_link_bandwidth > 0))
        throw InputError(fmt::format(
            "{}: GPU preset '{}' has no host_link_bandwidth",
            a.offload_optimizer ? "--offload-optimizer" : "--offload-params", q.gpu.name));
    if (!a.host_memory.empty())
        q.context.host_capacity_bytes = parse_bytes(a.host_memory, "--host-memory");
    if (a.offload_checkpoints && !(q.gpu.host_link_bandwidth > 0))
        throw InputError(fmt::format(
            "--offload-checkpoints: GPU preset '{}' has no host_link_bandwidth", q.gpu.name));
    if (!a.calibration.empty()) {
        const Calibration c = load_calibration(a.calibration);
        check_covers(c, q.options.precision, a.calibration);
        q.context.time_model = calibrated_model(c);
        // A run in this process judges its steps by the calibration's yardstick.
        if (c.backend == "cpu") rt::note_probe_s(c.host_probe_s);
    }
    // The network: --network, else a calibration's measured one, else the GPU's usual servers.
    if (!a.network.empty() || !q.context.time_model.network)
        q.context.time_model.network = load_network(a.network.empty() ? q.gpu.network : a.network);
    if (a.gpus_per_node) {
        if (*a.gpus_per_node <= 0)
            throw InputError(
                fmt::format("--gpus-per-node {}: use a positive number of GPUs", *a.gpus_per_node));
        q.context.time_model.network->gpus_per_node = static_cast<std::uint64_t>(*a.gpus_per_node);
    }
    return q;
}

}  // namespace

Question make_question(const CommonArgs& a) {
    try {
        return question_of(a);
    } catch (const InputError& e) {
        // A library's message names its inputs in words; this function's messages name them as
        // flags. Any other error goes on as it is (a SizeOverflow stays a SizeOverflow).
        if (names_inputs(e.text())) throw InputError(flagged(e));
        throw;
    }
}

std::vector<std::string> plan_args(const CommonArgs& a, const Question& q,
                                   std::uint64_t micro_batch, std::uint64_t grad_accumulation,
                                   const std::string& strategy, bool offload) {
    const RunOptions& o = q.options;
    std::vector<std::string> out = {"--model",       a.model,
                                    "--gpu",         a.gpu,
                                    "--micro-batch", std::to_string(micro_batch),
                                    "--seq",         std::to_string(o.seq),
                                    "--precision",   std::string(precision_name(o.precision)),
                                    "--profile",     std::string(profile_name(o.profile)),
                                    "--sharding",    std::string(sharding_name(o.sharding)),
                                    "--world-size",  std::to_string(o.world_size),
                                    "--optimizer",   std::string(optimizer_name(o.optimizer))};
    if (o.attention != Attention::flash) {
        out.push_back("--attention");
        out.push_back(std::string(attention_name(o.attention)));
    }
    if (o.optimizer_impl != OptimizerImpl::foreach) {
        out.push_back("--optimizer-impl");
        out.push_back(std::string(optimizer_impl_name(o.optimizer_impl)));
    }
    if (o.torch != TorchFlavor::cuda) {
        out.push_back("--torch");
        out.push_back(std::string(torch_name(o.torch)));
    }
    if (a.moe_capacity_factor) {
        out.push_back("--moe-capacity-factor");
        out.push_back(fmt::format("{}", *a.moe_capacity_factor));
    }
    if (o.recipe != Recipe::sft)
        out.insert(out.end(), {"--recipe", std::string(recipe_name(o.recipe)), "--ref-logprobs",
                               std::string(ref_logprobs_name(o.ref_logprobs))});
    if (o.ref_dtype)
        out.insert(out.end(), {"--ref-dtype", std::string(base_dtype_name(*o.ref_dtype))});
    if (!a.ref_model.empty()) out.insert(out.end(), {"--ref-model", a.ref_model});
    if (o.offload_optimizer) out.push_back("--offload-optimizer");
    if (o.offload_params) out.push_back("--offload-params");
    if (o.train == Training::frozen)
        out.insert(out.end(), {"--train", "frozen", "--base-dtype",
                               std::string(base_dtype_name(o.base_dtype))});
    if (o.train == Training::lora) {
        out.insert(out.end(), {"--train", "lora", "--lora-rank", std::to_string(o.lora.rank),
                               "--lora-alpha", fmt::format("{}", o.lora.alpha), "--lora-dropout",
                               fmt::format("{}", o.lora.dropout), "--lora-targets",
                               fmt::format("{}", fmt::join(o.lora.targets, ",")), "--base-dtype",
                               std::string(base_dtype_name(o.base_dtype))});
        if (!o.lora.double_quant) out.push_back("--no-double-quant");
    }
    auto add = [&](const char* option, const std::string& value) {
        if (value.empty()) return;
        out.push_back(option);
        out.push_back(value);
    };
    if (grad_accumulation > 1) add("--grad-accumulation", std::to_string(grad_accumulation));
    add("--gpu-memory", a.gpu_memory);
    add("--memory-budget", a.memory_budget);
    add("--host-memory", a.host_memory);
    if (a.memory_slots) add("--memory-slots", std::to_string(*a.memory_slots));
    add("--reserve-context", a.reserve_context);
    add("--reserve-workspace", a.reserve_workspace);
    if (a.fragmentation) add("--fragmentation", fmt::format("{}", *a.fragmentation));
    add("--calibration", a.calibration);
    add("--network", a.network);
    if (a.gpus_per_node) add("--gpus-per-node", std::to_string(*a.gpus_per_node));
    add("--strategy", strategy);
    if (offload) out.push_back("--offload-checkpoints");
    return out;
}

}  // namespace remat::cli
