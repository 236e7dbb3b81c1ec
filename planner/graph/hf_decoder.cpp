// Hugging Face's Llama-style decoder layers for hf-eager and sdpa, op by op after transformers'
// modeling code: LlamaDecoderLayer (llama, mistral), Qwen2DecoderLayer (q/k/v biases: same
// saved tensors), GemmaDecoderLayer (GemmaRMSNorm, GeGLU, head_dim from the config),
// Gemma2DecoderLayer (norms after attention and MLP too, soft-capped scores),
// Phi3DecoderLayer (fused qkv_proj and gate_up_proj, residual dropouts) and
// MixtralDecoderLayer and Qwen2MoeDecoderLayer (the MLP is a sparse mixture of experts,
// hf_moe.cpp).
#include "planner/config/checked.hpp"
#include "planner/graph/families.hpp"

namespace remat::family {

TensorId gated_mlp(OpBuilder& b, const std::string& prefix, TensorId x, std::uint64_t width,
                   std::uint64_t out, Activation act, GatedNames n) {
    // down_proj(act_fn(gate_proj(x)) * up_proj(x)): Python runs gate, act, up, then the product.
    const TensorId gate = b.linear(prefix + "." + n.gate, x, width);
    const TensorId a = b.activation(prefix + ".act", gate, act);
    const TensorId up = b.linear(prefix + "." + n.up, x, width);
    const TensorId prod = b.mul(prefix + ".gated", a, up);
    return b.linear(prefix + "." + n.down, prod, out);
}

namespace {

// Phi-3 computes gate and up as one projection and chunks it, so gate and up are views of one
// (B, S, 2F) storage, and multiplies up * act.
TensorId fused_gated_mlp(OpBuilder& b, const Dims& d, const ModelConfig& m, TensorId h) {
    const TensorId gu = b.linear("mlp.gate_up_proj", h, checked_mul(2, d.F));
    const TensorId gate = b.view("mlp.gate", gu, {d.B, d.S, d.F});
    const TensorId up = b.view("mlp.up", gu, {d.B, d.S, d.F});
    const TensorId act = b.activation("mlp.act", gate, m.activation);
    const TensorId prod = b.mul("mlp.up_states", up, act);
    return b.linear("mlp.down_proj", prod, d.H);
}

// q, k, v in (B, heads, S, D): separate projections, or views of Phi-3's fused qkv_proj.
struct Projected {
    TensorId q, k, v;
};

Projected project_qkv(OpBuilder& b, const Dims& d, const ModelConfig& m, TensorId h) {
    const std::uint64_t q_width = checked_mul(d.A, d.D), kv_width = checked_mul(d.KV, d.D);
    if (m.fused_qkv) {
        const TensorId qkv =
            b.linear("self_attn.qkv_proj", h, checked_add(q_width, checked_mul(2, kv_width)));
        return {b.view("self_attn.q_heads", qkv, {d.B, d.A, d.S, d.D}),
                b.view("self_attn.k_heads", qkv, {d.B, d.KV, d.S, d.D}),
                b.view("self_attn.v_heads", qkv, {d.B, d.KV, d.S, d.D})};
    }
    const TensorId q = b.linear("self_attn.q_proj", h, q_width);
    const TensorId k = b.linear("self_attn.k_proj", h, kv_width);
    const TensorId v = b.linear("self_attn.v_proj", h, kv_width);
    return {b.view("self_attn.q_heads", q, {d.B, d.A, d.S, d.D}),
            b.view("self_attn.k_heads", k, {d.B, d.KV, d.S, d.D}),
            b.view("self_attn.v_heads", v, {d.B, d.KV, d.S, d.D})};
}

}  // namespace

TensorId hf_decoder_block(OpBuilder& b, const Dims& d, const ModelConfig& m, Profile profile,
                          const std::vector<std::uint64_t>& expert_tokens) {
    StageGraph& g = b.graph();
    const TensorId x = g.add_input("x", {d.B, d.S, d.H}, b.policy().param);
    const SharedInputs rope = add_rotary_inputs(g, d, m, b.policy().param);
    const TensorId h1 = b.norm("input_layernorm", x, m.norm);
    const Projected p = project_qkv(b, d, m, h1);
    const bool cat = m.arch == Arch::phi3;
    const TensorId qr = rotary(b, "self_attn.rope_q", p.q, rope.cos, rope.sin, 1.0, cat);
    const TensorId kr = rotary(b, "self_attn.rope_k", p.k, rope.cos, rope.sin, 1.0, cat);
    // After rotary q and k are fresh tensors; v is a transposed view, whose (B*heads, S, D)
    // reshape is a view only when B == 1.
    Qkv in{qr, kr, p.v, true, true, d.B == 1};
    const TensorId ctx =
        attention(b, "self_attn", in, d, profile, m.attn_dropout, KvExpand::repeat_kv,
                  EagerSoftmax::fp32_then_query_dtype, m.attn_softcap);
    TensorId a = b.linear("self_attn.o_proj", ctx, d.H);
    if (m.sandwich_norms) a = b.norm("post_attention_layernorm", a, m.norm);
    a = b.dropout("resid_attn_dropout", a, m.resid_dropout);
    const TensorId r1 = b.add("residual_1", x, a);
    const TensorId h2 = b.norm(
        m.sandwich_norms ? "pre_feedforward_layernorm" : "post_attention_layernorm", r1, m.norm);
    TensorId mlp = m.n_experts > 0 ? hf_moe(b, m.arch == Arch::mixtral ? "block_sparse_moe" : "mlp",
                                            h2, d, m, expert_tokens)
                   : m.fused_gate_up ? fused_gated_mlp(b, d, m, h2)
                                     : gated_mlp(b, "mlp", h2, d.F, d.H, m.activation);
    if (m.sandwich_norms) mlp = b.norm("post_feedforward_layernorm", mlp, m.norm);
    mlp = b.dropout("resid_mlp_dropout", mlp, m.resid_dropout);
    return b.add("residual_2", r1, mlp);
}

}  // namespace remat::family
