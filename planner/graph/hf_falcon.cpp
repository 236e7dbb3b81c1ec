// Hugging Face's FalconDecoderLayer (modeling_falcon.py) for hf-eager and sdpa: one fused
// query_key_value projection split by _split_heads, rotary on q and k, attention, and the MLP in
// parallel with attention (falcon-7b: one input_layernorm for both; new_decoder_architecture:
// ln_attn and ln_mlp) or after it (parallel_attn false: post_attention_layernorm).
#include <fmt/format.h>

#include "planner/config/checked.hpp"
#include "planner/graph/families.hpp"

namespace remat::family {

namespace {

// FalconLinear: input @ weight.T, then + bias as a separate op. weight.T is a view, not a leaf,
// so autocast does not cache its cast: every call makes a low-precision copy of the weight, which
// the matmul saves for the input's gradient (named "<linear>.weight@<dtype>", as the measurement
// names parameter copies). Under autocast the product plus the fp32 bias promotes to fp32.
TensorId falcon_linear(OpBuilder& b, const ModelConfig& m, const std::string& name, TensorId x,
                       std::uint64_t n_out) {
    StageGraph& g = b.graph();
    // bitsandbytes replaces FalconLinear (an nn.Linear) with its own layer.
    const WeightPolicy& weights = b.weights();
    if (weights.quantized_linears()) return b.linear(name, x, n_out);
    const DType read = weights.frozen ? weights.read : b.policy().param;
    if (b.policy().autocast && read != b.policy().low) {
        const std::uint64_t n_in = b.shape(x).back();
        const TensorId w =
            g.add_tensor(fmt::format("{}.weight@{}", name, dtype_name(b.policy().low)),
                         {n_out, n_in}, b.policy().low, false);
        g.add_op(b.make(name + ".weight_cast", OpClass::memory, {}, {w}, {w}));
    }
    const TensorId y = b.linear(name, x, n_out, WeightCast::by_caller);
    if (!m.attn_bias || !b.policy().autocast || b.policy().param != DType::f32) return y;
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
    // _split_heads, then transpose(1, 2).reshape to the same shape (a view). q is a slice of the
    // fused output (a view) except under new_decoder_architecture, whose flatten copies it. k and
    // v are views too without multi-query (qkv[..., 1, :]); with it they come out of advanced
    // indexing (qkv[..., [-2], :], a copy), which new_decoder_architecture then broadcasts to
    // every head and flatten materializes.
    Dims ad = d;  // the heads attention sees
    if (m.kv_materialized) ad.KV = d.A;
    const Shape q_shape{d.B, d.A, d.S, d.D}, kv_shape{d.B, ad.KV, d.S, d.D};
    const TensorId q = m.kv_materialized
                           ? b.copy("self_attention.query_layer", qkv, b.dtype(qkv), q_shape)
                           : b.view("self_attention.query_layer", qkv, q_shape);
    auto split = [&](const char* n) {
        return m.kv_by_index ? b.copy(n, qkv, b.dtype(qkv), kv_shape) : b.view(n, qkv, kv_shape);
    };
    const TensorId k = split("self_attention.key_layer");
    const TensorId v = split("self_attention.value_layer");
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
    // v's (B*heads, S, D) reshape is a view only when B == 1 (then of whatever v is a view of).
    const TensorId ctx = attention(b, "self_attention", {qr, kr, v, true, true, d.B == 1}, ad, core,
                                   0.0, KvExpand::matmul_broadcast, EagerSoftmax::hidden_dtype);
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
