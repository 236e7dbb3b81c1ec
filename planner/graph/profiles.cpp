#include "planner/graph/profiles.hpp"

#include <cassert>
#include <cmath>

#include "planner/config/checked.hpp"
#include "planner/graph/op_builder.hpp"
#include "planner/graph/profile_remat.hpp"

namespace remat {
namespace {

struct Dims {
    std::uint64_t B, S, H, A, KV, D, F, V;
};

Dims dims_of(const StageRequest& r) {
    const ModelConfig& m = *r.model;
    return {r.batch, r.seq, m.hidden, m.n_heads, m.n_kv_heads, m.head_dim, m.ffn, m.vocab};
}

// q, k, v in (B, heads, S, D) layout. `*_contiguous` says whether a (B*heads, S, D) reshape of
// the tensor is a view (true) or makes a copy (false), which decides what matmul saves.
struct Qkv {
    TensorId q, k, v;
    bool q_contiguous, k_contiguous, v_contiguous;
};

// How the eager code turns probabilities into the AV operand: GPT-2 casts to value's dtype
// (`.type(value.dtype)`), Llama and GPT-NeoX take softmax in fp32 and cast to query's dtype.
enum class EagerSoftmax { gpt2, fp32_then_query_dtype };

// The attention core (Megatron's "core attention": QK^T, softmax, dropout, AV), flash or
// eager. Returns the input of the output projection, (B, S, A*D).
TensorId attention(OpBuilder& b, const std::string& name, Qkv in, const Dims& d, Profile profile,
                   double attn_dropout, bool repeat_kv, EagerSoftmax softmax_kind) {
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
    if (repeat_kv && d.KV != d.A) {
        // repeat_kv: expand + reshape materializes (B, A, S, D) copies of k and v.
        in.k = core_copy(name + ".key_repeated", in.k, b.dtype(in.k), {d.B, d.A, d.S, d.D});
        in.v = core_copy(name + ".value_repeated", in.v, b.dtype(in.v), {d.B, d.A, d.S, d.D});
        in.k_contiguous = in.v_contiguous = true;
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
        add_core(b.make(name + ".scale", OpClass::memory, {scores}, {scaled}, {}));  // * python float
    }
    const TensorId masked = g.add_tensor(name + ".scores_masked", ss, low);
    add_core(b.make(name + ".mask", OpClass::memory, {scaled}, {masked}, {}));
    const DType probs_t = softmax_kind == EagerSoftmax::gpt2 ? b.autocast_fp32_op(low) : DType::f32;
    const TensorId probs = g.add_tensor(name + ".probs", ss, probs_t);
    Op sm = b.make(name + ".softmax", OpClass::memory, {masked}, {probs}, {probs});
    sm.fwd_flops = 5.0 * static_cast<double>(g.tensor(probs).numel());
    sm.bwd_flops = sm.fwd_flops;
    add_core(std::move(sm));
    // .type(value.dtype) (GPT-2) or .to(query.dtype) (Llama, NeoX): a copy when dtypes differ.
    const DType target = softmax_kind == EagerSoftmax::gpt2 ? b.dtype(in.v) : b.dtype(q_heads);
    TensorId p = probs;
    if (target != probs_t) p = core_copy(name + ".probs_dropped", probs, target, ss);
    if (attn_dropout > 0.0) {
        const TensorId y = g.add_tensor(name + ".probs_dropped", ss, b.dtype(p));
        const DType mask_t = b.policy().device == AutocastDevice::cuda ? DType::b8 : b.dtype(p);
        // GPT2Attention.attn_dropout is a module; Llama and NeoX call F.dropout.
        const std::string dn = name + (softmax_kind == EagerSoftmax::gpt2 ? ".attn_dropout" : ".dropout");
        const TensorId mask = g.add_tensor(dn + ".mask", ss, mask_t, false);
        add_core(b.make(dn, OpClass::memory, {p}, {y, mask}, {mask}));
        p = y;
    }
    if (b.policy().autocast && b.dtype(p) != low) p = core_copy(name + ".probs_dropped", p, low, ss);
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
                double pct) {
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
    if (pct < 1.0) y = b.copy(name + ".cat_pass", y, b.dtype(y));
    return y;
}

struct SharedInputs {
    TensorId cos = no_tensor, sin = no_tensor;
};

SharedInputs add_rotary_inputs(StageGraph& g, const Dims& d, const ModelConfig& m, DType dt) {
    const std::uint64_t rd = rotary_dims(m);
    if (rd == 0) return {};
    SharedInputs s;
    s.cos = g.add_shared_input("rope.cos", {1, d.S, rd}, dt);
    s.sin = g.add_shared_input("rope.sin", {1, d.S, rd}, dt);
    return s;
}

// ---- Hugging Face modules (hf-eager, sdpa) ----

TensorId hf_gpt2_block(OpBuilder& b, const Dims& d, const ModelConfig& m, Profile profile) {
    StageGraph& g = b.graph();
    const TensorId x = g.add_input("x", {d.B, d.S, d.H}, b.policy().param);
    const TensorId h1 = b.layernorm("ln_1", x);
    const TensorId qkv = b.linear("attn.c_attn", h1, checked_mul(3, d.H));
    // split + view + permute: views of qkv, (B, A, S, D) with strides that do not merge B, A.
    // With B = 1 the (B*A, S, D) reshape of these views is itself a view of qkv.
    const bool merges = d.B == 1;
    Qkv in{b.view("attn.q", qkv, {d.B, d.A, d.S, d.D}), b.view("attn.k", qkv, {d.B, d.A, d.S, d.D}),
           b.view("attn.v", qkv, {d.B, d.A, d.S, d.D}), merges, merges, merges};
    const TensorId ctx = attention(b, "attn", in, d, profile, m.attn_dropout, false, EagerSoftmax::gpt2);
    const TensorId proj = b.linear("attn.c_proj", ctx, d.H);
    const TensorId a = b.dropout("attn.resid_dropout", proj, m.resid_dropout);
    const TensorId r1 = b.add("residual_1", a, x);
    const TensorId h2 = b.layernorm("ln_2", r1);
    const TensorId fc = b.linear("mlp.c_fc", h2, d.F);
    TensorId act = m.activation == Activation::gelu_new ? b.gelu_new("mlp.act", fc)
                                                         : b.unary_saving_input("mlp.act", fc, 8);
    const TensorId down = b.linear("mlp.c_proj", act, d.H);
    const TensorId mo = b.dropout("mlp.dropout", down, m.resid_dropout);
    return b.add("residual_2", mo, r1);
}

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
    const TensorId ctx = attention(b, "attention", {qr, kr, v, true, true, d.B == 1}, d, profile,
                                   m.attn_dropout, false, EagerSoftmax::fp32_then_query_dtype);
    const TensorId dense = b.linear("attention.dense", ctx, d.H);
    const TensorId a = b.dropout("post_attention_dropout", dense, m.resid_dropout);
    TensorId mlp_in = x;
    if (!m.parallel_residual) mlp_in = b.add("residual_1", a, x);
    const TensorId h2 = b.layernorm("post_attention_layernorm", mlp_in);
    const TensorId up = b.linear("mlp.dense_h_to_4h", h2, d.F);
    const TensorId act = m.activation == Activation::gelu_new ? b.gelu_new("mlp.act", up)
                                                               : b.unary_saving_input("mlp.act", up, 8);
    const TensorId down = b.linear("mlp.dense_4h_to_h", act, d.H);
    const TensorId mo = b.dropout("post_mlp_dropout", down, m.resid_dropout);
    if (!m.parallel_residual) return b.add("residual_2", mo, mlp_in);
    const TensorId sum = b.add("residual_mlp_attn", mo, a);
    return b.add("residual", sum, x);
}

// ---- Megatron-LM (Korthikanti et al. 2022, section 4.1) ----
// Every activation is 2 bytes and every dropout mask 1 byte whatever the precision mode, as
// in Megatron's fused kernels; LayerNorm statistics are ignored, as the paper does.

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

// ---- Embedding, final norm, head + loss ----

TensorId embedding_stage(OpBuilder& b, const Dims& d, const ModelConfig& m, Profile profile) {
    StageGraph& g = b.graph();
    const TensorId ids = g.add_input("input_ids", {d.B, d.S}, DType::i64, false);
    const DType out_t = profile == Profile::megatron ? DType::bf16 : b.policy().param;
    TensorId y = g.add_tensor("wte.out", {d.B, d.S, d.H}, out_t);
    // EmbeddingBackward saves the indices.
    g.add_op(b.make("wte", OpClass::memory, {ids}, {y}, {ids}));
    if (m.learned_positions) {
        const TensorId pos = g.add_tensor("position_ids", {1, d.S}, DType::i64, false);
        g.add_op(b.make("position_ids", OpClass::memory, {}, {pos}, {}));
        const TensorId pe = g.add_tensor("wpe.out", {1, d.S, d.H}, out_t);
        g.add_op(b.make("wpe", OpClass::memory, {pos}, {pe}, {pos}));
        y = b.add("embed_sum", y, pe);
    }
    if (const std::uint64_t rd = rotary_dims(m); rd > 0 && profile != Profile::megatron) {
        // The model computes cos/sin once per step; every block saves them (shared).
        const TensorId cos = g.add_tensor("rope.cos", {1, d.S, rd}, b.policy().param, false);
        const TensorId sin = g.add_tensor("rope.sin", {1, d.S, rd}, b.policy().param, false);
        g.add_op(b.make("rotary_emb", OpClass::memory, {}, {cos, sin}, {cos, sin}));
    }
    return b.dropout(m.arch == Arch::gpt_neox ? "emb_dropout" : "drop", y, m.embd_dropout);
}

TensorId norm_stage(OpBuilder& b, const Dims& d, const ModelConfig& m, Profile profile) {
    StageGraph& g = b.graph();
    if (profile == Profile::megatron) {
        const TensorId x = g.add_input("x", {d.B, d.S, d.H}, DType::bf16);
        return b.layernorm("final_layernorm", x, false);
    }
    const TensorId x = g.add_input("x", {d.B, d.S, d.H}, b.policy().param);
    if (m.norm == NormKind::rmsnorm) return b.rmsnorm_hf("norm", x);
    return b.layernorm(m.arch == Arch::gpt_neox ? "final_layer_norm" : "ln_f", x);
}

TensorId head_stage(OpBuilder& b, const Dims& d, const ModelConfig& m, Profile profile) {
    StageGraph& g = b.graph();
    const Shape bsv{d.B, d.S, d.V};
    if (profile == Profile::megatron) {
        // Megatron: lm head in 2 bytes, then logits upcast to fp32; the fused cross entropy
        // keeps the fp32 softmax in place of the logits (4sbv).
        const TensorId x = g.add_input("x", {d.B, d.S, d.H}, DType::bf16);
        const TensorId logits = g.add_tensor("logits", bsv, DType::bf16);
        Op op = b.make("output_layer", OpClass::gemm, {x}, {logits}, {x});
        op.fwd_flops = flop_product(2, d.B, d.S, d.H, d.V);
        op.bwd_flops = 2 * op.fwd_flops;
        g.add_op(std::move(op));
        const TensorId lf = b.copy("logits_fp32", logits, DType::f32);
        const TensorId loss = g.add_tensor("loss", {}, DType::f32);
        g.add_op(b.make("cross_entropy", OpClass::memory, {lf}, {loss}, {lf}));
        return loss;
    }
    const TensorId x = g.add_input("x", {d.B, d.S, d.H}, b.policy().param);
    const TensorId logits = b.linear(m.arch == Arch::gpt_neox ? "embed_out" : "lm_head", x, d.V);
    // Hugging Face's ForCausalLMLoss: logits.float(), then cross_entropy over (B*S, V):
    // log_softmax saves its fp32 output, nll_loss the targets.
    const TensorId lf = b.cast("logits_fp32", logits, DType::f32);
    const TensorId flat = b.view("logits_flat", lf, {checked_mul(d.B, d.S), d.V});
    // labels padded with -100 then shifted: a (B, S) slice of a (B, S+1) tensor, contiguous
    // (a copy) unless B = 1, where the saved target is a view of the padded labels.
    const TensorId padded = g.add_tensor("loss.labels_padded", {d.B, checked_add(d.S, 1)}, DType::i64, false);
    g.add_op(b.make("loss.pad_labels", OpClass::memory, {}, {padded}, {}));
    TensorId target = b.view("loss.target", padded, {d.B, d.S});
    if (d.B > 1) target = b.copy("loss.target", target, DType::i64);
    const TensorId ls = g.add_tensor("loss.log_softmax", {checked_mul(d.B, d.S), d.V}, b.autocast_fp32_op(b.dtype(flat)));
    Op op = b.make("loss.log_softmax", OpClass::memory, {flat}, {ls}, {ls});
    op.fwd_flops = flop_product(5, d.B, d.S, d.V);
    op.bwd_flops = op.fwd_flops;
    g.add_op(std::move(op));
    const TensorId loss = g.add_tensor("loss", {}, DType::f32);
    const TensorId total_weight = g.add_tensor("loss.total_weight", {}, DType::f32, false);
    g.add_op(b.make("loss.nll", OpClass::memory, {ls, target}, {loss, total_weight}, {target, total_weight}));
    return loss;
}

}  // namespace

