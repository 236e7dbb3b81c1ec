// Megatron-LM's transformer layer (Korthikanti et al. 2022, section 4.1).
// Every activation is 2 bytes and every dropout mask 1 byte whatever the precision mode, as
// in Megatron's fused kernels; LayerNorm statistics are ignored, as the paper does.
#include "planner/config/checked.hpp"
#include "planner/graph/families.hpp"

namespace remat::family {

TensorId megatron_block(OpBuilder& b, const Dims& d, const ModelConfig& m) {
    StageGraph& g = b.graph();
    const DType a2 = DType::bf16;
    const Shape sbh{d.B, d.S, d.H};
    auto tensor = [&](const std::string& n, Shape s, DType t = DType::bf16, bool grad = true) {
        return g.add_tensor(n, std::move(s), t, grad);
    };
    auto gemm = [&](const std::string& n, TensorId in, std::uint64_t n_out, bool core = false) {
        Shape s = b.shape(in);
        const std::uint64_t k = s.back();
        s.back() = n_out;
        const TensorId y = tensor(n + ".out", s);
        Op op = b.make(n, OpClass::gemm, {in}, {y}, {in});
        op.fwd_flops = flop_product(2, b.rows(in), k, n_out);
        op.bwd_flops = 2 * op.fwd_flops;
        op.fwd_bytes += flop_product(2, k, n_out);  // bf16 weight read
        op.bwd_bytes += flop_product(4, k, n_out);
        op.attention_core = core;
        g.add_op(std::move(op));
        return y;
    };
    auto dropout = [&](const std::string& n, TensorId in, double p, bool core = false) {
        if (p <= 0.0) return in;
        const TensorId y = tensor(n + ".out", b.shape(in));
        const TensorId mask = tensor(n + ".mask", b.shape(in), DType::u8, false);
        Op op = b.make(n, OpClass::memory, {in}, {y, mask}, {mask});
        op.attention_core = core;
        g.add_op(std::move(op));
        return y;
    };
    const TensorId x = g.add_input("x", sbh, a2);
    const TensorId ln1 = b.layernorm("input_layernorm", x, false);
    const TensorId qkv = gemm("attention.query_key_value", ln1, checked_mul(3, d.H));
    const TensorId q = b.view("attention.query", qkv, {d.B, d.A, d.S, d.D});
    const TensorId k = b.view("attention.key", qkv, {d.B, d.A, d.S, d.D});
    const TensorId v = b.view("attention.value", qkv, {d.B, d.A, d.S, d.D});
    const Shape ss{d.B, d.A, d.S, d.S};
    const TensorId scores = tensor("attention.scores", ss);
    Op qk = b.make("attention.qk", OpClass::gemm, {q, k}, {scores}, {q, k});
    qk.fwd_flops = flop_product(2, d.S, d.S, d.B, d.A, d.D);
    qk.bwd_flops = 2 * qk.fwd_flops;
    qk.attention_core = true;
    g.add_op(std::move(qk));
    const TensorId probs = tensor("attention.softmax", ss);
    Op sm = b.make("attention.scale_mask_softmax", OpClass::memory, {scores}, {probs}, {probs});
    sm.attention_core = true;
    g.add_op(std::move(sm));
    const TensorId dropped = dropout("attention.attention_dropout", probs, m.attn_dropout, true);
    const TensorId ctx = tensor("attention.context", {d.B, d.A, d.S, d.D});
    Op av = b.make("attention.pv", OpClass::gemm, {dropped, v}, {ctx}, {dropped, v});
    av.fwd_flops = flop_product(2, d.S, d.S, d.B, d.A, d.D);
    av.bwd_flops = 2 * av.fwd_flops;
    av.attention_core = true;
    g.add_op(std::move(av));
    const TensorId ctx_flat = b.view("attention.context_flat", ctx, sbh);
    const TensorId dense = gemm("attention.dense", ctx_flat, d.H);
    const TensorId a = dropout("attention.hidden_dropout", dense, m.resid_dropout);
    const TensorId r1 = b.add("residual_1", a, x);
    const TensorId ln2 = b.layernorm("post_attention_layernorm", r1, false);
    const TensorId fc1 = gemm("mlp.dense_h_to_4h", ln2, d.F);
    const TensorId act = b.unary_saving_input("mlp.gelu", fc1, 8);
    const TensorId fc2 = gemm("mlp.dense_4h_to_h", act, d.H);
    const TensorId mo = dropout("mlp.hidden_dropout", fc2, m.resid_dropout);
    return b.add("residual_2", mo, r1);
}

}  // namespace remat::family
