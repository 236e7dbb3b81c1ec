// Hugging Face's sparse MoE blocks for hf-eager and sdpa, op by op: MixtralSparseMoeBlock
// (modeling_mixtral.py) and Qwen2MoeSparseMoeBlock (modeling_qwen2_moe.py):
//
//   router_logits = gate(x)                                   (T, E), T = B * S tokens
//   routing_weights = softmax(router_logits, dim=1, dtype=float)
//   routing_weights, selected = topk(routing_weights, k)      (T, k)
//   routing_weights /= routing_weights.sum(-1, keepdim=True)  in place (mixtral; qwen2_moe
//                                                             only with norm_topk_prob)
//   routing_weights = routing_weights.to(x.dtype)
//   for each expert e hit:  idx, top_x = where(expert_mask[e]) (n_e tokens routed to e)
//       state = x[None, top_x].reshape(-1, H)
//       y = expert(state) * routing_weights[top_x, idx, None]  (a gated MLP)
//       final.index_add_(0, top_x, y.to(x.dtype))
//   qwen2_moe: final = final + sigmoid(shared_expert_gate(x)) * shared_expert(x)
//
// What is saved depends on how many tokens each expert gets (n_e), which depends on the data:
// the caller passes the counts (expert_tokens() in stage_request.hpp decides them from a routing
// assumption). The experts together always see T * k tokens.
#include "planner/config/checked.hpp"
#include "planner/graph/families.hpp"

namespace remat::family {

TensorId hf_moe(OpBuilder& b, const std::string& name, TensorId x, const Dims& d,
                const ModelConfig& m, const std::vector<std::uint64_t>& expert_tokens) {
    StageGraph& g = b.graph();
    const std::uint64_t T = checked_mul(d.B, d.S), E = m.n_experts, k = m.experts_per_token;
    // Mixtral names its experts' linears w1 (gate), w3 (up), w2 (down); Qwen2-MoE's experts
    // are Qwen2MoeMLPs.
    const GatedNames names =
        m.arch == Arch::mixtral ? GatedNames{"w1", "w3", "w2"} : llama_mlp_names;
    const DType xt = b.dtype(x);
    const TensorId flat = b.view(name + ".hidden_flat", x, {T, d.H});
    const TensorId logits = b.linear(name + ".gate", flat, E);
    // softmax(dtype=float) saves its fp32 output.
    const TensorId probs = g.add_tensor(name + ".routing_probs", {T, E}, DType::f32);
    g.add_op(b.make(name + ".softmax", OpClass::memory, {logits}, {probs}, {probs}));
    // topk saves the indices it picked.
    const TensorId top = g.add_tensor(name + ".topk_weights", {T, k}, DType::f32);
    const TensorId selected = g.add_tensor(name + ".selected_experts", {T, k}, DType::i64, false);
    g.add_op(b.make(name + ".topk", OpClass::memory, {probs}, {top, selected}, {selected}));
    TensorId weights = top;
    if (m.renormalize_topk) {
        const TensorId sum = g.add_tensor(name + ".topk_sum", {T, 1}, DType::f32);
        g.add_op(b.make(name + ".sum", OpClass::memory, {top}, {sum}, {}));
        // In-place div_: autograd saves a clone of the values it overwrites, and the divisor.
        const TensorId before = g.add_tensor(name + ".topk_weights_original", {T, k}, DType::f32);
        g.add_op(
            b.make(name + ".renormalize", OpClass::memory, {top, sum}, {before}, {before, sum}));
        weights = b.view(name + ".routing_weights_fp32", top, {T, k});
    }
    const TensorId rw = b.cast(name + ".routing_weights", weights, xt);
    const TensorId final_h = g.add_tensor(name + ".final_hidden_states", {T, d.H}, xt);
    g.add_op(b.make(name + ".zeros", OpClass::memory, {}, {final_h}, {}));
    for (std::uint64_t e = 0; e < E; ++e) {
        const std::uint64_t n = expert_tokens.at(e);
        if (n == 0) continue;  // transformers loops over the experts that were hit
        const std::string p = name + ".experts." + std::to_string(e);
        // torch.where(mask) is nonzero().unbind(1): idx and top_x are the columns of one
        // (n, 2) int64 tensor.
        const TensorId index = g.add_tensor(p + ".token_index", {n, 2}, DType::i64, false);
        g.add_op(b.make(p + ".where", OpClass::memory, {selected}, {index}, {}));
        const TensorId top_x = b.view(p + ".top_x", index, {n});
        const TensorId idx = b.view(p + ".idx", index, {n});
        const TensorId state = g.add_tensor(p + ".input", {n, d.H}, xt);
        g.add_op(b.make(p + ".index", OpClass::memory, {flat, top_x}, {state}, {top_x}));
        const TensorId out = gated_mlp(b, p, state, m.expert_ffn, d.H, m.activation, names);
        const TensorId wi = g.add_tensor(p + ".routing_weight", {n, 1}, b.dtype(rw));
        g.add_op(
            b.make(p + ".index_weights", OpClass::memory, {rw, top_x, idx}, {wi}, {top_x, idx}));
        const TensorId y = b.mul(p + ".weighted", out, wi);
        const TensorId yc =
            b.view(p + ".weighted_output", b.cast(p + ".weighted_cast", y, xt), {n, d.H});
        // index_add_ in place on the running sum (no new tensor): saves the index and the
        // source (IndexAddBackward0).
        g.add_op(b.make(p + ".index_add", OpClass::memory, {final_h, top_x, yc}, {}, {top_x, yc}));
    }
    TensorId result = final_h;
    if (m.shared_expert_ffn > 0) {
        const TensorId shared =
            gated_mlp(b, name + ".shared_expert", flat, m.shared_expert_ffn, d.H, m.activation);
        const TensorId gate = b.linear(name + ".shared_expert_gate", flat, 1);
        // F.sigmoid saves its output; the product saves both operands.
        const TensorId sig =
            g.add_tensor(name + ".shared_expert_gate.sigmoid", {T, 1}, b.dtype(gate));
        g.add_op(
            b.make(name + ".shared_expert_gate.sigmoid", OpClass::memory, {gate}, {sig}, {sig}));
        const TensorId gated = b.mul(name + ".shared_expert_output", shared, sig);
        result = b.add(name + ".final_plus_shared", final_h, gated);
    }
    return b.view(name + ".output", result, {d.B, d.S, d.H});
}

}  // namespace remat::family
