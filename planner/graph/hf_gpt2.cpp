// Hugging Face's GPT2Block (modeling_gpt2.py) for hf-eager and sdpa.
#include "planner/config/checked.hpp"
#include "planner/graph/families.hpp"

namespace remat::family {

TensorId hf_gpt2_block(OpBuilder& b, const Dims& d, const ModelConfig& m, Profile profile) {
    StageGraph& g = b.graph();
    const TensorId x = g.add_input("x", {d.B, d.S, d.H}, b.policy().param);
    const TensorId h1 = b.layernorm("ln_1", x);
    const TensorId qkv = b.linear("attn.c_attn", h1, checked_mul(3, d.H));
    // split + view + permute: views of qkv, (B, A, S, D) with strides that do not merge B, A.
    // With B = 1 the (B*A, S, D) reshape of these views is itself a view of qkv.
    const bool merges = d.B == 1;
    Qkv in{b.view("attn.q", qkv, {d.B, d.A, d.S, d.D}),
           b.view("attn.k", qkv, {d.B, d.A, d.S, d.D}),
           b.view("attn.v", qkv, {d.B, d.A, d.S, d.D}),
           merges,
           merges,
           merges};
    const TensorId ctx =
        attention(b, "attn", in, d, profile, m.attn_dropout, KvExpand::none, EagerSoftmax::gpt2);
    const TensorId proj = b.linear("attn.c_proj", ctx, d.H);
    const TensorId a = b.dropout("attn.resid_dropout", proj, m.resid_dropout);
    const TensorId r1 = b.add("residual_1", a, x);
    const TensorId h2 = b.layernorm("ln_2", r1);
    const TensorId fc = b.linear("mlp.c_fc", h2, d.F);
    const TensorId act = b.activation("mlp.act", fc, m.activation);
    const TensorId down = b.linear("mlp.c_proj", act, d.H);
    const TensorId mo = b.dropout("mlp.dropout", down, m.resid_dropout);
    return b.add("residual_2", mo, r1);
}

}  // namespace remat::family
