// The stages around the blocks for every profile but remat's own: embedding, final norm, and
// the head with its loss (Hugging Face's ForCausalLMLoss, or Megatron's fused cross entropy).
#include <string>

#include "planner/config/checked.hpp"
#include "planner/graph/families.hpp"

namespace remat::family {

TensorId embedding_stage(OpBuilder& b, const Dims& d, const ModelConfig& m, Profile profile) {
    StageGraph& g = b.graph();
    const TensorId ids = g.add_input("input_ids", {d.B, d.S}, DType::i64, false);
    const DType out_t = profile == Profile::megatron ? DType::bf16 : b.policy().param;
    TensorId y = g.add_tensor("wte.out", {d.B, d.S, d.H}, out_t);
    // EmbeddingBackward saves the indices. A frozen embedding has no backward: transformers'
    // enable_input_require_grads (which PEFT's recipes call) makes its output a leaf that
    // requires grad, and the graph's AccumulateGrad node holds that leaf until backward ends.
    const bool frozen = b.weights().frozen;
    auto indices = [&](TensorId t) {
        return frozen ? std::vector<TensorId>{} : std::vector<TensorId>{t};
    };
    g.add_op(b.make("wte", OpClass::memory, {ids}, {y},
                    !frozen                    ? indices(ids)
                    : b.weights().forward_only ? std::vector<TensorId>{}
                                               : std::vector<TensorId>{y}));
    if (m.learned_positions) {
        const TensorId pos = g.add_tensor("position_ids", {1, d.S}, DType::i64, false);
        g.add_op(b.make("position_ids", OpClass::memory, {}, {pos}, {}));
        const TensorId pe = g.add_tensor("wpe.out", {1, d.S, d.H}, out_t);
        g.add_op(b.make("wpe", OpClass::memory, {pos}, {pe}, indices(pos)));
        y = b.add("embed_sum", y, pe);
    }
    if (const std::uint64_t rd = rotary_dims(m);
        rd > 0 && profile != Profile::megatron && b.policy().device == AutocastDevice::cuda) {
        // The model computes cos/sin once per step; every block saves them (shared), counted
        // here. Under --torch cpu-1.13 the replay holds them instead, until the first block's
        // backward, the last that reads them (StepTerms::rotary_bytes).
        const TensorId cos = g.add_tensor("rope.cos", {1, d.S, rd}, b.policy().param, false);
        const TensorId sin = g.add_tensor("rope.sin", {1, d.S, rd}, b.policy().param, false);
        g.add_op(b.make("rotary_emb", OpClass::memory, {}, {cos, sin}, {cos, sin}));
    }
    if (m.scaled_embeddings && profile != Profile::megatron) {
        // GemmaModel: hidden_states * torch.tensor(hidden_size**0.5, dtype=hidden_states.dtype).
        // The 0-dim normalizer is made on the host (no device argument): MulBackward0 saves it,
        // a device tensor only when the model runs on the CPU.
        const TensorId scaled = g.add_tensor("normalizer_mul", b.shape(y), b.dtype(y));
        if (b.policy().device == AutocastDevice::cpu) {
            const TensorId normalizer = g.add_tensor("normalizer", {}, b.dtype(y), false);
            g.add_op(b.make("normalizer", OpClass::memory, {}, {normalizer}, {}));
            g.add_op(
                b.make("normalizer_mul", OpClass::memory, {y, normalizer}, {scaled}, {normalizer}));
        } else {
            g.add_op(b.make("normalizer_mul", OpClass::memory, {y}, {scaled}, {}));
        }
        y = scaled;
    }
    return b.dropout(m.arch == Arch::gpt_neox ? "emb_dropout" : "drop", y, m.embd_dropout);
}

namespace {

std::string final_norm_name(const ModelConfig& m) {
    switch (m.arch) {
        case Arch::gpt2:
        case Arch::falcon:
            return "ln_f";
        case Arch::gpt_neox:
            return "final_layer_norm";
        default:
            return "norm";
    }
}

}  // namespace

namespace {

// DPO's loss on the concatenated batch (B here is 2 x the pairs), after the seed's trainer
// (eric-mitchell/direct-preference-optimization, trainers.py): all_logits = model(...).logits
// .to(torch.float32), a local until concatenated_forward returns (the low-precision logits, a
// temporary of the expression, go at once); _get_batch_logps: labels[:, 1:].clone(),
// logits[:, :-1, :] (a view), loss_mask = labels != -100, torch.gather(logits.log_softmax(-1),
// 2, labels.unsqueeze(2)) (log_softmax saves its output, gather its index), (per_token_logps *
// loss_mask).sum(-1) (the product saves the mask); then preference_loss on the (B/2,) chosen
// and rejected halves against the reference's (-F.logsigmoid(beta * logits): vectors only).
TensorId dpo_log_probs(OpBuilder& b, const Dims& d, TensorId logits) {
    StageGraph& g = b.graph();
    const TensorId lf = b.cast("all_logits_fp32", logits, DType::f32);
    const std::uint64_t S1 = d.S - 1;
    const TensorId labels = g.add_tensor("logps.labels", {d.B, S1}, DType::i64, false);
    g.add_op(b.make("logps.labels_clone", OpClass::memory, {}, {labels}, {}));
    const TensorId mask = g.add_tensor("logps.loss_mask", {d.B, S1}, DType::b8, false);
    g.add_op(b.make("logps.loss_mask", OpClass::memory, {labels}, {mask}, {}));
    const TensorId shifted = b.view("logps.logits_shifted", lf, {d.B, S1, d.V});
    const TensorId ls = g.add_tensor("logps.log_softmax", {d.B, S1, d.V}, DType::f32);
    Op op = b.make("logps.log_softmax", OpClass::memory, {shifted}, {ls}, {ls});
    // The kernel runs on input.contiguous() (aten/src/ATen/native/SoftMax.cpp): the slice of
    // more than one sequence is not, so it is copied for the op's duration.
    if (d.B > 1) op.fwd_workspace_bytes = checked_mul(4, d.B, S1, d.V);
    op.fwd_flops = flop_product(5, d.B, S1, d.V);
    op.bwd_flops = op.fwd_flops;
    g.add_op(std::move(op));
    const TensorId index = b.view("logps.index", labels, {d.B, S1, 1});
    const TensorId per_token = g.add_tensor("logps.per_token", {d.B, S1}, DType::f32);
    g.add_op(b.make("logps.gather", OpClass::memory, {ls, index}, {per_token}, {index}));
    const TensorId masked = g.add_tensor("logps.masked", {d.B, S1}, DType::f32);
    g.add_op(b.make("logps.mask_mul", OpClass::memory, {per_token, mask}, {masked}, {mask}));
    const TensorId logps = g.add_tensor("all_logps", {d.B}, DType::f32);
    Op sum = b.make("logps.sum", OpClass::memory, {masked}, {logps}, {});
    sum.held.push_back(lf);  // concatenated_forward's local, until it returns
    g.add_op(std::move(sum));
    const TensorId loss = g.add_tensor("loss", {}, DType::f32);
    g.add_op(b.make("dpo.preference_loss", OpClass::memory, {logps}, {loss}, {}));
    return loss;
}

}  // namespace

TensorId norm_stage(OpBuilder& b, const Dims& d, const ModelConfig& m, Profile profile) {
    StageGraph& g = b.graph();
    if (profile == Profile::megatron) {
        const TensorId x = g.add_input("x", {d.B, d.S, d.H}, DType::bf16);
        return b.layernorm("final_layernorm", x, false);
    }
    const TensorId x = g.add_input("x", {d.B, d.S, d.H}, b.policy().param);
    return b.norm(final_norm_name(m), x, m.norm);
}

TensorId head_stage(OpBuilder& b, const Dims& d, const ModelConfig& m, Profile profile, bool dpo) {
    StageGraph& g = b.graph();
    const Shape bsv{d.B, d.S, d.V};
    if (profile == Profile::megatron) {
        // Megatron: lm head in 2 bytes, then logits upcast to fp32; the fused cross entropy
        // keeps the fp32 softmax in place of the logits (4sbv).
        const TensorId x = g.add_input("x", {d.B, d.S, d.H}, DType::bf16);
        const TensorId logits = g.add_tensor("logits", bsv, DType::bf16);
        Op op = b.make("output_layer", OpClass::gemm, {x}, {logits}, {x});
        op.fwd_flops = flop_product(2, d.B, d.S, d.H, d.V);
        op.bwd_flops = 2 * op.fwd_flops;
        g.add_op(std::move(op));
        const TensorId lf = b.copy("logits_fp32", logits, DType::f32);
        const TensorId loss = g.add_tensor("loss", {}, DType::f32);
        g.add_op(b.make("cross_entropy", OpClass::memory, {lf}, {loss}, {lf}));
        return loss;
    }
    const TensorId x = g.add_input("x", {d.B, d.S, d.H}, b.policy().param);
    TensorId logits = b.linear(m.arch == Arch::gpt_neox ? "embed_out" : "lm_head", x, d.V);
    if (m.final_softcap > 0.0) {
        // Gemma2ForCausalLM: logits / cap; torch.tanh (saves its output); * cap.
        const TensorId div = g.add_tensor("logits_softcap.div", bsv, b.dtype(logits));
        g.add_op(b.make("logits_softcap.div", OpClass::memory, {logits}, {div}, {}));
        const TensorId th = g.add_tensor("logits_softcap.tanh", bsv, b.dtype(logits));
        g.add_op(b.make("logits_softcap.tanh", OpClass::memory, {div}, {th}, {th}));
        logits = g.add_tensor("logits_softcap.output", bsv, b.dtype(logits));
        g.add_op(b.make("logits_softcap.mul", OpClass::memory, {th}, {logits}, {}));
    }
    if (dpo) return dpo_log_probs(b, d, logits);
    // Hugging Face's ForCausalLMLoss: logits.float(), then cross_entropy over (B*S, V):
    // log_softmax saves its fp32 output, nll_loss the targets.
    const TensorId lf = b.cast("logits_fp32", logits, DType::f32);
    const TensorId flat = b.view("logits_flat", lf, {checked_mul(d.B, d.S), d.V});
    // labels padded with -100 then shifted: a (B, S) slice of a (B, S+1) tensor, contiguous
    // (a copy) unless B = 1, where the saved target is a view of the padded labels.
    const TensorId padded =
        g.add_tensor("loss.labels_padded", {d.B, checked_add(d.S, 1)}, DType::i64, false);
    g.add_op(b.make("loss.pad_labels", OpClass::memory, {}, {padded}, {}));
    TensorId target = b.view("loss.target", padded, {d.B, d.S});
    if (d.B > 1) target = b.copy("loss.target", target, DType::i64);
    const TensorId ls = g.add_tensor("loss.log_softmax", {checked_mul(d.B, d.S), d.V},
                                     b.autocast_fp32_op(b.dtype(flat)));
    Op op = b.make("loss.log_softmax", OpClass::memory, {flat}, {ls}, {ls});
    op.fwd_flops = flop_product(5, d.B, d.S, d.V);
    op.bwd_flops = op.fwd_flops;
    g.add_op(std::move(op));
    const TensorId loss = g.add_tensor("loss", {}, DType::f32);
    const TensorId total_weight = g.add_tensor("loss.total_weight", {}, DType::f32, false);
    // The model's forward holds `logits` (its ...ForCausalLM.forward local) until the loss
    // returns, so a low-precision logits tensor lives alongside its fp32 copy: nll reads it last.
    Op nll = b.make("loss.nll", OpClass::memory, {ls, target}, {loss, total_weight},
                    {target, total_weight});
    if (logits != lf) nll.held.push_back(logits);
    g.add_op(std::move(nll));
    return loss;
}

}  // namespace remat::family