std::string_view stage_kind_name(StageKind k) {
    switch (k) {
        case StageKind::embedding: return "embedding";
        case StageKind::block: return "block";
        case StageKind::norm: return "norm";
        case StageKind::head: return "head";
    }
    return "?";
}

StageGraph build_stage_graph(const StageRequest& r) {
    assert(r.model && "StageRequest needs a model");
    const ModelConfig& m = *r.model;
    const Dims d = dims_of(r);
    StageGraph g;
    if (r.profile == Profile::remat || r.profile == Profile::remat_cuda) {
        build_remat_stage(g, r.kind, m, r.batch, r.seq, r.precision,
                          r.profile == Profile::remat ? RematBackend::cpu : RematBackend::cuda, r.attention);
        return g;
    }
    // Megatron's kernels fix 2-byte activations whatever the mode: the profile wins.
    const Precision p = r.profile == Profile::megatron ? Precision::bf16 : r.precision;
    OpBuilder b(g, dtype_policy(p, r.autocast_device));
    TensorId out = no_tensor;
    switch (r.kind) {
        case StageKind::embedding: out = embedding_stage(b, d, m, r.profile); break;
        case StageKind::norm: out = norm_stage(b, d, m, r.profile); break;
        case StageKind::head: out = head_stage(b, d, m, r.profile); break;
        case StageKind::block:
            if (r.profile == Profile::megatron) {
                out = megatron_block(b, d, m);
            } else if (m.arch == Arch::gpt2) {
                out = hf_gpt2_block(b, d, m, r.profile);
            } else if (m.arch == Arch::llama) {
                out = hf_llama_block(b, d, m, r.profile);
            } else {
                out = hf_neox_block(b, d, m, r.profile);
            }
            break;
    }
    g.finish(out);
    return g;
}

}  // namespace remat
