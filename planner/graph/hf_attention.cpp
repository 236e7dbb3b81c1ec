// The Hugging Face families' shared pieces (hf-eager, sdpa): the attention core, flash or
// eager, and the rotary embedding, op by op after transformers' modeling code.
#include "planner/config/checked.hpp"
#include "planner/graph/families.hpp"

namespace remat::family {

// The attention core (Megatron's "core attention": QK^T, softmax, dropout, AV), flash or
// eager. Returns the input of the output projection, (B, S, A*D).
TensorId attention(OpBuilder& b, const std::string& name, Qkv in, const Dims& d, Profile profile,
                   double attn_dropout, KvExpand kv, EagerSoftmax softmax_kind, double softcap) {
    StageGraph& g = b.graph();
    const DType low = b.policy().autocast ? b.policy().low : b.dtype(in.q);
    const double causal_pairs = flop_product(d.S) * (flop_product(d.S) + 1) / 2.0;
    const double bhd = flop_product(d.B, d.A, d.D);
    auto add_core = [&](Op op) {
        op.attention_core = true;
        g.add_op(std::move(op));
    };
    auto core_copy = [&](const std::string& n, TensorId x, DType to, Shape s) {
        const TensorId y = g.add_tensor(n, std::move(s), to, g.tensor(x).needs_grad);
        add_core(b.make(n, OpClass::memory, {x}, {y}, {}));
        return y;
    };
    // The tensor matmul/bmm multiplies: autocast's cast, else a reshape copy when the layout
    // does not merge (B, heads), else a view.
    auto operand = [&](const std::string& n, TensorId x, bool contiguous) {
        const Shape flat{checked_mul(d.B, d.A), d.S, d.D};
        if (b.policy().autocast && b.dtype(x) != low) return core_copy(n, x, low, flat);
        if (!contiguous) return core_copy(n, x, b.dtype(x), flat);
        return b.view(n, x, flat);
    };
    const TensorId q_heads = in.q;
    if (kv != KvExpand::none && d.KV != d.A) {
        if (d.KV == 1) {
            // One head: the expand is a stride-0 view and so is the reshape to A heads, so nothing
            // is copied yet; the (B*A, S, D) operand is a view only when B == 1. The matmul's own
            // broadcast (Falcon) casts the one-head tensor under autocast before expanding it.
            auto expand = [&](TensorId x, const char* role) {
                if (kv == KvExpand::matmul_broadcast && b.policy().autocast && b.dtype(x) != low)
                    x = core_copy(name + "." + role + "_cast", x, low, b.shape(x));
                return b.view(name + "." + role + "_repeated", x, {d.B, d.A, d.S, d.D});
            };
            in.k = expand(in.k, "key");
            in.v = expand(in.v, "value");
            in.k_contiguous = in.v_contiguous = d.B == 1;
        } else {
            // repeat_kv: expand + reshape materializes (B, A, S, D) copies of k and v.
            in.k = core_copy(name + ".key_repeated", in.k, b.dtype(in.k), {d.B, d.A, d.S, d.D});
            in.v = core_copy(name + ".value_repeated", in.v, b.dtype(in.v), {d.B, d.A, d.S, d.D});
            in.k_contiguous = in.v_contiguous = true;
        }
    }
    if (profile == Profile::sdpa) {
        // derivatives.yaml, _scaled_dot_product_flash_attention: backward saves query, key,
        // value, output, logsumexp, cum_seq_q/k (undefined for dense input), philox seed and
        // offset (two int64 scalars).
        const TensorId out = g.add_tensor(name + ".sdpa_output", {d.B, d.S, d.A, d.D}, low);
        const TensorId lse = g.add_tensor(name + ".logsumexp", {d.B, d.A, d.S}, DType::f32, false);
        const TensorId rng = g.add_tensor(name + ".philox_seed_offset", {2}, DType::i64, false);
        const TensorId q = b.gemm_operand(name + ".query", in.q);
        const TensorId k = b.gemm_operand(name + ".key", in.k);
        const TensorId v = b.gemm_operand(name + ".value", in.v);
        Op op = b.make(name + ".sdpa", OpClass::attention, {q, k, v}, {out, lse, rng},
                       {q, k, v, out, lse, rng});
        op.fwd_flops = 4.0 * causal_pairs * bhd;  // QK^T and PV over the causal half
        op.bwd_flops = 2.5 * op.fwd_flops;        // recomputes QK^T, then dV, dP, dQ, dK
        op.attention_core = true;
        op.narrow_dim = d.D;
        g.add_op(std::move(op));
        // The kernel writes (B, S, A, D), so transpose(1, 2).reshape is a view.
        return b.view(name + ".context", out, {d.B, d.S, checked_mul(d.A, d.D)});
    }
    // Eager.
    const double full_pairs = flop_product(d.S, d.S);
    const TensorId q = operand(name + ".query", in.q, in.q_contiguous);
    const TensorId k = operand(name + ".key", in.k, in.k_contiguous);
    const Shape ss{d.B, d.A, d.S, d.S};
    const TensorId scores = g.add_tensor(name + ".scores", ss, low);
    Op qk = b.make(name + ".qk", OpClass::gemm, {q, k}, {scores}, {q, k});
    qk.fwd_flops = 2.0 * full_pairs * bhd;
    qk.bwd_flops = 2 * qk.fwd_flops;
    add_core(std::move(qk));
    const TensorId scaled = g.add_tensor(name + ".scores_scaled", ss, low);
    if (softmax_kind == EagerSoftmax::gpt2) {
        // attn_weights / torch.full([], head_dim ** 0.5): DivBackward saves the 0-dim divisor.
        const TensorId scale = g.add_tensor(name + ".scale", {}, low, false);
        add_core(b.make(name + ".scale_value", OpClass::memory, {}, {scale}, {}));
        add_core(b.make(name + ".scale", OpClass::memory, {scores, scale}, {scaled}, {scale}));
    } else {
        add_core(
            b.make(name + ".scale", OpClass::memory, {scores}, {scaled}, {}));  // * python float
    }
    TensorId unmasked = scaled;
    if (softcap > 0.0) {
        // attn_weights / softcap; torch.tanh (saves its output); * softcap (python floats).
        const TensorId div = g.add_tensor(name + ".softcap_div", ss, low);
        add_core(b.make(name + ".softcap_div", OpClass::memory, {scaled}, {div}, {}));
        const TensorId th = g.add_tensor(name + ".scores_tanh", ss, low);
        add_core(b.make(name + ".softcap_tanh", OpClass::memory, {div}, {th}, {th}));
        unmasked = g.add_tensor(name + ".softcapped", ss, low);
        add_core(b.make(name + ".softcap_mul", OpClass::memory, {th}, {unmasked}, {}));
    }
    const TensorId masked = g.add_tensor(name + ".scores_masked", ss, low);
    add_core(b.make(name + ".mask", OpClass::memory, {unmasked}, {masked}, {}));
    const DType probs_t = softmax_kind == EagerSoftmax::gpt2           ? b.autocast_fp32_op(low)
                          : softmax_kind == EagerSoftmax::hidden_dtype ? b.policy().param
                                                                       : DType::f32;
    const TensorId probs = g.add_tensor(name + ".probs", ss, probs_t);
    Op sm = b.make(name + ".softmax", OpClass::memory, {masked}, {probs}, {probs});
    sm.fwd_flops = 5.0 * static_cast<double>(g.tensor(probs).numel());
    sm.bwd_flops = sm.fwd_flops;
    add_core(std::move(sm));
    // .type(value.dtype) (GPT-2) or .to(query.dtype) (Llama, NeoX): a copy when dtypes differ.
    const DType target = softmax_kind == EagerSoftmax::gpt2           ? b.dtype(in.v)
                         : softmax_kind == EagerSoftmax::hidden_dtype ? probs_t
                                                                      : b.dtype(q_heads);
    TensorId p = probs;
    if (target != probs_t) p = core_copy(name + ".probs_dropped", probs, target, ss);
    if (attn_dropout > 0.0) {
        const TensorId y = g.add_tensor(name + ".probs_dropped", ss, b.dtype(p));
        const DType mask_t = b.policy().device == AutocastDevice::cuda ? DType::b8 : b.dtype(p);
        // GPT2Attention.attn_dropout is a module; Llama and NeoX call F.dropout.
        const std::string dn =
            name + (softmax_kind == EagerSoftmax::gpt2 ? ".attn_dropout" : ".dropout");
        const TensorId mask = g.add_tensor(dn + ".mask", ss, mask_t, false);
        add_core(b.make(dn, OpClass::memory, {p}, {y, mask}, {mask}));
        p = y;
    }
    if (b.policy().autocast && b.dtype(p) != low)
        p = core_copy(
            name + (softmax_kind == EagerSoftmax::hidden_dtype ? ".pv_probs" : ".probs_dropped"), p,
            low, ss);
    const TensorId v = operand(name + ".value", in.v, in.v_contiguous);
    const TensorId ctx = g.add_tensor(name + ".av", {d.B, d.A, d.S, d.D}, low);
    Op av = b.make(name + ".pv", OpClass::gemm, {p, v}, {ctx}, {p, v});
    av.fwd_flops = 2.0 * full_pairs * bhd;
    av.bwd_flops = 2 * av.fwd_flops;
    add_core(std::move(av));
    // transpose(1, 2).contiguous(): a copy back to (B, S, A*D), outside the core.
    return b.copy(name + ".context", ctx, low, {d.B, d.S, checked_mul(d.A, d.D)});
}

// Rotary embedding on (B, heads, S, D): q*cos + rotate_half(q)*sin. The muls save cos and sin,
// which are shared by every block (made once per step), so a block adds no bytes for them.
// With no rotated dims (GPT-NeoX with rotary_pct 0) only cat((rotated, pass)) is left: a copy.
TensorId rotary(OpBuilder& b, const std::string& name, TensorId x, TensorId cos, TensorId sin,
                double pct, bool always_cat) {
    StageGraph& g = b.graph();
    if (cos == no_tensor) return pct < 1.0 ? b.copy(name + ".cat_pass", x, b.dtype(x)) : x;
    const Shape s = b.shape(x);
    const DType dt = OpBuilder::promote(b.dtype(x), b.dtype(cos));
    const TensorId xc = g.add_tensor(name + ".x_cos", s, dt);
    g.add_op(b.make(name + ".mul_cos", OpClass::memory, {x, cos}, {xc}, {cos}));
    const TensorId rot = g.add_tensor(name + ".rotate_half", s, b.dtype(x));
    g.add_op(b.make(name + ".rotate_half", OpClass::memory, {x}, {rot}, {}));
    const TensorId rs = g.add_tensor(name + ".rot_sin", s, dt);
    g.add_op(b.make(name + ".mul_sin", OpClass::memory, {rot, sin}, {rs}, {sin}));
    TensorId y = b.add(name + ".embed", xc, rs);
    // Partial rotary (GPT-NeoX): cat((rotated, pass)) promotes to the rotated part's dtype.
    if (pct < 1.0 || always_cat) y = b.copy(name + ".cat_pass", y, b.dtype(y));
    return y;
}

SharedInputs add_rotary_inputs(StageGraph& g, const Dims& d, const ModelConfig& m, DType dt) {
    const std::uint64_t rd = rotary_dims(m);
    if (rd == 0) return {};
    SharedInputs s;
    s.cos = g.add_shared_input("rope.cos", {1, d.S, rd}, dt);
    s.sin = g.add_shared_input("rope.sin", {1, d.S, rd}, dt);
    return s;
}

}  // namespace remat::family
