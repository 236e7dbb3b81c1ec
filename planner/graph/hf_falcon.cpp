// Hugging Face's FalconDecoderLayer (modeling_falcon.py) for hf-eager and sdpa: one fused
// query_key_value projection split by _split_heads, rotary on q and k, attention, and the MLP in
// parallel with attention (falcon-7b: one input_layernorm for both; new_decoder_architecture:
// ln_attn and ln_mlp) or after it (parallel_attn false: post_attention_layernorm).
#include "planner/config/checked.hpp"
#include "planner/graph/families.hpp"

namespace remat::family {

namespace {

// FalconLinear: input @ weight.T, then + bias as a separate op. Under autocast the bf16 product
// plus the fp32 bias promotes to fp32.
TensorId falcon_linear(OpBuilder& b, const ModelConfig& m, const std::string& name, TensorId x,
                       std::uint64_t n_out) {
    const TensorId y = b.linear(name, x, n_out);
    if (!m.attn_bias || !b.policy().autocast) return y;
    StageGraph& g = b.graph();
    const TensorId biased = g.add_tensor(name + ".biased", b.shape(y), DType::f32);
    g.add_op(b.make(name + ".bias", OpClass::memory, {y}, {biased}, {}));
    return biased;
}

}  // namespace

TensorId hf_falcon_block(OpBuilder& b, const Dims& d, const ModelConfig& m, Profile profile) {
    StageGraph& g = b.graph();
    auto linear = [&](const std::string& name, TensorId x, std::uint64_t n) {
        return falcon_linear(b, m, name, x, n);
    };
    const TensorId x = g.add_input("x", {d.B, d.S, d.H}, b.policy().param);
    const SharedInputs rope = add_rotary_inputs(g, d, m, b.policy().param);
    const bool two_norms = m.parallel_residual && !m.shared_block_norm;
    const TensorId h_attn = b.layernorm(two_norms ? "ln_attn" : "input_layernorm", x);
    const TensorId h_mlp = two_norms ? b.layernorm("ln_mlp", x) : h_attn;
    const std::uint64_t width = checked_mul(checked_add(d.A, checked_mul(2, d.KV)), d.D);
    const TensorId qkv = linear("self_attention.query_key_value", h_attn, width);
    if (m.kv_by_index) {
        // qkv[..., [-2], :] and qkv[..., [-1], :]: IndexBackward0 saves each index list, an
        // int64 tensor of one element.
        for (const char* n : {"self_attention.key_index", "self_attention.value_index"}) {
            const TensorId index = g.add_tensor(n, {1}, DType::i64, false);
            g.add_op(b.make(n, OpClass::memory, {qkv}, {index}, {index}));
        }
    }
    // _split_heads then transpose(1, 2).reshape: q is a strided slice of the fused output, so the
    // reshape copies it; k and v come out of advanced indexing (multi-query) or a broadcast that
    // flatten materializes (new_decoder_architecture), copies either way.
    const TensorId q =
        b.copy("self_attention.query_layer", qkv, b.dtype(qkv), {d.B, d.A, d.S, d.D});
    Dims ad = d;  // the heads attention sees
    if (m.kv_materialized) ad.KV = d.A;
    const TensorId k =
        b.copy("self_attention.key_layer", qkv, b.dtype(qkv), {d.B, ad.KV, d.S, d.D});
    const TensorId v =
        b.copy("self_attention.value_layer", qkv, b.dtype(qkv), {d.B, ad.KV, d.S, d.D});
    const TensorId qr = rotary(b, "self_attention.rope_q", q, rope.cos, rope.sin, 1.0);
    const TensorId kr = rotary(b, "self_attention.rope_k", k, rope.cos, rope.sin, 1.0);
    // The eager matmuls broadcast k and v over the heads when there are fewer of them: the
    // expanded operands are materialized, as repeat_kv's copies are.
    // Under sdpa, Falcon passes k and v with their own head count and no enable_gqa: PyTorch's
    // fused kernels need equal head counts (sdp_utils_cpp.h, check_batch_size_and_num_heads_dense:
    // "both fused kernels require query, key and value to have the same num_heads"), so
    // multi-query falcon runs SDPA's math path, which materializes the S x S probabilities as
    // the eager code does. new_decoder_architecture has materialized A heads already: fused.
    const Profile core = profile == Profile::sdpa && ad.KV != d.A ? Profile::hf_eager : profile;
    const TensorId ctx = attention(b, "self_attention", {qr, kr, v, true, true, true}, ad, core,
                                   0.0, true, EagerSoftmax::hidden_dtype);
    const TensorId a = linear("self_attention.dense", ctx, d.H);
    if (m.parallel_residual) {
        const TensorId mlp_out = linear(
            "mlp.dense_4h_to_h",
            b.activation("mlp.act", linear("mlp.dense_h_to_4h", h_mlp, d.F), m.activation), d.H);
        const TensorId sum = b.add("mlp_plus_attention", mlp_out, a);
        return b.add("residual", x, b.dropout("mlp_dropout_add", sum, m.resid_dropout));
    }
    // dropout_add(attention_output, residual, config.attention_dropout)
    const TensorId r1 = b.add("residual_1", x, b.dropout("attn_dropout_add", a, m.attn_dropout));
    const TensorId h2 = b.layernorm("post_attention_layernorm", r1);
    const TensorId mlp_out =
        linear("mlp.dense_4h_to_h",
               b.activation("mlp.act", linear("mlp.dense_h_to_4h", h2, d.F), m.activation), d.H);
    return b.add("residual_2", r1, b.dropout("mlp_dropout_add", mlp_out, m.resid_dropout));
}

}  // namespace remat::family
