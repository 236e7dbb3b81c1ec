// Hugging Face's LlamaDecoderLayer (modeling_llama.py) for hf-eager and sdpa.
#include "planner/config/checked.hpp"
#include "planner/graph/families.hpp"

namespace remat::family {

TensorId hf_llama_block(OpBuilder& b, const Dims& d, const ModelConfig& m, Profile profile) {
    StageGraph& g = b.graph();
    const TensorId x = g.add_input("x", {d.B, d.S, d.H}, b.policy().param);
    const SharedInputs rope = add_rotary_inputs(g, d, m, b.policy().param);
    const TensorId h1 = b.rmsnorm_hf("input_layernorm", x);
    const TensorId q = b.linear("self_attn.q_proj", h1, checked_mul(d.A, d.D));
    const TensorId k = b.linear("self_attn.k_proj", h1, checked_mul(d.KV, d.D));
    const TensorId v = b.linear("self_attn.v_proj", h1, checked_mul(d.KV, d.D));
    const TensorId qh = b.view("self_attn.q_heads", q, {d.B, d.A, d.S, d.D});
    const TensorId kh = b.view("self_attn.k_heads", k, {d.B, d.KV, d.S, d.D});
    const TensorId vh = b.view("self_attn.v_heads", v, {d.B, d.KV, d.S, d.D});
    const TensorId qr = rotary(b, "self_attn.rope_q", qh, rope.cos, rope.sin, 1.0);
    const TensorId kr = rotary(b, "self_attn.rope_k", kh, rope.cos, rope.sin, 1.0);
    Qkv in{qr, kr, vh, true, true, d.B == 1};
    const TensorId ctx = attention(b, "self_attn", in, d, profile, m.attn_dropout, true,
                                   EagerSoftmax::fp32_then_query_dtype);
    const TensorId o = b.linear("self_attn.o_proj", ctx, d.H);
    const TensorId r1 = b.add("residual_1", o, x);
    const TensorId h2 = b.rmsnorm_hf("post_attention_layernorm", r1);
    const TensorId gate = b.linear("mlp.gate_proj", h2, d.F);
    const TensorId up = b.linear("mlp.up_proj", h2, d.F);
    const TensorId act = b.unary_saving_input("mlp.act", gate, 5);
    b.view("mlp.up_proj.output", up, b.shape(up));
    const TensorId prod = b.mul("mlp.gated", act, up);
    const TensorId down = b.linear("mlp.down_proj", prod, d.H);
    return b.add("residual_2", down, r1);
}

}  // namespace remat::family
