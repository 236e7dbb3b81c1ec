// Hugging Face's GPTNeoXLayer (modeling_gpt_neox.py) for hf-eager and sdpa: sequential or
// parallel residual, partial rotary.
#include "planner/config/checked.hpp"
#include "planner/graph/families.hpp"

namespace remat::family {

TensorId hf_neox_block(OpBuilder& b, const Dims& d, const ModelConfig& m, Profile profile) {
    StageGraph& g = b.graph();
    const TensorId x = g.add_input("x", {d.B, d.S, d.H}, b.policy().param);
    const SharedInputs rope = add_rotary_inputs(g, d, m, b.policy().param);
    const TensorId h1 = b.layernorm("input_layernorm", x);
    const TensorId qkv = b.linear("attention.query_key_value", h1, checked_mul(3, d.H));
    const TensorId q = b.view("attention.q", qkv, {d.B, d.A, d.S, d.D});
    const TensorId k = b.view("attention.k", qkv, {d.B, d.A, d.S, d.D});
    const TensorId v = b.view("attention.v", qkv, {d.B, d.A, d.S, d.D});
    const TensorId qr = rotary(b, "attention.rope_q", q, rope.cos, rope.sin, m.rotary_pct);
    const TensorId kr = rotary(b, "attention.rope_k", k, rope.cos, rope.sin, m.rotary_pct);
    const TensorId ctx =
        attention(b, "attention", {qr, kr, v, true, true, d.B == 1}, d, profile, m.attn_dropout,
                  KvExpand::none, EagerSoftmax::fp32_then_query_dtype);
    const TensorId dense = b.linear("attention.dense", ctx, d.H);
    const TensorId a = b.dropout("post_attention_dropout", dense, m.resid_dropout);
    TensorId mlp_in = x;
    if (!m.parallel_residual) mlp_in = b.add("residual_1", a, x);
    const TensorId h2 = b.layernorm("post_attention_layernorm", mlp_in);
    const TensorId up = b.linear("mlp.dense_h_to_4h", h2, d.F);
    const TensorId act = b.activation("mlp.act", up, m.activation);
    const TensorId down = b.linear("mlp.dense_4h_to_h", act, d.H);
    const TensorId mo = b.dropout("post_mlp_dropout", down, m.resid_dropout);
    if (!m.parallel_residual) return b.add("residual_2", mo, mlp_in);
    const TensorId sum = b.add("residual_mlp_attn", mo, a);
    return b.add("residual", sum, x);
}

}  // namespace remat::family
