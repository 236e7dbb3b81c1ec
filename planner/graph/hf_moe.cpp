// Hugging Face's MixtralSparseMoeBlock (modeling_mixtral.py) for hf-eager and sdpa, op by op:
//
//   router_logits = gate(x)                                   (T, E), T = B * S tokens
//   routing_weights = softmax(router_logits, dim=1, dtype=float)
//   routing_weights, selected = topk(routing_weights, k)      (T, k)
//   routing_weights /= routing_weights.sum(-1, keepdim=True)  in place
//   routing_weights = routing_weights.to(x.dtype)
//   for each expert e:  idx, top_x = where(expert_mask[e])     (n_e tokens routed to e)
//       state = x[None, top_x].reshape(-1, H)
//       y = w2(act(w1(state)) * w3(state)) * routing_weights[top_x, idx, None]
//       final.index_add_(0, top_x, y.to(x.dtype))
//
// What is saved depends on how many tokens each expert gets (n_e), which depends on the data:
// the caller passes the counts (planner/graph/moe_routing.hpp decides them from a routing
// assumption). The experts together always see T * k tokens.
#include "planner/config/checked.hpp"
#include "planner/graph/families.hpp"

namespace remat::family {

TensorId hf_moe(OpBuilder& b, const std::string& name, TensorId x, const Dims& d,
                const ModelConfig& m, const std::vector<std::uint64_t>& expert_tokens) {
    StageGraph& g = b.graph();
    const std::uint64_t T = checked_mul(d.B, d.S), E = m.n_experts, k = m.experts_per_token;
    const DType xt = b.dtype(x);
    const TensorId flat = b.view(name + ".hidden_flat", x, {T, d.H});
    const TensorId logits = b.linear(name + ".gate", flat, E);
    // softmax(dtype=float) saves its fp32 output.
    const TensorId probs = g.add_tensor(name + ".routing_probs", {T, E}, DType::f32);
    g.add_op(b.make(name + ".softmax", OpClass::memory, {logits}, {probs}, {probs}));
    // topk saves the indices it picked.
    const TensorId top = g.add_tensor(name + ".topk_values", {T, k}, DType::f32);
    const TensorId selected = g.add_tensor(name + ".selected_experts", {T, k}, DType::i64, false);
    g.add_op(b.make(name + ".topk", OpClass::memory, {probs}, {top, selected}, {selected}));
    const TensorId sum = g.add_tensor(name + ".topk_sum", {T, 1}, DType::f32);
    g.add_op(b.make(name + ".sum", OpClass::memory, {top}, {sum}, {}));
    // In-place div_: autograd saves a clone of the values it overwrites, and the divisor.
    const TensorId before = g.add_tensor(name + ".topk_weights_original", {T, k}, DType::f32);
    g.add_op(b.make(name + ".renormalize", OpClass::memory, {top, sum}, {before}, {before, sum}));
    const TensorId weights = b.view(name + ".routing_weights", top, {T, k});
    const TensorId rw = b.cast(name + ".routing_weights_cast", weights, xt);
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
        const TensorId w1 = b.linear(p + ".w1", state, d.F);
        const TensorId act = b.activation(p + ".act", w1, m.activation);
        const TensorId w3 = b.linear(p + ".w3", state, d.F);
        const TensorId prod = b.mul(p + ".gated", act, w3);
        const TensorId w2 = b.linear(p + ".w2", prod, d.H);
        const TensorId wi = g.add_tensor(p + ".routing_weight", {n, 1}, b.dtype(rw));
        g.add_op(
            b.make(p + ".index_weights", OpClass::memory, {rw, top_x, idx}, {wi}, {top_x, idx}));
        const TensorId y = b.mul(p + ".weighted", w2, wi);
        const TensorId yc =
            b.view(p + ".weighted_output", b.cast(p + ".weighted_cast", y, xt), {n, d.H});
        // index_add_ in place on the running sum (no new tensor): saves the index and the
        // source (IndexAddBackward0).
        g.add_op(b.make(p + ".index_add", OpClass::memory, {final_h, top_x, yc}, {}, {top_x, yc}));
    }
    return b.view(name + ".output", final_h, {d.B, d.S, d.H});
}

}  // namespace remat::family
